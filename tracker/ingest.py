"""Ingest: read the services' topics, correlate each record, route it to its saga's writer.

Every event must reach the one writer of its saga: the worker that owns the saga's
partition (murmur2 of the saga id, as the producer partitions the saga log). A record
that already sits in that partition of a topic co-partitioned with the saga state (a
service that keys its events by the saga id, with the tracker's partition count: faust
assigns partition ``p`` of all such topics to one worker) is applied on the spot, in this
agent: one hop instead of two. Any other is re-keyed by saga id onto the tracker's own
saga log and applied by the track agent. Also forwards the decisions other generations
took (see ``generations``), so a generation that is not promoted follows them instead of
deciding again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
import orjson
from aiokafka.partitioner import murmur2

from tracker.correlation import Ignored, Record, correlate
from tracker.deadletters import DeadLetters
from tracker.definitions import Catalog
from tracker.errors import CorrelationError, StateError
from tracker.events import Event, decision_event
from tracker.metrics import Metrics

GENERATION_HEADER = "saga_tracker_generation"  # on every output: which generation sent it

log = logging.getLogger(__name__)

# Applies an event whose record sits in its saga's partition here; False: not open here.
ApplyHere = Callable[[Event, Record], Awaitable[bool]]


def partition_of(saga_id: str, partitions: int) -> int:
    """The saga's partition: what the producer's default partitioner picks for the key
    (murmur2, as in the Java client), so the saga log and the state agree with it."""
    return (murmur2(saga_id.encode()) & 0x7FFFFFFF) % partitions


def record_of(event: faust.EventT) -> Record:
    m = event.message
    ts = m.timestamp
    raw: Any = m.headers or []
    pairs = raw.items() if isinstance(raw, Mapping) else raw
    headers = [(str(k), v if isinstance(v, bytes) else str(v).encode()) for k, v in pairs]
    return Record(
        topic=m.topic,
        partition=m.partition,
        offset=m.offset,
        key=m.key,
        value=m.value,
        headers=headers,
        timestamp=ts if ts and ts > 0 else None,
    )


class Ingest:
    def __init__(
        self,
        catalog: Catalog,
        saga_log: faust.TopicT,
        dead_letters: DeadLetters,
        metrics: Metrics,
        *,
        max_event_bytes: int,
        decisions: str = "",
        generation: int = 1,
        partitions: int = 1,
        copartitioned: Callable[[str, int], bool] = lambda topic, partition: False,
        apply_here: ApplyHere | None = None,
    ) -> None:
        """``copartitioned(topic, p)``: the topic has the saga state's partition count (so
        faust assigns its partition ``p`` with the state's partition ``p``) and the state's
        partition ``p`` is active here."""
        self.catalog, self.saga_log, self.dead_letters = catalog, saga_log, dead_letters
        self.metrics, self.max_event_bytes = metrics, max_event_bytes
        self.decisions, self.generation = decisions, generation
        self.partitions, self.copartitioned, self.apply_here = partitions, copartitioned, apply_here

    async def handle(self, record: Record) -> None:
        """Never raises: what cannot be used is dead-lettered with its reason."""
        self.metrics.child(self.metrics.input_records, record.topic).inc()
        try:
            event = self.event_of(record)
            if event is None:
                return
        except Ignored as exc:
            self.metrics.ignored.labels(exc.saga_type).inc()
            return
        except Exception as exc:  # CorrelationError, or a bug: either way the record is kept
            reason = getattr(exc, "reason", "processing_error")
            if reason == "processing_error":
                log.exception("ingest failed on %s", record.source)
                self.metrics.processing_errors.labels("ingest").inc()
            await self.dead_letters.send(record, reason, getattr(exc, "detail", repr(exc)))
            return
        if (
            self.apply_here is not None
            and partition_of(event.saga_id, self.partitions) == record.partition
            and self.copartitioned(record.topic, record.partition)
            and await self.apply_here(event, record)
        ):
            self.metrics.child(self.metrics.routed, "here").inc()
            return
        await self.saga_log.send(key=event.saga_id.encode(), value=orjson.dumps(event.to_dict()))
        self.metrics.child(self.metrics.routed, "saga_log").inc()

    def event_of(self, record: Record) -> Event | None:
        return to_event(
            self.catalog, record, decisions=self.decisions, generation=self.generation, max_bytes=self.max_event_bytes
        )


def to_event(catalog: Catalog, record: Record, *, decisions: str, generation: int, max_bytes: int) -> Event | None:
    """The saga-log record for an input record; None for a generation's own decisions.

    Raises ``Ignored`` (an event type the definitions ignore) or ``CorrelationError``.
    """
    if record.topic != decisions:
        return correlate(catalog, record, max_bytes=max_bytes)
    if decided_by(record) == generation:
        return None  # this generation took it: already in its state
    try:
        return decision_event(orjson.loads(record.value or b"null"))
    except (StateError, orjson.JSONDecodeError) as exc:
        raise CorrelationError("bad_decision", str(exc)) from None


def decided_by(record: Record) -> int | None:
    for k, v in record.headers:
        if k == GENERATION_HEADER:
            try:
                return int(v)
            except ValueError:
                return None
    return None
