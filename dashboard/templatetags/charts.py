"""Small charts that need no JavaScript: an inline SVG sparkline of a series."""

from django import template
from django.utils.html import format_html

register = template.Library()


@register.simple_tag
def sparkline(values, width: int = 120, height: int = 28, label: str = "trend") -> str:
    values = list(values or [])
    if len(values) < 2:
        return format_html('<span class="muted small">{}</span>', "no trend yet")
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    step = width / (len(values) - 1)
    points = " ".join(f"{i * step:.1f},{height - 2 - (v - lo) / span * (height - 4):.1f}" for i, v in enumerate(values))
    return format_html('<svg class="spark" width="{}" height="{}" role="img" aria-label="{}"><polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{}"/></svg>',
                       width, height, f"{label}: from {values[0]:.0f} to {values[-1]:.0f}", points)


@register.filter
def duration(seconds) -> str:
    if seconds is None:
        return "–"
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
