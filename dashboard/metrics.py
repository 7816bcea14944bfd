"""Prometheus metrics, computed from the database at scrape time (any number of web processes agree)."""

from __future__ import annotations

import hmac
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import Avg, Count
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from healing.choices import LIVE_ISSUE_STATUSES, RepairStatus
from healing.models import CacheTarget, CheckRun, Issue, Repair


def queue_depth() -> int | None:
    """Messages waiting in the broker: files in the filesystem transport, or the Redis list length."""
    url = settings.CELERY_BROKER_URL
    if url.startswith("filesystem"):
        folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
        return sum(1 for p in folder.iterdir() if p.suffix == ".msg") if folder.is_dir() else 0
    if url.startswith("redis"):
        import redis

        try:
            return int(redis.Redis.from_url(url, socket_timeout=2).llen("celery"))
        except redis.RedisError:
            return None
    return None


class HealingCollector:
    def collect(self):
        issues = GaugeMetricFamily("healing_issues_open", "Open issues", labels=["severity", "check"])
        for row in Issue.objects.filter(status__in=LIVE_ISSUE_STATUSES).values("severity", "code").annotate(n=Count("id")):
            issues.add_metric([row["severity"], row["code"]], row["n"])
        yield issues
        repairs = GaugeMetricFamily("healing_repairs", "Repairs by outcome (status)", labels=["status"])
        for status, n in Repair.objects.values_list("status").annotate(n=Count("id")):
            repairs.add_metric([status], n)
        yield repairs
        now = timezone.now()
        wait = GaugeMetricFamily("healing_approval_wait_seconds", "How long repairs wait for approval", labels=["kind"])
        oldest = Repair.objects.filter(status=RepairStatus.AWAITING_APPROVAL).order_by("created_at").values_list("created_at", flat=True).first()
        wait.add_metric(["oldest_waiting"], (now - oldest).total_seconds() if oldest else 0.0)
        decided = Repair.objects.filter(approved_at__gte=now - timedelta(days=1)).values_list("created_at", "approved_at")[:5000]
        waits = [(a - c).total_seconds() for c, a in decided]
        wait.add_metric(["mean_last_24h"], sum(waits) / len(waits) if waits else 0.0)
        yield wait
        runs = GaugeMetricFamily("healing_check_run_duration_seconds", "Mean duration of check runs in the last hour", labels=["target"])
        for name, mean in (CheckRun.objects.filter(started_at__gte=now - timedelta(hours=1), duration_ms__isnull=False)
                           .values_list("target__name").annotate(m=Avg("duration_ms"))):
            runs.add_metric([name], (mean or 0) / 1000)
        yield runs
        targets = GaugeMetricFamily("healing_targets", "Targets by state", labels=["state"])
        targets.add_metric(["enabled"], CacheTarget.objects.filter(enabled=True).count())
        targets.add_metric(["storm_mode"], CacheTarget.objects.filter(storm_mode=True).count())
        targets.add_metric(["breaker_tripped"], CacheTarget.objects.filter(breaker_tripped=True).count())
        yield targets
        depth = queue_depth()
        if depth is not None:
            queue = GaugeMetricFamily("healing_queue_depth", "Messages waiting in the Celery broker")
            queue.add_metric([], depth)
            yield queue


def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.HEALING.get("METRICS_TOKEN", "")
    if token and not hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}"):
        return HttpResponse("a bearer token is required (HEALING_METRICS_TOKEN)\n", status=401, content_type="text/plain")
    registry = CollectorRegistry()
    registry.register(HealingCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
