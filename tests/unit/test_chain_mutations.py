"""A mutation harness: thousands of random single tampering operations on a copy of a real chain.
Every one must be detected, with the right sequence number and kind."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from compliance.keys import chain_key, public_key
from compliance.models import Checkpoint
from compliance.services import canonical_json, checkpoint_statement, checkpoint_take, iter_events, row_mac
from compliance.verify import iso, verify_chain
from healing import services
from healing.models import Repair
from tests.failure_injection.faults import INJECTORS

MUTATIONS = 10_000


@pytest.fixture
def real_chain(store, make_target, approver):
    """A chain written by the product itself, with signed checkpoints taken along the way."""
    for code in ("fs.entry_corrupt", "fs.index_orphan", "fs.index_stale", "ai.poisoned_response", "fs.stray_file"):
        INJECTORS[code](store)
    target = make_target(store)
    services.target_pass(target_id=target.pk, execute_inline=True)
    checkpoint_take()
    for repair in Repair.objects.filter(status="awaiting_approval"):
        services.repair_approve(actor=approver, repair_id=repair.pk, comment="ok")
        services.repair_execute(repair_id=repair.pk)
        checkpoint_take()
    services.target_pass(target_id=target.pk, execute_inline=True)
    rows = list(iter_events())
    checkpoints = [{"seq": c.seq, "hash": c.hash, "at": iso(c.at), "signature": c.signature} for c in Checkpoint.objects.order_by("seq")]
    assert len(rows) > 40 and len(checkpoints) >= 3
    return rows, checkpoints


def make_verifier():
    key = chain_key()
    cache: dict[tuple[int, int], tuple[dict, str]] = {}

    def mac_of(row, seq=None):
        """Memoised per row object; the row is kept in the cache so its id cannot be reused."""
        s = row["seq"] if seq is None else seq
        hit = cache.get((id(row), s))
        if hit is None or hit[0] is not row:
            hit = (row, row_mac(key, row if seq is None else {**row, "seq": seq}))
            cache[(id(row), s)] = hit
        return hit[1]

    def run(rows, checkpoints):
        return verify_chain(rows, mac_of=mac_of, checkpoints=checkpoints, public_key=public_key(), statement_of=checkpoint_statement)

    return run


def _renumber(rows, start, delta):
    return [({**r, "seq": r["seq"] + delta} if r["seq"] >= start else r) for r in rows]


def mutate(rng: random.Random, rows: list[dict], checkpoints: list[dict]):
    """Apply one random tampering; return (rows, checkpoints, expected seq, expected kind, op)."""
    n = len(rows)
    last_cp = checkpoints[-1]["seq"]
    op = rng.choice(["edit", "delete", "delete_renumber", "insert", "reorder", "truncate", "rehash_tail", "forge_checkpoint", "rewrite_with_key"])
    if op == "edit":
        k = rng.randint(1, n)
        field, value = rng.choice([("summary", "nothing happened"), ("actor_label", "mallory"), ("after", {"status": "succeeded"}),
                                   ("action", "repair.approved"), ("object_id", "999"), ("before", None if rows[k - 1]["before"] else {"x": 1})])
        if rows[k - 1][field] == value:
            value = "tampered"
        rows = [({**r, field: value} if r["seq"] == k else r) for r in rows]
        return rows, checkpoints, k, "edit", op
    if op == "delete":
        k = rng.randint(1, n - 1)
        return [r for r in rows if r["seq"] != k], checkpoints, k, "deletion", op
    if op == "delete_renumber":
        k = rng.randint(1, n - 1)
        kept = [r for r in rows if r["seq"] != k]
        return _renumber(kept, k + 1, -1), checkpoints, k, "deletion", op
    if op == "insert":
        k = rng.randint(1, n)
        prev_hash = rows[k - 2]["hash"] if k > 1 else "0" * 64
        forged = {**rows[k - 1], "summary": "an approval that never happened", "prev_hash": prev_hash,
                  "hash": hashlib.sha256(f"forged{k}".encode()).hexdigest()}
        shifted = _renumber(rows, k, +1)
        out = shifted[: k - 1] + [{**forged, "seq": k}] + shifted[k - 1:]
        return out, checkpoints, k, "insertion", op
    if op == "reorder":
        i = rng.randint(1, n - 1)
        j = rng.randint(i + 1, min(n, i + 50))
        swapped = [({**r, "seq": j} if r["seq"] == i else {**r, "seq": i} if r["seq"] == j else r) for r in rows]
        return sorted(swapped, key=lambda r: r["seq"]), checkpoints, i, "reorder", op
    if op == "truncate":
        t = rng.randint(1, last_cp)
        return [r for r in rows if r["seq"] < t], checkpoints, t, "truncation", op
    if op == "rehash_tail":
        # an attacker without the chain key edits event k and recomputes every later hash and link
        k = rng.randint(1, n)
        out, prev = [], rows[k - 2]["hash"] if k > 1 else "0" * 64
        for r in rows:
            if r["seq"] < k:
                out.append(r)
                continue
            r = {**r, "prev_hash": prev, **({"summary": "rewritten"} if r["seq"] == k else {})}
            r["hash"] = hashlib.sha256(canonical_json({**r, "at": iso(r["at"])}).encode()).hexdigest()
            prev = r["hash"]
            out.append(r)
        return out, checkpoints, k, "edit", op
    if op == "forge_checkpoint":
        c = rng.randrange(len(checkpoints))
        forged = [dict(cp) for cp in checkpoints]
        forged[c]["hash"] = hashlib.sha256(b"another head").hexdigest()
        return rows, forged, forged[c]["seq"], "forged_checkpoint", op
    # an insider with the chain key rewrites from k on: only a signed checkpoint can tell, at the first one at or after k
    k = rng.randint(1, last_cp)
    key, out, prev = chain_key(), [], rows[k - 2]["hash"] if k > 1 else "0" * 64
    for r in rows:
        if r["seq"] < k:
            out.append(r)
            continue
        r = {**r, "prev_hash": prev, **({"summary": "rewritten by an insider"} if r["seq"] == k else {})}
        r["hash"] = row_mac(key, r)
        prev = r["hash"]
        out.append(r)
    first_cp = min(cp["seq"] for cp in checkpoints if cp["seq"] >= k)
    return out, checkpoints, first_cp, "rewrite", op


def test_every_tampering_is_detected_at_the_right_sequence_number(real_chain):
    rows, checkpoints = real_chain
    verify = make_verifier()
    assert verify(rows, checkpoints).ok, "the untouched chain verifies"
    rng = random.Random(20261203)
    seen: dict[str, int] = {}
    for i in range(MUTATIONS):
        tampered, cps, seq, kind, op = mutate(rng, rows, checkpoints)
        result = verify(tampered, cps)
        assert result.first_break is not None, f"mutation {i} ({op}) went undetected"
        assert (result.first_break.seq, result.first_break.kind) == (seq, kind), f"mutation {i} ({op}): {result.first_break} expected #{seq} {kind}"
        seen[op] = seen.get(op, 0) + 1
    print(f"\n{MUTATIONS} tamperings on a {len(rows)}-event chain with {len(checkpoints)} checkpoints, all detected: {json.dumps(seen)}")
    assert len(seen) == 9
