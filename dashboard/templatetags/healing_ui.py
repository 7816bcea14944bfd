from datetime import UTC, datetime

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


# keys whose numbers are epoch seconds in the evidence and subject details the backends record
_TIME_KEYS = ("mtime", "mtimes", "_at", "time", "times", "timestamp", "timestamps", "window_start", "window_end", "since", "until")


def _shown(key: str, value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and key.lower().endswith(_TIME_KEYS) and 1e9 <= value <= 5e9:
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        more = f" … ({len(value)} in all)" if len(value) > 10 else ""
        return ", ".join(_shown(key, item) for item in value[:10]) + more
    if isinstance(value, dict):
        return "; ".join(f"{k.replace('_', ' ')}: {_shown(k, v)}" for k, v in value.items())
    return "–" if value is None else str(value)


@register.filter
def facts(mapping, skip: str = "") -> list[tuple[str, str]]:
    """(label, readable value) per item of an evidence or detail dict: times as UTC dates, floats short."""
    if not isinstance(mapping, dict):
        return [("", _shown("", mapping))]
    return [(str(k).replace("_", " "), _shown(str(k), v)) for k, v in mapping.items() if k != skip]
