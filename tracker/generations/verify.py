"""Verify: has a generation caught up, and does it agree with another?

``compare`` reads the ``sagas`` changelog of two generations and compares a digest of every
saga (``state.outcome_view``): what a saga came to, not the order records arrived in.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from tables import rows
from topics import names
from tracker.core.correlation import Record
from tracker.core.definitions import Catalog
from tracker.core.state import outcome_view
from tracker.generations.replay import merged, open_window, partitions_of
from tracker.kafka import clients
from tracker.kafka.admin import bootstrap_of
from tracker.ops.settings import Settings

log = logging.getLogger(__name__)


async def read_all(bootstrap: str, topic: str) -> AsyncIterator[Record]:
    """Every record of a topic as it stands, in timestamp order (streamed, not held)."""
    consumer = clients.consumer(bootstrap, purpose="replay", enable_auto_commit=False)
    await consumer.start()
    try:
        window, _ = await open_window(consumer, [topic], None)
        async for r in merged(consumer, window, {}):
            yield r
    finally:
        await consumer.stop()


async def read_latest(bootstrap: str, topic: str) -> dict[bytes, bytes]:
    """The last value per key of a topic (a table's changelog), tombstones removed."""
    out: dict[bytes, bytes] = {}
    async for r in read_all(bootstrap, topic):
        if r.key is None:
            continue
        if r.value is None:
            out.pop(r.key, None)
        else:
            out[r.key] = r.value
    return out


async def read_values(bootstrap: str, topic: str) -> list[tuple[dict[str, str], Any]]:
    """Every record of a topic: (headers, JSON value); values that are not JSON are skipped."""
    out = []
    async for r in read_all(bootstrap, topic):
        try:
            out.append(({k: v.decode(errors="replace") for k, v in r.headers}, orjson.loads(r.value or b"null")))
        except orjson.JSONDecodeError:
            continue
    return out


def views(catalog: Catalog, states: dict[bytes, bytes]) -> dict[str, dict[str, Any]]:
    out = {}
    for raw in states.values():
        data = rows.data(raw)
        d = catalog.definition(data["saga_type"], data.get("version"))
        out[data["saga_id"]] = outcome_view(data, [s.name for s in d.steps] if d else None)
    return out


def digest(view: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(view, option=orjson.OPT_SORT_KEYS)).hexdigest()


def total_digest(by_saga: dict[str, dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for saga_id in sorted(by_saga):
        h.update(f"{saga_id}={digest(by_saga[saga_id])}\n".encode())
    return h.hexdigest()


async def caught_up(settings: Settings, generation: int, catalog: Catalog) -> dict[str, int]:
    """Records a generation has not processed yet, per partition with any (empty: caught up)."""
    bootstrap = bootstrap_of(settings.broker)
    group = names.group_of(settings.app_id, generation)
    consumer = clients.consumer(bootstrap, purpose="replay", enable_auto_commit=False)
    admin = clients.admin(bootstrap, purpose="replay")
    await consumer.start()
    await admin.start()
    try:
        tps = await partitions_of(consumer, [*catalog.topics, settings.decisions, names.saga_log(group)])
        end = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        behind = {}
        for tp in tps:
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            if end[tp] > done:
                behind[f"{tp.topic}/{tp.partition}"] = end[tp] - done
        return behind
    finally:
        await admin.close()
        await consumer.stop()


@dataclass
class Comparison:
    base: int
    other: int
    base_digest: str
    other_digest: str
    differing: list[dict[str, Any]]  # saga id, both views
    counts_before: dict[str, int]
    counts_after: dict[str, int]
    would_emit: list[str]  # compensation ids the other generation decided (its shadow topic)
    new_compensations: list[str]  # ... that the base generation never emitted
    partial: int

    @property
    def equal(self) -> bool:
        return self.base_digest == self.other_digest

    def to_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "equal": self.equal}


async def compare(settings: Settings, base: int, other: int, base_catalog: Catalog, other_catalog: Catalog) -> Comparison:
    bootstrap = bootstrap_of(settings.broker)
    a = views(base_catalog, await read_latest(bootstrap, names.changelog(names.group_of(settings.app_id, base), "sagas")))
    b = views(other_catalog, await read_latest(bootstrap, names.changelog(names.group_of(settings.app_id, other), "sagas")))
    differing = [
        {"saga_id": sid, "base": a.get(sid), "other": b.get(sid)}
        for sid in sorted(set(a) | set(b))
        if a.get(sid) is None or b.get(sid) is None or digest(a[sid]) != digest(b[sid])
    ]
    live = {v.get("id") for _, v in await read_values(bootstrap, settings.compensations) if isinstance(v, dict)}
    shadow_topic = names.shadow(names.group_of(settings.app_id, other))
    would = sorted(
        v["id"]
        for h, v in await read_values(bootstrap, shadow_topic)
        if h.get("saga_tracker_kind") == "compensation" and isinstance(v, dict) and "id" in v
    )
    return Comparison(
        base=base,
        other=other,
        base_digest=total_digest(a),
        other_digest=total_digest(b),
        differing=differing,
        counts_before=dict(Counter(v["status"] for v in a.values())),
        counts_after=dict(Counter(v["status"] for v in b.values())),
        would_emit=sorted(set(would)),
        new_compensations=sorted(set(would) - live),
        partial=sum(1 for v in b.values() if v["partial"]),
    )
