"""Each diagnosis rule, one by one, on the evidence that should and should not fire it."""

from __future__ import annotations

from healing.diagnosis import RULE_PARAMS, RULES, DiagnosisContext, IssueView, largest_cluster

NOW = 1_800_000_000.0


def ctx(issues: dict[str, int], **kw) -> DiagnosisContext:
    return DiagnosisContext(
        issues={c: IssueView(i, c, n, NOW - 600) for i, (c, n) in enumerate(issues.items())},
        evidence=kw.pop("evidence", {}),
        entries_total=kw.pop("entries", 1000),
        now=NOW,
        **kw,
    )


def fire(rule: str, context: DiagnosisContext):
    return RULES[rule](context, RULE_PARAMS[rule])


def test_it_finds_the_largest_cluster():
    assert largest_cluster([1, 2, 3, 50, 51], 5)[0] == 3


def test_corrupt_burst_with_full_disk_is_disk_full_not_crash():
    evidence = {"corrupt_mtimes": [NOW - 100 + i * 0.1 for i in range(8)], "disk": {"free_ratio": 0.01}}
    c = ctx({"fs.entry_corrupt": 8}, evidence=evidence)
    assert fire("disk_full_write_burst", c).confidence == 0.85
    assert fire("writer_crash_mid_write", c) is None


def test_corrupt_burst_with_free_disk_is_a_writer_crash():
    evidence = {"corrupt_mtimes": [NOW - 100 + i * 0.1 for i in range(8)], "disk": {"free_ratio": 0.4}}
    c = ctx({"fs.entry_corrupt": 8}, evidence=evidence)
    assert fire("writer_crash_mid_write", c).rule == "writer_crash_mid_write"
    assert fire("disk_full_write_burst", c) is None


def test_scattered_corruption_names_no_burst():
    evidence = {"corrupt_mtimes": [NOW - i * 3600 for i in range(8)], "disk": {"free_ratio": 0.4}}
    assert fire("writer_crash_mid_write", ctx({"fs.entry_corrupt": 8}, evidence=evidence)) is None


def test_unreadable_index_or_mass_orphans_is_index_lost():
    assert fire("index_lost_and_reset", ctx({"fs.index_unreadable": 1}, evidence={"index_problem": "truncated JSON"})).confidence == 0.9
    assert fire("index_lost_and_reset", ctx({"fs.index_orphan": 900}, evidence={"index_records": 3})).confidence == 0.85
    assert fire("index_lost_and_reset", ctx({"fs.index_orphan": 5})) is None


def test_dangling_burst_without_corruption_is_external_deletion():
    assert fire("external_deletion", ctx({"fs.index_dangling": 12})).rule == "external_deletion"
    assert fire("external_deletion", ctx({"fs.index_dangling": 12, "fs.entry_corrupt": 1})) is None
    assert fire("external_deletion", ctx({"fs.index_dangling": 1})) is None


def test_poisoned_cluster_is_a_cached_outage():
    clustered = {"poisoned_timestamps": [NOW - 5000 + i * 30 for i in range(6)]}
    spread = {"poisoned_timestamps": [NOW - i * 86400 for i in range(6)]}
    assert fire("provider_outage_cached", ctx({"ai.poisoned_response": 6}, evidence=clustered)).confidence == 0.8
    assert fire("provider_outage_cached", ctx({"ai.poisoned_response": 6}, evidence=spread)) is None


def test_new_issue_right_after_our_repair_points_at_the_repair():
    c = ctx({"fs.index_stale": 4}, recent_repairs=[{"repair_id": 9, "action": "index_resync", "at": NOW - 1200}])
    result = fire("repair_regression", c)
    assert result.evidence["repair_id"] == 9 and "roll it back" in result.recommendation
    older = ctx({"fs.index_stale": 4}, recent_repairs=[{"repair_id": 9, "action": "index_resync", "at": NOW - 300}])
    assert fire("repair_regression", older) is None, "the issue predates the repair"


def test_a_large_failing_share_is_systemic_and_stops_automation():
    result = fire("systemic_failure", ctx({"fs.entry_corrupt": 400}, entries=1000, storm_share=0.3))
    assert result.storm and result.evidence["share"] == 0.4
    assert fire("systemic_failure", ctx({"fs.entry_corrupt": 200}, entries=1000, storm_share=0.3)) is None
    assert fire("systemic_failure", ctx({"fs.entry_corrupt": 10}, entries=10, storm_min_entries=20)) is None
