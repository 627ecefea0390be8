"""Batch operator actions: one action over every saga a list filter matches.

``POST /sagas/actions`` (the filters of ``GET /sagas`` in the query, the action in the body)
finds the matching sagas on every worker, refuses more than ``SAGA_TRACKER_BATCH_MAX_SAGAS``
and refuses when a worker does not answer (its sagas would be left out silently). Otherwise it
writes the batch's *manifest* (its id, action, who, why, when and every saga it covers) to the
shared, compacted ``<app_id>-batches`` topic, answers with the batch id, and queues one control
record per saga on the saga log, id ``<batch id>:<saga id>``: applied by each saga's writer like
a single action, audited in its history, a no-op when delivered twice.

The manifest is written before any control record, so a batch is never lost: every worker
reads the manifests, and a saga of a batch still pending after ``RESUME_AFTER`` seconds (the
worker that queued the batch died half-way) has its control record queued again by the
worker that owns it. ``GET /batches/{id}`` asks every worker about the sagas it owns: applied,
rejected (with the reason from the saga's history) or pending, which includes the sagas of a
worker that did not answer.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from tracker.generations.registry import COMPACT, read_from, write
from tracker.kafka.admin import ensure_topics

RESUME_EVERY = 10.0  # seconds between two looks for pending sagas of open batches
BATCH_ID = re.compile(r"^b-[0-9a-f]{16}$")
RESUME_AFTER = 30.0  # seconds before a saga still pending has its control record queued again
RESUME_WITHIN = 3600.0  # batches older than this are not resumed any more (their report stays)
SHOWN = 100  # saga ids listed per kind in a report (the counts are exact)


def batch_id(idempotency_key: str) -> str:
    """The batch id of a request: the same key (a retried request) gives the same batch."""
    return "b-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]


def control_id(batch: str, saga_id: str) -> str:
    return f"{batch}:{saga_id}"


def outcome(state: Mapping[str, Any] | None, control: str) -> tuple[str, str]:
    """What became of one saga's control record: ("applied" | "rejected" | "pending", why)."""
    if state is None:
        return "rejected", "the saga is no longer stored (its time to live ended)"
    for entry in reversed(state.get("history") or []):
        if entry.get("id") == control:
            if entry.get("outcome") == "rejected":
                return "rejected", str(entry.get("detail", ""))
            return "applied", str(entry.get("outcome", ""))
    if control in (state.get("seen") or []):  # applied, its history entry dropped since (bounded)
        return "applied", ""
    return "pending", ""


@dataclass
class Book:
    """The manifests read from the batches topic (no I/O: testable)."""

    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    position: int = 0

    def fold(self, key: bytes | None, value: bytes | None) -> None:
        if key is None or value is None:
            return
        try:
            body = orjson.loads(value)
        except orjson.JSONDecodeError:
            return
        name = key.decode(errors="replace")
        if BATCH_ID.match(name) and isinstance(body, dict) and isinstance(body.get("sagas"), list):
            self.batches[name] = body


class Batches:
    """This worker's view of the manifests, read on demand, and writing new ones."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.book = Book()
        self.settled: set[tuple[str, tuple[int, ...]]] = set()  # (batch, partitions) with nothing pending here
        self.created = False

    async def refresh(self) -> None:
        if not self.created:
            await ensure_topics(self.bootstrap, [self.topic], 1, config=COMPACT)
            self.created = True
        self.book.position = await read_from(self.bootstrap, self.topic, self.book.position, self.book.fold)

    async def find(self, batch: str) -> dict[str, Any] | None:
        if not BATCH_ID.match(batch):  # not an id this API gives out: no read of the topic for it
            return None
        if batch not in self.book.batches:
            await self.refresh()
        return self.book.batches.get(batch)

    async def record(self, manifest: dict[str, Any]) -> None:
        """Write a manifest and wait until the broker has it."""
        await write(self.bootstrap, self.topic, manifest["batch_id"], manifest)
        self.book.batches[manifest["batch_id"]] = manifest

    def open(self, now: float) -> list[dict[str, Any]]:
        """Manifests old enough to resume their pending sagas, and young enough to bother."""
        return [m for m in self.book.batches.values() if RESUME_AFTER <= now - float(m.get("created_at", 0)) <= RESUME_WITHIN]


def manifest(
    batch: str, details: Mapping[str, Any], params: Mapping[str, str], sagas: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    rows = sorted(sagas, key=lambda r: r["saga_id"])
    return {
        "batch_id": batch,
        "action": dict(details),
        "filter": dict(params),
        "created_at": time.time(),
        "matched": len(rows),
        "sagas": [[r["saga_id"], r["saga_type"], r["version"]] for r in rows],
    }


def report(found: Mapping[str, Any], parts: Iterable[Mapping[str, Any]], missing: list[str]) -> dict[str, Any]:
    """``GET /batches/{id}``: the workers' answers about the sagas each owns, added up. A saga
    no answering worker owns is pending (its worker is down or moving)."""
    applied: set[str] = set()
    rejected: dict[str, str] = {}
    for p in parts:
        applied.update(p["applied"])
        rejected.update((r["saga_id"], r["reason"]) for r in p["rejected"])
    pending = sorted(s for s, _, _ in found["sagas"] if s not in applied and s not in rejected)
    action = found["action"]
    return {
        "batch_id": found["batch_id"],
        "action": action.get("action"),
        "actor": action.get("actor"),
        "reason": action.get("reason", ""),
        "created_at": found["created_at"],
        "filter": found["filter"],
        "matched": found["matched"],
        "applied": len(applied),
        "rejected": len(rejected),
        "pending": len(pending),
        "rejections": [{"saga_id": k, "reason": rejected[k]} for k in sorted(rejected)[:SHOWN]],
        "pending_sagas": pending[:SHOWN],
        "partial": bool(missing),
        "missing_workers": missing,
    }
