"""Compliance reports, built from audit events alone, exported as JSON, CSV and PDF, each signed.

What an auditor asks for: scope and period; the policy versions in force; the population of changes;
per change the request, the risk assessment, the dry-run evidence, the approvals (who, when, on what
authority, and whether before execution), the implementation record, the verification, any rollback;
emergency changes and their retroactive reviews; separation-of-duties exceptions; MTTD and MTTR; and
the chain verification result.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import statistics
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from compliance.actions import Action
from compliance.actors import Actor
from compliance.keys import key_id, public_pem, sign
from compliance.models import AuditEvent, ComplianceReport
from compliance.services import audit_append, audited_transaction, chain_verify

CHANGE_ACTIONS = {
    Action.REPAIR_PLANNED, Action.REPAIR_GATED, Action.REPAIR_APPROVED, Action.REPAIR_REJECTED, Action.REPAIR_BREAK_GLASS,
    Action.REPAIR_STARTED, Action.REPAIR_APPLIED, Action.REPAIR_VERIFIED, Action.REPAIR_SUCCEEDED, Action.REPAIR_FAILED,
    Action.REPAIR_ROLLED_BACK, Action.REPAIR_ROLLBACK_REQUESTED, Action.REPAIR_EXPIRED, Action.REPAIR_SUPERSEDED, Action.REPAIR_RETRIED,
}
FINAL = {Action.REPAIR_SUCCEEDED: "succeeded", Action.REPAIR_ROLLED_BACK: "rolled back", Action.REPAIR_FAILED: "failed",
         Action.REPAIR_EXPIRED: "expired", Action.REPAIR_REJECTED: "rejected", Action.REPAIR_SUPERSEDED: "superseded"}


def _t(event: AuditEvent) -> str:
    return event.at.isoformat(timespec="seconds")


def _who(event: AuditEvent) -> dict[str, Any]:
    return {"kind": event.actor_kind, "id": event.actor_id, "name": event.actor_label, "policy_version": event.actor_version}


def _target_names(until: datetime) -> dict[str, str]:
    """scope -> target name, from the target.created events."""
    names = {}
    for event in AuditEvent.objects.filter(action=Action.TARGET_CREATED, at__lt=until).only("scope", "after", "object_id"):
        names[event.scope or f"target:{event.object_id}"] = (event.after or {}).get("name", event.object_id)
    return names


def build_report(*, start: datetime, end: datetime, targets: list[str] | None = None) -> dict[str, Any]:
    names = _target_names(end)
    scopes = {scope for scope, name in names.items() if not targets or name in targets}
    missing = sorted(set(targets or []) - set(names.values()))
    changes: dict[str, dict[str, Any]] = {}
    policies: dict[tuple, dict] = {}
    issues_opened, issues_resolved = [], []
    reviews: dict[str, dict] = {}
    qs = AuditEvent.objects.filter(at__gte=start, at__lt=end, scope__in=scopes).order_by("seq")
    for event in qs.iterator(chunk_size=2000):
        after = event.after or {}
        if event.action == Action.ISSUE_OPENED:
            sample_times = [row.get("mtime") or row.get("timestamp") for row in after.get("sample", []) if isinstance(row, dict)]
            sample_times = [t for t in sample_times if isinstance(t, int | float)]
            if sample_times:
                issues_opened.append(max(0.0, event.at.timestamp() - min(sample_times)))
            continue
        if event.action == Action.ISSUE_RESOLVED and isinstance(after.get("open_seconds"), int | float):
            issues_resolved.append(after["open_seconds"])
            continue
        if event.action in {Action.REVIEW_OPENED, Action.REVIEW_SIGNED_OFF}:
            review = reviews.setdefault(str(after.get("repair")), {})
            if event.action == Action.REVIEW_OPENED:
                review.update(opened_at=_t(event), due_at=after.get("due_at"), review=event.object_id)
            else:
                review.update(signed_off_by=event.actor_label, signed_off_at=_t(event), comment=after.get("comment"), late=after.get("late"))
            continue
        if event.object_type != "repair" or event.action not in CHANGE_ACTIONS:
            continue
        change = changes.setdefault(event.object_id, {
            "repair": int(event.object_id), "target": names.get(event.scope, event.scope), "approvals": [], "rejections": [],
            "request": None, "risk_assessment": None, "dry_run": [], "gate": None, "implementation": None, "verification": None,
            "rollback": None, "outcome": "open", "emergency": None, "events": [],
        })
        change["events"].append({"seq": event.seq, "at": _t(event), "action": event.action, "actor": event.actor_label})
        if event.action == Action.REPAIR_PLANNED:
            change["request"] = {"at": _t(event), "by": _who(event), "issue": after.get("issue"), "code": after.get("code"), "action": after.get("action")}
            change["risk_assessment"] = {k: after.get(k) for k in ("risk", "blast_entries", "blast_bytes", "plan_hash", "operations")}
            change["dry_run"] = after.get("dry_run", [])
        elif event.action == Action.REPAIR_GATED:
            change["gate"] = {"at": _t(event), "decision": after.get("status"), "reason": event.summary, "authority": _who(event),
                              "approvals_required": after.get("approvals_required")}
            if after.get("policy"):
                policies[(after["policy"], after.get("policy_version"))] = {"policy": after["policy"], "version": after.get("policy_version")}
        elif event.action in {Action.REPAIR_APPROVED, Action.REPAIR_BREAK_GLASS}:
            change["approvals"].append({"at": _t(event), "by": _who(event), "comment": after.get("comment") or after.get("justification", ""),
                                        "plan_hash": after.get("plan_hash"), "authority": "policy" if event.actor_kind == "policy" else
                                        ("break-glass" if event.action == Action.REPAIR_BREAK_GLASS else "approver role")})
            if event.actor_kind == "policy":
                policies[(event.actor_label, event.actor_version)] = {"policy": event.actor_label.removeprefix("policy:"), "version": event.actor_version}
                change["gate"] = change["gate"] or {"at": _t(event), "decision": "approved", "reason": event.summary, "authority": _who(event),
                                                    "approvals_required": 0}
            if event.action == Action.REPAIR_BREAK_GLASS:
                change["emergency"] = {"at": _t(event), "by": event.actor_label, "justification": after.get("justification"), "review_due": after.get("review_due")}
        elif event.action == Action.REPAIR_REJECTED:
            change["rejections"].append({"at": _t(event), "by": event.actor_label, "comment": after.get("comment")})
        elif event.action == Action.REPAIR_STARTED:
            change["implementation"] = {"started_at": _t(event), "plan_hash": after.get("plan_hash")}
        elif event.action == Action.REPAIR_APPLIED:
            (change["implementation"] or change.setdefault("implementation", {})).update(applied=after.get("applied"), skipped=after.get("skipped"),
                                                                                             manifest=after.get("manifest"))
        elif event.action == Action.REPAIR_VERIFIED:
            change["verification"] = {"at": _t(event), **{k: after.get(k) for k in ("passed", "checked", "still_failing", "new_findings")}}
        elif event.action == Action.REPAIR_ROLLBACK_REQUESTED:
            change["rollback"] = {"requested_at": _t(event), "by": event.actor_label, "reason": after.get("reason")}
        if event.action in FINAL:
            change["outcome"] = FINAL[event.action]
            if event.action == Action.REPAIR_ROLLED_BACK:
                change["rollback"] = {**(change["rollback"] or {}), "at": _t(event), "by": event.actor_label, "reason": event.summary,
                                      "restored": after.get("restored") or after.get("rollback")}

    population = [c for c in changes.values() if c["request"] is not None]
    sod = []
    for change in population:
        requester = change["request"]["by"]
        started = change["implementation"]["started_at"] if change["implementation"] else None
        for approval in change["approvals"]:
            approval["before_execution"] = started is None or approval["at"] <= started
            if requester["kind"] == "user" and approval["by"]["kind"] == "user" and approval["by"]["id"] == requester["id"] and approval["authority"] != "break-glass":
                sod.append({"repair": change["repair"], "exception": f"approved by its own requester {requester['name']}"})
            if not approval["before_execution"]:
                sod.append({"repair": change["repair"], "exception": f"approval by {approval['by']['name']} came after execution started"})
        if started and not change["approvals"]:
            sod.append({"repair": change["repair"], "exception": "executed without any recorded approval"})
        if change["emergency"]:
            change["emergency"]["review"] = reviews.get(str(change["repair"]), {})
    emergency = [{"repair": c["repair"], "target": c["target"], **c["emergency"]} for c in population if c["emergency"]]
    outcomes: dict[str, int] = {}
    for change in population:
        outcomes[change["outcome"]] = outcomes.get(change["outcome"], 0) + 1
    verification = chain_verify()
    return {
        "title": "aicache-healing change-management report",
        "generated_at": timezone.now().isoformat(timespec="seconds"),
        "scope": {"period_start": start.isoformat(), "period_end": end.isoformat(), "targets": sorted(names[s] for s in scopes),
                  "unknown_targets": missing},
        "policy_versions_in_force": sorted(policies.values(), key=lambda p: (str(p["policy"]), p["version"] or 0)),
        "population": {"changes": len(population), "by_outcome": dict(sorted(outcomes.items()))},
        "changes": sorted(population, key=lambda c: c["repair"]),
        "emergency_changes": emergency,
        "separation_of_duties_exceptions": sod,
        "mttd_seconds": _stats(issues_opened),
        "mttr_seconds": _stats(issues_resolved),
        "chain_verification": {"ok": verification.ok, "summary": verification.summary(), "events": verification.events,
                               "last_seq": verification.last_seq, "checkpoints": verification.checkpoints},
    }


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "mean": None, "median": None}
    return {"count": len(values), "mean": round(statistics.fmean(values), 1), "median": round(statistics.median(values), 1)}


CSV_COLUMNS = ["repair", "target", "code", "action", "risk", "blast_entries", "requested_at", "requested_by", "gate", "policy_version",
               "approvals", "approved_before_execution", "started_at", "applied", "verification", "outcome", "rollback", "emergency", "review"]


def render_csv(report: dict[str, Any]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for c in report["changes"]:
        review = (c["emergency"] or {}).get("review") or {}
        writer.writerow([
            c["repair"], c["target"], c["request"]["code"], c["request"]["action"], (c["risk_assessment"] or {}).get("risk"),
            (c["risk_assessment"] or {}).get("blast_entries"), c["request"]["at"], c["request"]["by"]["name"],
            (c["gate"] or {}).get("reason", ""), (c["gate"] or {}).get("authority", {}).get("policy_version"),
            "; ".join(f"{a['by']['name']} ({a['authority']}) at {a['at']}" for a in c["approvals"]),
            all(a.get("before_execution", True) for a in c["approvals"]) if c["approvals"] else "",
            (c["implementation"] or {}).get("started_at", ""), (c["implementation"] or {}).get("applied", ""),
            "" if c["verification"] is None else ("passed" if c["verification"]["passed"] else "failed"),
            c["outcome"], (c["rollback"] or {}).get("at", ""), "yes" if c["emergency"] else "",
            review.get("signed_off_by", "open" if c["emergency"] else ""),
        ])
    return out.getvalue().encode()


def _latin(text: Any) -> str:
    table = {"“": '"', "”": '"', "‘": "'", "’": "'", "—": "-", "–": "-", "…": "...", "→": "->", "≤": "<=", "≥": ">="}
    s = str(text)
    for a, b in table.items():
        s = s.replace(a, b)
    return s.encode("latin-1", "replace").decode("latin-1")


def render_pdf(report: dict[str, Any]) -> bytes:
    from fpdf import FPDF

    pdf = FPDF(orientation="L", format="A4")
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    def line(text: str, size: int = 10, style: str = "") -> None:
        pdf.set_font("Helvetica", style, size)
        pdf.set_x(pdf.l_margin)
        pdf.multi_cell(width, size * 0.5, _latin(text))

    scope = report["scope"]
    line(report["title"], 16, "B")
    line(f"Period {scope['period_start']} to {scope['period_end']}; targets: {', '.join(scope['targets']) or 'none'}")
    line(f"Generated {report['generated_at']}. Chain verification: {report['chain_verification']['summary']}")
    line(f"Population: {report['population']['changes']} change(s); by outcome: {report['population']['by_outcome']}")
    line(f"MTTD: {report['mttd_seconds']}; MTTR: {report['mttr_seconds']}")
    line("Policy versions in force: " + (", ".join(f"{p['policy']} v{p['version']}" for p in report["policy_versions_in_force"]) or "none"))
    line("Changes", 13, "B")
    for c in report["changes"]:
        approvals = "; ".join(f"{a['by']['name']} ({a['authority']}, {a['at']}{'' if a.get('before_execution', True) else ', AFTER execution'})" for a in c["approvals"])
        line(f"Repair #{c['repair']} on {c['target']}: {c['request']['action']} for {c['request']['code']}, {(c['risk_assessment'] or {}).get('risk')} risk, "
             f"{(c['risk_assessment'] or {}).get('blast_entries')} entries. Requested {c['request']['at']} by {c['request']['by']['name']}.", 9, "B")
        line(f"Gate: {(c['gate'] or {}).get('reason', '-')}. Approvals: {approvals or 'none'}."
             + (f" Rejected: {c['rejections'][0]['by']} ({c['rejections'][0]['comment']})." if c["rejections"] else ""), 9)
        verification = c["verification"]
        line(f"Implementation: {c['implementation'] or 'not executed'}. Verification: "
             f"{'-' if verification is None else ('passed' if verification['passed'] else 'failed')}. Outcome: {c['outcome']}."
             + (f" Rollback: {c['rollback'].get('reason', '')} at {c['rollback'].get('at', '')}." if c["rollback"] else ""), 9)
        if c["emergency"]:
            review = c["emergency"].get("review") or {}
            line(f"EMERGENCY CHANGE by {c['emergency']['by']}: {c['emergency']['justification']}. Retroactive review: "
                 f"{('signed off by ' + review['signed_off_by']) if review.get('signed_off_by') else 'OPEN, due ' + str(c['emergency'].get('review_due'))}.", 9)
    line("Emergency changes", 13, "B")
    for e in report["emergency_changes"] or [{"repair": "-", "justification": "none"}]:
        line(f"#{e['repair']}: {e.get('justification')}", 9)
    line("Separation-of-duties exceptions", 13, "B")
    for s in report["separation_of_duties_exceptions"] or [{"repair": "-", "exception": "none"}]:
        line(f"#{s['repair']}: {s['exception']}", 9)
    return bytes(pdf.output())


def sign_file(path: Path) -> Path:
    data = path.read_bytes()
    signature = {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "algorithm": "ed25519",
                 "key_id": key_id(), "public_key": public_pem(), "signature": sign(data)}
    sig_path = path.with_name(path.name + ".sig.json")
    sig_path.write_text(json.dumps(signature, indent=2))
    return sig_path


def report_generate(*, start: datetime, end: datetime, targets: list[str] | None, actor: Any = None, actor_label: str | None = None) -> ComplianceReport:
    if end <= start:
        raise ValueError("the period must end after it starts")
    report = build_report(start=start, end=end, targets=targets)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%S%f")
    directory = Path(settings.COMPLIANCE["REPORT_DIR"]) / f"report-{stamp}"
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for fmt, body in (("json", json.dumps(report, indent=2, default=str).encode()), ("csv", render_csv(report)), ("pdf", render_pdf(report))):
        path = directory / f"compliance-report.{fmt}"
        path.write_bytes(body)
        files[fmt] = {"path": str(path), "sha256": hashlib.sha256(body).hexdigest(), "signature_path": str(sign_file(path))}
    who = Actor.of(actor) if actor is not None else Actor.system(actor_label or "reports")
    with audited_transaction():
        row = ComplianceReport.objects.create(title=report["title"], period_start=start, period_end=end, targets=report["scope"]["targets"],
                                              created_at=timezone.now(), created_by=who.label, files=files,
                                              summary={"population": report["population"], "chain": report["chain_verification"]})
        audit_append(actor=who, action=Action.REPORT_GENERATED, object_type="report", object_id=row.pk,
                     summary=f"compliance report {start:%Y-%m-%d} to {end:%Y-%m-%d}",
                     after={"targets": row.targets, "digests": {fmt: info["sha256"] for fmt, info in files.items()}})
    return row
