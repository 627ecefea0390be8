"""Tracking: apply each saga log record through the pure machine and store the result.

The only writer of saga state. Per record: load the saga, ``apply``, write the new state
and its deadline index row, then send what the machine decided. The decision is in the
state before the send, and a redelivered record re-sends the same unconfirmed ids.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import faust
import orjson

from tables import Tables
from tracker.core.census import Census
from tracker.core.correlation import Record
from tracker.core.definitions import Catalog, SagaDefinition
from tracker.core.errors import PartitionError
from tracker.core.events import SERVICE, TIMEOUT, Event
from tracker.core.machine import Emit, Transition, apply, virtual_timeout
from tracker.core.state import SagaState
from tracker.core.summaries import placement, summary
from tracker.ops.metrics import Metrics
from tracker.stream.deadletters import DeadLetters
from tracker.stream.indexes import Index, Indexes, deadline_key, keys_of, rows_of
from tracker.stream.ingest import GENERATION_HEADER
from tracker.stream.state_cache import Changelog, StateWrites

log = logging.getLogger(__name__)
ROUTINE = frozenset({"started", "completed"})
MILESTONES = frozenset(
    {
        "started",
        "completed",
        "compensating",
        "compensated",
        "failed_needs_manual",
        "compensation_reemitted",
        "late_completion",
        "orphaned",
        "resolved",
    }
)


class Crash:
    """Fault injection for the crash tests: exit abruptly at a point, once (a marker file remembers)."""

    def __init__(self, point: str, marker: str) -> None:
        self.point, self.marker = point, marker

    async def maybe(self, point: str, delivered: list[Any] | None = None) -> None:
        if self.point != point or not self.marker or os.path.exists(self.marker):
            return
        if delivered:
            # "after_send": the emitted records are on the broker (faust's producer.flush()
            # does not return when awaited from inside an agent).
            await asyncio.wait_for(asyncio.gather(*[d for d in delivered if d is not None]), timeout=30)
        with open(self.marker, "w") as f:
            f.write(point)
        log.error("injected crash at %s", point)
        os._exit(137)


class Role(Protocol):
    generation: int
    shadow: bool

    @property
    def active(self) -> bool: ...


@dataclass
class Promoted:
    """The role of a lone generation 1 (agent tests, and before any replay)."""

    generation: int = 1
    shadow: bool = False
    active: bool = True


class Tracking:
    def __init__(
        self,
        catalog: Catalog,
        tables: Tables,
        outputs: dict[str, faust.TopicT],
        dead_letters: DeadLetters,
        metrics: Metrics,
        census: Census,
        indexes: Indexes,
        clock: Callable[[], float] = time.time,
        crash: Crash | None = None,
        role: Role | None = None,
        caught_up: Callable[[], bool] = lambda: True,
        deferred: Callable[[str, str], None] = lambda saga_id, token: None,
        writes: StateWrites | None = None,
    ) -> None:
        """``outputs``: topic by emit kind (compensation, outcome, decision) and ``shadow``;
        ``writes``: where saga state is written (default: the sagas table's ``Changelog``)."""
        self.catalog, self.tables, self.outputs = catalog, tables, outputs
        self.writes: StateWrites = writes if writes is not None else Changelog(tables.sagas)
        self.dead_letters, self.metrics, self.clock = dead_letters, metrics, clock
        self.crash = crash or Crash("", "")
        self.census, self.indexes = census, indexes
        self.role: Role = role or Promoted()
        # A timeout record is applied only while this worker is caught up: one sent by a
        # zombie (a paused worker that still thinks it owns the partition) or before a
        # rebalance may precede a completion still in the backlog. The deadline stays in the
        # index; ``deferred`` lets the sweeper send it again at once when it is still due.
        self.caught_up, self.deferred = caught_up, deferred

    def load(self, saga_id: str, partition: int | None = None) -> SagaState | None:
        """The saga's newest state (the row cache first), from its partition's store if known."""
        raw = self.writes.get(saga_id.encode(), partition)
        return None if raw is None else SagaState.from_dict(orjson.loads(raw))

    async def handle(self, record: Record) -> Transition | None:
        """Never raises: a record that cannot be applied is dead-lettered with the reason."""
        try:
            return await self._apply(record)
        except Exception as exc:
            await self._failed(record, exc)
            return None

    async def _failed(self, record: Record, exc: Exception) -> None:
        log.exception("tracking failed on %s", record.source)
        self.metrics.processing_errors.labels("tracking").inc()
        await self.dead_letters.send(record, getattr(exc, "reason", "processing_error"), repr(exc))

    async def _apply(self, record: Record) -> Transition | None:
        event = Event.from_dict(orjson.loads(record.value or b"null"))
        # A service event is at its input record's position whichever way it came, in place or
        # through this log (the way can change between two deliveries when partitions move):
        # a redelivery of that record re-sends what it decided. Any other: this record's.
        from_input = event.kind == SERVICE and event.source
        event = event.at(event.source if from_input else f"{record.partition}/{record.offset}")
        if event.kind == TIMEOUT and not self.caught_up() and not self.applied(event):
            self.metrics.timeouts_deferred.inc()
            self.deferred(event.saga_id, event.token)
            return None
        return await self._decide(event, record, record.partition)  # a saga-log record: its saga's partition

    async def apply_here(self, event: Event, record: Record, partition: int) -> bool:
        """Apply a service event whose saga's state ``partition`` is active here, in the
        ingest agent that read it (see ``ingest``); never raises. False when that partition's
        saga state is not open here (partitions moving): the caller forwards the event."""
        if self.indexes.cached(partition) is None and await self.indexes.ready(partition) is None:
            return False
        try:
            # The input record's position, as on the log route (``_apply``): a redelivery of the
            # record re-sends what it caused, whichever way it comes.
            await self._decide(event.at(record.source), record, partition)
        except PartitionError:
            return False  # moved away meanwhile (a shadow run awaits between steps): forward it
        except Exception as exc:
            await self._failed(record, exc)
        return True

    async def _decide(self, event: Event, record: Record, partition: int) -> Transition | None:
        """``partition``: the saga state's (the record's own, but for an event applied in
        place from a service topic's partition)."""
        if self.role.shadow and event.kind == SERVICE:
            # A shadow run over history decides in event time: a deadline that passed before
            # this event fires first (what the changed definition would have done live).
            while (due := virtual_timeout(self.load(event.saga_id), event.time)) is not None:
                done = await self._apply_event(due.at(event.position), record, partition)
                if done is None or not done.changed:
                    break
        return await self._apply_event(event, record, partition)

    def applied(self, event: Event) -> bool:
        """Already applied: a redelivery, which must go through (it re-sends what it decided)."""
        state = self.load(event.saga_id)
        return state is not None and event.id in state.seen

    async def _apply_event(self, event: Event, record: Record, partition: int) -> Transition | None:
        index = await self.indexes.ready(partition)
        if index is None:  # only while partitions move: this record is not ours to apply
            raise PartitionError(f"saga state partition {partition} is not open on this worker")
        state = self.load(event.saga_id, partition)
        definition = (
            self.catalog.definition(state.saga_type, state.version)
            if state
            else self.catalog.definition(event.saga_type, event.version)
        )
        if definition is None:
            await self.dead_letters.send(record, "unknown_saga_type", f"no definition for {event.saga_type!r}")
            return None
        transition = apply(definition, state, event, self.clock())
        if "stale_timeout" in transition.outcomes and transition.state is not None:
            # An index row whose deadline has moved on must not be swept again and again.
            current = transition.state.deadline
            if current is None or deadline_key(current.due, event.saga_id) != deadline_key(event.time, event.saga_id):
                index.drop_deadline(deadline_key(event.time, event.saga_id))
        if transition.changed and transition.state is not None:
            # A decision that sends something is written through before it is sent (see changelog).
            old_row, new_row = await self.store(
                index, definition, state, transition.state, partition, through=bool(transition.emits)
            )
            self.census.change(partition, old_row, new_row)  # deltas: in any order
        compensating = any(e.kind == "compensation" for e in transition.emits)
        if compensating:
            await self.crash.maybe("before_send")
        sent = [await self.send(emit) for emit in transition.emits]
        if compensating:
            await self.crash.maybe("after_send", sent)
        self.metrics.applied(definition, event.kind, transition.outcomes, state, transition.state)
        if transition.state is not None and MILESTONES.intersection(transition.outcomes):
            s = transition.state
            # The happy path (started, completed) at thousands a second is noise at INFO.
            level = logging.DEBUG if ROUTINE.issuperset(MILESTONES.intersection(transition.outcomes)) else logging.INFO
            log.log(
                level,
                "saga %s (%s) %s%s%s",
                s.saga_id,
                s.saga_type,
                s.status,
                f": {s.reason}" if s.reason and s.status != "running" else "",
                "".join(f"; emitted {e.id}" for e in transition.emits if e.kind == "compensation"),
            )
        return transition

    async def store(
        self,
        index: Index,
        definition: SagaDefinition,
        old: SagaState | None,
        new: SagaState,
        partition: int,
        *,
        through: bool = False,
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Write the index rows derived from the saga, then the saga; return where it stood
        before (its ``placement``) and its summary row after, for the census.

        Both are written before the first await (``put`` caches or stores the row before it
        sends), so a decision stays one step of the event loop: load, apply, write. The index is local
        and rebuilt from the saga rows, so their order does not matter across a crash."""
        was = placement(definition, old) if old is not None else None
        row = summary(definition, new)
        index.change(keys_of(old, was) if old is not None and was is not None else (), rows_of(new, row))
        # orjson writes the dataclasses as to_dict() would
        await self.writes.put(partition, new.saga_id.encode(), orjson.dumps(new), through=through)
        return was, row

    async def send(self, emit: Emit) -> Any:
        """Queue one output; returns its delivery future (None when there is nothing to send).

        Only the promoted generation acts on the world and records decisions; any other
        sends what it would have emitted to its shadow topic (decisions: nothing).
        """
        headers = [(k, v.encode()) for k, v in emit.headers.items()]
        headers.append((GENERATION_HEADER, str(self.role.generation).encode()))
        topic = self.outputs[emit.kind]
        if not self.role.active:
            if emit.kind == "decision":
                return None
            topic = self.outputs["shadow"]
            headers.append(("saga_tracker_kind", emit.kind.encode()))
        delivery = await topic.send(key=emit.key.encode(), value=orjson.dumps(emit.payload), headers=headers)
        self.metrics.child(self.metrics.emitted, emit.kind if self.role.active else "shadow").inc()
        return delivery
