"""Ingest: correlate each record of the services' topics (the feed reads them, ``feed``) and
route it to its saga's writer.

Every event must reach the one writer of its saga: the worker that owns the saga's
partition of the state (murmur2 of the saga id, as the producer partitions the saga log).
When that worker is this one (the partition is active here), the event is applied on the
spot, as the feed hands it over: one hop instead of two. That is every event of a topic keyed by saga id
with the tracker's partition count (faust assigns partition ``p`` of all such topics with
the state's ``p``), and, for a topic keyed by anything else, the share of events whose saga
lives here (all of them with one worker). Any other is re-keyed by saga id onto the tracker's
own saga log and applied by the track agent of the worker that owns it. Also forwards the
decisions other generations took (see ``generations``), so a generation that is not promoted
follows them instead of deciding again.

Applying an event read from another partition than its saga's keeps every guarantee of the
saga log route: one process writes a saga, and a decision is load, apply and write with no
await between (the track agent interleaves with the feed only at awaits); its state row is
flushed before the input offset is committed (``checkpoint``); on a rebalance faust revokes
every partition at once (eager protocol), the feed finishes and commits while the stores are
open, and a checkpoint that dropped rows of a closed store commits none of the feed's offsets,
so their input is read again; and the feed reads nothing while the state recovers. Its events may then reach the machine in
another order than through the log, which it handles as any reordering (event times decide).
"""

from __future__ import annotations

import logging

import orjson

from tracker.core.conformance import Conformance
from tracker.core.correlation import Ignored, Record
from tracker.core.definitions import Catalog
from tracker.core.errors import CorrelationError
from tracker.core.events import Event
from tracker.kafka.partitioner import partition_of
from tracker.ops.metrics import Metrics
from tracker.stream.backlog import Backlog
from tracker.stream.context import Context
from tracker.stream.deadletters import DeadLetters
from tracker.stream.decoding import to_event
from tracker.stream.tracking import Tracking

log = logging.getLogger(__name__)


class Ingest:
    """The ingest processor: decode, correlate, then apply in place or forward to the saga log."""

    def __init__(
        self,
        catalog: Catalog,
        track: Tracking,
        dead_letters: DeadLetters,
        metrics: Metrics,
        backlog: Backlog,
        *,
        max_event_bytes: int,
        decisions: str = "",
        generation: int = 1,
        partitions: int = 1,
        conformance: Conformance | None = None,
    ) -> None:
        """``track``: the processor that applies an event whose saga's partition is active here."""
        self.catalog, self.track, self.dead_letters, self.backlog = catalog, track, dead_letters, backlog
        self.metrics, self.max_event_bytes = metrics, max_event_bytes
        self.decisions, self.generation, self.partitions = decisions, generation, partitions
        self.conformance = conformance if conformance is not None else Conformance()
        self.routed_here = metrics.child(metrics.routed, "here")  # counted per record
        self.context: Context | None = None

    def init(self, context: Context) -> None:
        self.context = context

    async def process(self, record: Record) -> None:
        """Never raises: what cannot be used is dead-lettered with its reason."""
        assert self.context is not None, "init(context) first"
        self.metrics.count(self.metrics.input_records, record.topic)
        try:
            event = self.event_of(record)
            if event is None:
                return
        except Ignored as exc:
            self.metrics.ignored.labels(exc.saga_type).inc()
            return
        except Exception as exc:  # CorrelationError, or a bug: either way the record is kept
            if isinstance(exc, CorrelationError) and exc.reason == "unknown_event_type":
                self.undeclared(record.topic, exc.event_type)
            await self.dead_letters.failed(record, exc, stage="ingest")
            return
        partition = partition_of(event.saga_id, self.partitions)
        # In place only once a replayed backlog of the partition is applied: behind it otherwise.
        here = self.context.owns(partition) and not self.backlog.pending(partition)
        if here and await self.track.apply_here(event, record, partition):
            self.metrics.tally(self.routed_here)
            return
        await self.context.send("saga_log", event.saga_id.encode(), orjson.dumps(event.to_dict()))
        self.metrics.count(self.metrics.routed, "saga_log")

    def undeclared(self, topic: str, event_type: str) -> None:
        """Drift: an event type no definition names, on the topics of these saga types."""
        saga_types = sorted({d.name for d in self.catalog.readers.get(topic, ())})
        self.conformance.undeclared_type(saga_types, event_type)
        for saga_type in saga_types:
            self.metrics.child(self.metrics.drift, saga_type, "undeclared_event_type").inc()

    def event_of(self, record: Record) -> Event | None:
        return to_event(
            self.catalog, record, decisions=self.decisions, generation=self.generation, max_bytes=self.max_event_bytes
        )
