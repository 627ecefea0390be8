"""Replay: build a new state generation from the input topics; verify it; promote or retire it.

``feed`` fills a fresh generation's saga log from the services' topics and the shared
decisions topic, from the earliest retained offset (or a given time) up to the end offsets
read when it starts. Records are merged across partitions by timestamp (as Kafka Streams
does for a task's inputs), so a saga's events and the decisions taken about it come in the
order they were written; the generation's workers then apply it like any saga log, and
each recorded decision at its anchor. The feed commits the generation's ingest offsets at
that end, so its workers go on live from there.

``compare`` reads the ``sagas`` changelog of two generations and compares a digest of
every saga (``state.outcome_view``): what a saga came to, not the order records arrived in.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from tracker.core.correlation import Ignored, Record
from tracker.core.definitions import Catalog
from tracker.core.errors import ReplayError
from tracker.core.events import CONTROL, DECISION, MARK_PARTIAL, SERVICE, Event
from tracker.core.state import outcome_view
from tracker.generations import registry as gens
from tracker.kafka.admin import bootstrap_of, ensure_topics
from tracker.ops.settings import Settings, changelog, group_of
from tracker.stream.deadletters import headers as dead_letter_headers
from tracker.stream.ingest import to_event

log = logging.getLogger(__name__)
FETCH_MS = 500


@dataclass
class FeedReport:
    generation: int
    shadow: bool
    records: int = 0
    events: int = 0
    decisions: int = 0
    ignored: int = 0
    dead_lettered: int = 0
    partial: list[str] = field(default_factory=list)
    truncated: bool = False  # the window does not start at the beginning of the topics
    window: dict[str, list[int]] = field(default_factory=dict)  # "topic/partition" -> [start, end)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class _DeadLetterSink:
    """The generation's dead-letter topic, with the same headers the worker writes."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer, self.topic = producer, topic

    async def send(self, record: Record, reason: str, detail: str) -> None:
        await self.producer.send(
            self.topic, key=record.key, value=record.value, headers=dead_letter_headers(record, reason, detail)
        )


async def _partitions(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    out: list[TopicPartition] = []
    for topic in topics:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        out.extend(TopicPartition(topic, p) for p in sorted(parts))
    return out


async def feed(settings: Settings, catalog: Catalog, *, from_time: float | None = None) -> FeedReport:
    """Fill generation ``settings.generation``'s saga log; raises ``ReplayError`` if it exists."""
    bootstrap = bootstrap_of(settings.broker)
    registry = await gens.read_registry(bootstrap, settings.generations)
    n = settings.generation
    if n == registry.active or n in registry.builds:
        raise ReplayError(f"generation {n} already exists (promoted: {registry.active}); pick a new number or retire it")
    await ensure_topics(
        bootstrap,
        [settings.saga_log, settings.dead_letters, settings.shadow_outputs],
        settings.partitions,
        settings.replication_factor,
    )
    await ensure_topics(bootstrap, [settings.decisions], settings.partitions, settings.replication_factor)
    build = {"generation": n, "shadow": settings.shadow, "definitions": list(settings.definitions), "from_time": from_time}
    await gens.write(bootstrap, settings.generations, f"generation:{n}", {**build, "state": "feeding", "at": time.time()})
    report = FeedReport(n, settings.shadow)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=settings.producer_max_batch_size, linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        tps = await _partitions(consumer, [*catalog.topics, settings.decisions])
        consumer.assign(tps)
        earliest = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        start = dict(earliest)
        if from_time is not None:
            found = await consumer.offsets_for_times({tp: int(from_time * 1000) for tp in tps})
            start = {tp: (found[tp].offset if found.get(tp) is not None else end[tp]) for tp in tps}
        report.truncated = from_time is not None or any(earliest[tp] > 0 for tp in tps)
        report.window = {f"{tp.topic}/{tp.partition}": [start[tp], end[tp]] for tp in tps}
        for tp in tps:
            consumer.seek(tp, start[tp])
        sink = _DeadLetterSink(producer, settings.dead_letters)
        started: dict[str, bool] = {}  # saga id -> its start event was in the window
        first: dict[str, Event] = {}
        async for record in _merged(consumer, {tp: (start[tp], end[tp]) for tp in tps}):
            if from_time is not None and record.timestamp is not None and record.timestamp < from_time:
                continue  # a broker that answers a time lookup coarsely (the embedded one) seeks too early
            report.records += 1
            try:
                event = to_event(catalog, record, decisions=settings.decisions, generation=n, max_bytes=settings.max_event_bytes)
            except Ignored:
                report.ignored += 1
                continue
            except Exception as exc:  # CorrelationError, or input nobody can read: kept, with why
                report.dead_lettered += 1
                await sink.send(record, getattr(exc, "reason", "processing_error"), getattr(exc, "detail", repr(exc)))
                continue
            if event is None:
                continue
            if event.kind == DECISION:
                report.decisions += 1
            elif event.kind == SERVICE:
                report.events += 1
                definition = catalog.definition(event.saga_type, event.version)
                is_start = definition is not None and definition.start == event.type
                started[event.saga_id] = started.get(event.saga_id, False) or is_start
                first.setdefault(event.saga_id, event)
            await producer.send(settings.saga_log, key=event.saga_id.encode(), value=orjson.dumps(event.to_dict()))
        if report.truncated:
            # Their start is before the window: say so instead of guessing what came before.
            for saga_id in sorted(s for s, ok in started.items() if not ok):
                head = first[saga_id]
                mark = Event(
                    saga_id=saga_id,
                    saga_type=head.saga_type,
                    id=f"partial:{saga_id}:g{n}",
                    type="ReplayWindowStart",
                    time=head.time,
                    kind=CONTROL,
                    action={"action": MARK_PARTIAL, "actor": "replay", "reason": "its start is before the replay window"},
                )
                await producer.send(settings.saga_log, key=saga_id.encode(), value=orjson.dumps(mark.to_dict()))
                report.partial.append(saga_id)
        await producer.flush()
        await _commit(bootstrap, settings.group_id, {tp: end[tp] for tp in tps})
    finally:
        await producer.stop()
        await consumer.stop()
    summary = {k: v for k, v in report.to_dict().items() if k not in ("partial", "window")}
    await gens.write(
        bootstrap,
        settings.generations,
        f"generation:{n}",
        {**build, "state": "fed", "partial": len(report.partial), **summary, "at": time.time()},
    )
    return report


async def _merged(consumer: AIOKafkaConsumer, window: dict[TopicPartition, tuple[int, int]]) -> Any:
    """Every record in the window, in (timestamp, topic, partition, offset) order.

    A k-way merge: a partition's next record is only compared once it is fetched, and a
    partition that is drained of its window drops out.
    """
    buffers: dict[TopicPartition, deque[Any]] = {tp: deque() for tp, (s, e) in window.items() if s < e}
    heap: list[tuple[int, str, int, int, Any]] = []

    async def refill(tps: list[TopicPartition]) -> None:
        while tps:
            batch = await consumer.getmany(*tps, timeout_ms=FETCH_MS)
            for tp, msgs in batch.items():
                limit = window[tp][1]
                buffers[tp].extend(m for m in msgs if m.offset < limit)
            tps = [tp for tp in tps if not buffers[tp]]

    await refill(list(buffers))
    for tp, buf in buffers.items():
        if buf:
            m = buf.popleft()
            heapq.heappush(heap, (m.timestamp, tp.topic, tp.partition, m.offset, m))
    while heap:
        _, topic, partition, offset, m = heapq.heappop(heap)
        yield Record(
            topic=topic,
            partition=partition,
            offset=offset,
            key=m.key,
            value=m.value,
            headers=list(m.headers or []),
            timestamp=m.timestamp / 1000 if m.timestamp and m.timestamp > 0 else None,
        )
        tp = TopicPartition(topic, partition)
        if offset + 1 >= window[tp][1]:
            continue
        if not buffers[tp]:
            await refill([tp])
        nxt = buffers[tp].popleft()
        heapq.heappush(heap, (nxt.timestamp, topic, partition, nxt.offset, nxt))


async def _commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit a group's offsets without joining it (the generation's workers are not up)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
    finally:
        await consumer.stop()


