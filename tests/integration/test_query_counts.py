"""The busy pages run a fixed number of queries, whatever the number of rows behind them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from compliance.services import audit_append, audited_transaction
from healing.models import Approval, Issue, MetricSample, Repair

PAGES = ["/", "/targets/{target}/", "/issues/{issue}/", "/approvals/", "/audit/", "/repairs/{repair}/",
         "/api/issues/?status=open", "/api/repairs/", "/api/targets/"]


def _grow(target, approver, n: int) -> None:
    now = timezone.now()
    Issue.objects.bulk_create([Issue(target=target, code="fs.index_stale", fingerprint=f"fp-{target.pk}-{n}-{i}", severity="low", title="stale",
                                     subject_count=i, sample=[{"subject": f"{i}.json", "mtime": now.timestamp() - 60}],
                                     first_seen_at=now - timedelta(minutes=i), last_seen_at=now, status="resolved" if i % 2 else "open",
                                     resolved_at=now if i % 2 else None) for i in range(n)])
    issue = Issue.objects.filter(target=target).first()
    repairs = Repair.objects.bulk_create([Repair(target=target, issue=issue, code="fs.index_stale", action="index_resync", risk="medium",
                                                 status="awaiting_approval", plan={"operations": [{"op": "index_update", "subject": f"{i}.json", "key": str(i)}]},
                                                 plan_hash="h", created_at=now, requested_by=None, approvals_required=2) for i in range(n)])
    Approval.objects.bulk_create([Approval(repair=r, decision="approve", user=approver, plan_hash="h", created_at=now, expires_at=now + timedelta(hours=1))
                                  for r in repairs])
    MetricSample.objects.bulk_create([MetricSample(target=target, name=name, value=float(i), at=now - timedelta(minutes=i))
                                      for i in range(n) for name in ("entries", "bytes", "health_score")])
    for i in range(n):
        with audited_transaction():
            audit_append(actor=None, action="issue.updated", object_type="issue", object_id=i, scope=f"target:{target.pk}",
                         before={"subjects": i}, after={"subjects": i + 1})


def _counts(client, target, issue, repair) -> dict[str, int]:
    counts = {}
    for page in PAGES:
        url = page.format(target=target.name, issue=issue.pk, repair=repair.pk)
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        counts[url] = len(ctx.captured_queries)
    return counts


@pytest.mark.postgres_too
def test_page_query_counts_are_pinned_and_do_not_grow_with_rows(client, store, make_target, approver, operator):
    target = make_target(store)
    _grow(target, approver, 5)
    client.force_login(operator)
    issue, repair = Issue.objects.filter(target=target).first(), Repair.objects.filter(target=target).first()
    small = _counts(client, target, issue, repair)
    _grow(target, approver, 120)
    large = _counts(client, target, issue, repair)
    assert small == large, {url: (small[url], large[url]) for url in small if small[url] != large[url]}
    # session and user lookups included; a new query on a busy page should be a decision, not an accident
    pinned = {"/": 17, f"/targets/{target.name}/": 10, f"/issues/{issue.pk}/": 7, "/approvals/": 7, "/audit/": 7,
              f"/repairs/{repair.pk}/": 6, "/api/issues/?status=open": 5, "/api/repairs/": 7, "/api/targets/": 5}
    assert large == pinned, repr(large)
