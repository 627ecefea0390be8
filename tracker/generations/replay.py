"""Replay: feed a new state generation from the input topics.

``feed`` fills a fresh generation's saga log from the services' topics and the shared
decisions topic, from the earliest retained offset (or a given time) up to the end offsets
read when it starts. Records are merged across partitions by timestamp (as Kafka Streams
does for a task's inputs), so a saga's events and the decisions taken about it come in the
order they were written; the generation's workers then apply it like any saga log, and
each recorded decision at its anchor. The feed commits the generation's ingest offsets at
that end, so its workers go on live from there.

Verification is in ``verify``, retiring a generation in ``retire``.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from tracker.core.correlation import Ignored, Record
from tracker.core.definitions import Catalog
from tracker.core.errors import ReplayError
from tracker.core.events import CONTROL, DECISION, MARK_PARTIAL, SERVICE, Event
from tracker.generations import registry as gens
from tracker.kafka import clients, internals, records
from tracker.kafka.admin import batch_size_for, bootstrap_of, ensure_topics
from tracker.ops.settings import Settings
from tracker.stream.deadletters import headers as dead_letter_headers
from tracker.stream.deadletters import why
from tracker.stream.decoding import to_event

log = logging.getLogger(__name__)
FETCH_MS = 500
IDLE_FETCHES = 2  # empty fetches in a row at or past the reported end: the partition is read to its end
IDLE_MS = 100  # how long such a fetch waits


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
    saga_log_end: dict[str, int] = field(default_factory=dict)  # saga-log partition -> end of the backlog

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


async def partitions_of(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    out: list[TopicPartition] = []
    for topic in topics:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await internals.refresh_metadata(consumer)
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
    began = time.time()  # records written after this are live: the generation's workers read them
    consumer = clients.consumer(bootstrap, purpose="replay", enable_auto_commit=False, auto_offset_reset="earliest")
    outputs = [settings.saga_log, settings.dead_letters, settings.shadow_outputs]
    batches = await batch_size_for(bootstrap, outputs, settings.producer_max_batch_size)
    producer = clients.producer(bootstrap, purpose="replay", max_batch_size=batches, linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        window, earliest = await open_window(consumer, [*catalog.topics, settings.decisions], from_time)
        tps = list(window)
        report.truncated = from_time is not None or any(earliest[tp] > 0 for tp in tps)
        report.window = {f"{tp.topic}/{tp.partition}": list(window[tp]) for tp in tps}
        sink = _DeadLetterSink(producer, settings.dead_letters)
        started: dict[str, bool] = {}  # saga id -> its start event was in the window
        first: dict[str, Event] = {}
        fed: dict[TopicPartition, int] = {}  # per partition, the offset after the last record fed
        log_end: dict[int, int] = {}  # saga-log partition -> the offset after the backlog written there

        def written(delivery: Any) -> None:
            if not delivery.cancelled() and delivery.exception() is None:
                meta = delivery.result()
                log_end[meta.partition] = max(log_end.get(meta.partition, 0), meta.offset + 1)

        async def to_log(key: bytes, value: bytes) -> None:
            delivery = await producer.send(settings.saga_log, key=key, value=value)
            delivery.add_done_callback(written)

        async for record in merged(consumer, window, fed, cutoff=began, since=from_time):
            report.records += 1
            try:
                event = to_event(catalog, record, decisions=settings.decisions, generation=n, max_bytes=settings.max_event_bytes)
            except Ignored:
                report.ignored += 1
                continue
            except Exception as exc:  # CorrelationError, or input nobody can read: kept, with why
                report.dead_lettered += 1
                await sink.send(record, *why(exc))
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
            await to_log(event.saga_id.encode(), orjson.dumps(event.to_dict()))
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
                await to_log(saga_id.encode(), orjson.dumps(mark.to_dict()))
                report.partial.append(saga_id)
        await producer.flush()
        # Where the generation's workers go on live: right after what was fed, never past or short of it.
        await _commit(bootstrap, settings.group_id, fed)
        report.saga_log_end = {str(p): end for p, end in sorted(log_end.items())}
        report.window = {f"{tp.topic}/{tp.partition}": [window[tp][0], fed[tp]] for tp in tps}
    finally:
        await producer.stop()
        await consumer.stop()
    summary = {k: v for k, v in report.to_dict().items() if k not in ("partial", "window", "saga_log_end")}
    await gens.write(
        bootstrap,
        settings.generations,
        f"generation:{n}",
        # saga_log_end: the generation's workers apply live events of a partition in place only
        # once they have applied its backlog that far (``tracker.stream.backlog``).
        {
            **build,
            "state": "fed",
            "partial": len(report.partial),
            **summary,
            "saga_log_end": report.saga_log_end,
            "at": time.time(),
        },
    )
    return report


async def open_window(
    consumer: AIOKafkaConsumer, topics: Iterable[str], from_time: float | None
) -> tuple[dict[TopicPartition, tuple[int, int]], dict[TopicPartition, int]]:
    """Assign every partition of ``topics`` and seek each to ``from_time`` (default: the earliest
    retained offset); returns the window, (start, reported end) per partition, for ``merged``,
    and the earliest retained offsets."""
    tps = await partitions_of(consumer, topics)
    consumer.assign(tps)
    earliest = await consumer.beginning_offsets(tps)
    end = await consumer.end_offsets(tps)
    start = dict(earliest)
    if from_time is not None:
        found = await consumer.offsets_for_times({tp: int(from_time * 1000) for tp in tps})
        start = {tp: (found[tp].offset if found.get(tp) is not None else end[tp]) for tp in tps}
    for tp in tps:
        consumer.seek(tp, start[tp])
    return {tp: (start[tp], end[tp]) for tp in tps}, earliest


async def merged(
    consumer: AIOKafkaConsumer,
    window: dict[TopicPartition, tuple[int, int]],
    fed: dict[TopicPartition, int],
    cutoff: float | None = None,
    since: float | None = None,
) -> Any:
    """Every record from each partition's start to its real end, in (timestamp, topic, partition,
    offset) order; ``fed`` gets, per partition, the offset after the last record yielded.

    ``window`` is (start, reported end). The reported end is not trusted alone: Tansu reports the
    first offset of the last batch + 1 for a batched topic, so a service that batches its records
    (librdkafka's default) would leave records out of the replay, and the generation's offsets
    would be committed past records it never fed. Past the reported end, reading goes on until
    fetches return nothing (``IDLE_FETCHES`` in a row) or a record was written after ``cutoff``
    (epoch seconds: when the replay began): such a record is live, left to the generation's workers.
    Records older than ``since`` are passed over (counted in ``fed``): a broker that answers a
    time lookup coarsely (the embedded one) seeks too early.
    A k-way merge: a partition's next record is compared only once fetched; a drained one drops out.
    """
    limit = None if cutoff is None else int(cutoff * 1000)
    buffers: dict[TopicPartition, deque[Any]] = {tp: deque() for tp in window}
    idle: dict[TopicPartition, int] = dict.fromkeys(window, 0)
    heap: list[tuple[int, str, int, int, Any]] = []
    for tp, (start, _) in window.items():
        fed[tp] = start

    async def refill(tps: list[TopicPartition]) -> None:
        """Fetch until each of ``tps`` has a record buffered, or is drained."""
        while tps:
            # Past the reported end only a short wait: whatever is there arrives in one fetch.
            past = [await consumer.position(tp) >= window[tp][1] for tp in tps]
            batch = await consumer.getmany(*tps, timeout_ms=IDLE_MS if all(past) else FETCH_MS)
            for tp in tps:
                got = batch.get(tp, [])
                for m in got:
                    if limit is not None and m.offset >= window[tp][1] and m.timestamp > limit:
                        idle[tp] = IDLE_FETCHES  # live from here: the window ends before it
                        break
                    buffers[tp].append(m)
                else:
                    if got:
                        idle[tp] = 0
                    elif await consumer.position(tp) >= window[tp][1]:
                        idle[tp] += 1
            tps = [tp for tp in tps if not buffers[tp] and idle[tp] < IDLE_FETCHES]

    await refill(list(buffers))
    for tp, buf in buffers.items():
        if buf:
            m = buf.popleft()
            heapq.heappush(heap, (m.timestamp, tp.topic, tp.partition, m.offset, m))
    while heap:
        _, topic, partition, offset, m = heapq.heappop(heap)
        tp = TopicPartition(topic, partition)
        fed[tp] = offset + 1
        if since is None or m.timestamp >= since * 1000:
            yield records.from_consumer_record(m)
        if not buffers[tp]:
            await refill([tp])
        if buffers[tp]:
            nxt = buffers[tp].popleft()
            heapq.heappush(heap, (nxt.timestamp, topic, partition, nxt.offset, nxt))


async def _commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit a group's offsets without joining it (the generation's workers are not up)."""
    consumer = clients.consumer(bootstrap, purpose="replay", group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
    finally:
        await consumer.stop()


# --- verify -----------------------------------------------------------------------------
