"""Chain verification: streams the events in sequence order (never loads the table), checks every
event's keyed hash and link, and every signed checkpoint, and names the first broken sequence number
and what broke: edit, deletion, insertion, reorder, truncation, rewrite or forged checkpoint."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from compliance.keys import signature_valid

GENESIS = "0" * 64
# how far from its place a moved event is looked for when naming a reorder
REORDER_WINDOW = 256


@dataclass
class Break:
    seq: int
    kind: str  # edit | deletion | insertion | reorder | truncation | rewrite | forged_checkpoint
    detail: str


@dataclass
class VerifyResult:
    events: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS
    checkpoints: int = 0
    latest_checkpoint: int | None = None
    first_break: Break | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.first_break is None and not self.problems

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out

    def summary(self) -> str:
        if self.ok:
            return f"chain intact: {self.events} events up to #{self.last_seq}, {self.checkpoints} signed checkpoint(s) match"
        if self.first_break:
            return f"chain broken at #{self.first_break.seq}: {self.first_break.kind} — {self.first_break.detail}"
        return "; ".join(self.problems)


def _with_next(rows: Iterable[dict]) -> Iterator[tuple[dict, dict | None]]:
    iterator = iter(rows)
    current = next(iterator, None)
    while current is not None:
        following = next(iterator, None)
        yield current, following
        current = following


def verify_chain(rows: Iterable[dict], *, mac_of, checkpoints: list[dict], public_key: Ed25519PublicKey, statement_of,
                 start: int = 1, prev: str | None = GENESIS, end: int | None = None) -> VerifyResult:
    """`rows` in ascending seq order; `mac_of(row, seq=None)` the keyed hash of a row (optionally as if
    it had another seq); `checkpoints` dicts with seq, hash, at, signature (from the database and from
    the files outside it); `statement_of(seq, hash, at)` the signed bytes of a checkpoint.

    A segment of a longer chain is verified with `start` (its first seq), `prev` (the stored hash
    before it, or None to take the first link on trust: the segment before checks it) and `end` (its
    last seq: events missing at its tail are a deletion there, not a truncation)."""
    result = VerifyResult()
    good: dict[int, dict] = {}
    for cp in sorted(checkpoints, key=lambda c: c["seq"]):
        if not signature_valid(public_key, statement_of(cp["seq"], cp["hash"], cp["at"]), cp["signature"]):
            result.first_break = Break(cp["seq"], "forged_checkpoint", f"the checkpoint at #{cp['seq']} ({cp.get('source', '?')}) does not carry a valid signature")
            return result
        if cp["seq"] in good and good[cp["seq"]]["hash"] != cp["hash"]:
            result.first_break = Break(cp["seq"], "forged_checkpoint", f"two signed checkpoints at #{cp['seq']} disagree")
            return result
        good[cp["seq"]] = cp
    result.checkpoints = len(good)
    result.latest_checkpoint = max(good) if good else None

    expected = start
    for row, following in _with_next(rows):
        if prev is None:
            prev = row["prev_hash"]
        seq = row["seq"]
        if seq > expected:
            result.first_break = Break(expected, "deletion", f"events #{expected}..#{seq - 1} are missing (the next event found is #{seq})")
            return result
        if not (row["prev_hash"] == prev and mac_of(row) == row["hash"]):  # the fast path: intact and linked
            broken = _judge(row, following, expected, prev, mac_of)
            if broken:
                result.first_break = broken
                return result
        if seq in good and good[seq]["hash"] != row["hash"]:
            result.first_break = Break(seq, "rewrite", f"event #{seq} hashes consistently but differs from the checkpoint signed at {good[seq]['at']}: "
                                       "the chain was recomputed with the chain key")
            return result
        prev, expected = row["hash"], seq + 1
        result.events += 1
    result.last_seq, result.last_hash = expected - 1, prev or GENESIS
    if end is not None:
        if result.last_seq < end:
            result.first_break = Break(result.last_seq + 1, "deletion", f"events #{result.last_seq + 1}..#{end} are missing")
        return result
    later = [s for s in good if s > result.last_seq]
    if later:
        cp = good[min(later)]
        result.first_break = Break(result.last_seq + 1, "truncation", f"the chain ends at #{result.last_seq} but a checkpoint signed at {cp['at']} "
                                   f"vouches for #{cp['seq']}: events after #{result.last_seq} were removed")
    return result


def _judge(row: dict, following: dict | None, expected: int, prev: str, mac_of) -> Break | None:
    seq = row["seq"]
    intact = mac_of(row) == row["hash"]
    if intact and row["prev_hash"] == prev:
        return None
    if intact:
        return Break(seq, "reorder", f"event #{seq} does not link to #{seq - 1}: events were moved")
    if mac_of(row, seq=seq + 1) == row["hash"]:
        # the genuine next event sits here: either the two were swapped, or #seq was deleted and the rest renumbered
        if following is not None and mac_of(following, seq=seq) == following["hash"]:
            return Break(seq, "reorder", f"events #{seq} and #{seq + 1} were swapped")
        return Break(seq, "deletion", f"event #{seq} was deleted and the later events renumbered (genuine #{seq + 1} now sits at #{seq})")
    # an inserted event shifts the rest up by one: the next one is genuine as #seq and links to our predecessor
    if following is not None and following["prev_hash"] == prev and mac_of(following, seq=following["seq"] - 1) == following["hash"]:
        return Break(seq, "insertion", f"event #{seq} was inserted: it is not part of the chain (the next event is the genuine #{seq})")
    if row["prev_hash"] == prev:
        return Break(seq, "edit", f"event #{seq} was changed after it was written (its hash no longer matches its content)")
    for offset in range(1, REORDER_WINDOW):
        for candidate in (seq + offset, seq - offset):
            if candidate > 0 and mac_of(row, seq=candidate) == row["hash"]:
                return Break(seq, "reorder", f"events were reordered: genuine #{candidate} sits at #{seq}")
    return Break(seq, "edit", f"event #{seq} matches no genuine event: it was forged or rewritten without the chain key")


def load_checkpoint_files(directory: Path) -> tuple[list[dict], list[str]]:
    found, problems = [], []
    if not directory.is_dir():
        return found, problems
    for path in sorted(directory.glob("checkpoint-*.json")):
        try:
            body = json.loads(path.read_text())
            found.append({"seq": int(body["seq"]), "hash": body["hash"], "at": body["at"], "signature": body["signature"], "source": f"file {path.name}"})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"unreadable checkpoint file {path.name}: {exc}")
    return found, problems


def iso(value: datetime | str) -> str:
    return value if isinstance(value, str) else value.isoformat(timespec="microseconds")