# --- verify -----------------------------------------------------------------------------


async def read_all(bootstrap: str, topic: str) -> AsyncIterator[Record]:
    """Every record of a topic as it stands, in timestamp order (streamed, not held)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await _partitions(consumer, [topic])
        consumer.assign(tps)
        begin, end = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, begin[tp])
        async for r in _merged(consumer, {tp: (begin[tp], end[tp]) for tp in tps}):
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
        data = orjson.loads(raw)
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
    group = group_of(settings.app_id, generation)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        tps = await _partitions(consumer, [*catalog.topics, settings.decisions, f"{group}-saga-log"])
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
    a = views(base_catalog, await read_latest(bootstrap, changelog(settings.app_id, base, "sagas")))
    b = views(other_catalog, await read_latest(bootstrap, changelog(settings.app_id, other, "sagas")))
    differing = [
        {"saga_id": sid, "base": a.get(sid), "other": b.get(sid)}
        for sid in sorted(set(a) | set(b))
        if a.get(sid) is None or b.get(sid) is None or digest(a[sid]) != digest(b[sid])
    ]
    live = {v.get("id") for _, v in await read_values(bootstrap, settings.compensations) if isinstance(v, dict)}
    shadow_topic = f"{group_of(settings.app_id, other)}-shadow"
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


async def retire(settings: Settings, generation: int) -> list[str]:
    """Delete a generation's own topics (never the promoted one's, never shared ones)."""
    bootstrap = bootstrap_of(settings.broker)
    registry = await gens.read_registry(bootstrap, settings.generations)
    if generation == registry.active:
        raise ReplayError(f"generation {generation} is the promoted one; promote another first")
    running = [u for u, at in registry.workers.get(generation, {}).items() if time.time() - at < gens.FRESH]
    if running:
        raise ReplayError(f"generation {generation} still has workers: {', '.join(running)}; stop them first")
    group = group_of(settings.app_id, generation)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = set(await admin.list_topics())
        shared = {settings.decisions, settings.generations, settings.compensations, settings.outcomes}
        mine = {
            t
            for t in names
            if t.startswith(group + "-") and t not in shared and not (generation == 1 and _other_generation(settings.app_id, t))
        }
        if mine:
            await admin.delete_topics(sorted(mine))
    finally:
        await admin.close()
    await gens.write(bootstrap, settings.generations, f"generation:{generation}", {"state": "retired", "at": time.time()})
    return sorted(mine)


def _other_generation(app_id: str, topic: str) -> bool:
    rest = topic[len(app_id) + 1 :]
    head = rest.split("-", 1)[0]
    return head.startswith("g") and head[1:].isdigit()
