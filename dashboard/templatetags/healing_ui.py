from django import template
from django.utils.html import format_html

from healing.choices import BADGE

register = template.Library()


@register.simple_tag
def badge(value: str, label: str = "") -> str:
    return format_html('<span class="badge badge-{}">{}</span>', BADGE.get(str(value), "muted"), label or str(value).replace("_", " "))


@register.filter
def filesize(value: int | float | None) -> str:
    size = float(value or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
