"""Checks over a target's own metric history: perf.anomaly and fs.disk_forecast.

Pure functions over (time, value) series, so each rule can be tested on numbers alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

from healing.backends.base import Finding

# The smallest spread treated as real for each metric: below it, a change is noise, not an anomaly.
SCALE_FLOOR = {
    "entries": (0.02, 5.0),  # (share of the median, absolute)
    "bytes": (0.02, 64 * 1024.0),
    "read_latency_ms": (0.5, 2.0),
    "growth_bytes_per_hour": (0.25, 1024 * 1024.0),
}


@dataclass(frozen=True)
class Baseline:
    median: float
    mad: float
    scale: float
    samples: int


def baseline(values: list[float], metric: str) -> Baseline:
    mid = median(values)
    mad = median(abs(v - mid) for v in values)
    share, absolute = SCALE_FLOOR.get(metric, (0.05, 1e-9))
    return Baseline(mid, mad, max(1.4826 * mad, share * abs(mid), absolute), len(values))


def robust_z(value: float, base: Baseline) -> float:
    return (value - base.median) / base.scale


def anomaly_findings(history: dict[str, list[float]], current: dict[str, float], *, min_samples: int, threshold: float) -> list[Finding]:
    """A finding per metric whose current value departs from its own history by more than `threshold`."""
    findings = []
    for metric, value in sorted(current.items()):
        if metric not in SCALE_FLOOR:
            continue
        past = history.get(metric, [])
        if len(past) < min_samples:
            continue
        base = baseline(past, metric)
        z = robust_z(value, base)
        if abs(z) > threshold:
            findings.append(
                Finding(
                    "perf.anomaly",
                    metric,
                    {
                        "metric": metric,
                        "value": round(value, 4),
                        "baseline_median": round(base.median, 4),
                        "baseline_mad": round(base.mad, 4),
                        "robust_z": round(z, 2),
                        "direction": "up" if z > 0 else "down",
                        "samples": base.samples,
                    },
                )
            )
    return findings


def growth_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (epoch seconds, bytes), in bytes per hour; None without enough spread."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var_t = sum((t - mean_t) ** 2 for t, _ in points)
    if var_t <= 0 or points[-1][0] - points[0][0] < 60:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var_t * 3600.0


def disk_forecast_finding(points: list[tuple[float, float]], free_bytes: float, *, horizon_hours: float) -> Finding | None:
    slope = growth_per_hour(points)
    if slope is None or slope <= 0:
        return None
    hours_left = free_bytes / slope
    if hours_left > horizon_hours:
        return None
    return Finding(
        "fs.disk_forecast",
        ".",
        {
            "growth_bytes_per_hour": round(slope),
            "free_bytes": int(free_bytes),
            "hours_until_full": round(hours_left, 1),
            "horizon_hours": horizon_hours,
            "samples": len(points),
        },
    )
