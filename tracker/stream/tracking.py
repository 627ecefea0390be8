"""Tracking: apply each saga log record through the pure machine and store the result.

The only writer of saga state. Per record: load the saga, ``apply``, write the new state
and its deadline index row, then send what the machine decided. The decision is in the
state before the send, and a redelivered record re-sends the same unconfirmed ids.

A saga in flight is loaded from ``Hot`` (its state as last written, decoded) rather than
decoded from its row for every event; the row itself is encoded when the state cache writes it
(``StateCache``), once per commit however many events changed the saga.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from tables import rows
from tracker.core.conformance import Conformance
from tracker.core.correlation import Record
from tracker.core.definitions import Catalog, SagaDefinition
from tracker.core.errors import CorrelationError, PartitionError, StateError
from tracker.core.events import SERVICE, TIMEOUT, Event
from tracker.core.machine import Emit, Transition, apply, virtual_timeout
from tracker.core.state import SagaState
from tracker.ops.metrics import Metrics
from tracker.stream.context import Context
from tracker.stream.deadletters import DeadLetters
from tracker.stream.decoding import GENERATION_HEADER
from tracker.stream.hot import Hot
from tracker.stream.indexes import Index, Indexes, deadline_key
from tracker.stream.state_cache import StateWrites

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


class SendHooks(Protocol):
    """Called around the sends of a decision that compensates. Production installs none; the
    crash tests install one that exits the worker there (``tests/crash_worker.py``)."""

    async def before_send(self) -> None: ...

    async def after_send(self, delivered: list[Any]) -> None: ...


class Deadlines(Protocol):
    """What the track processor asks of the deadline punctuator (``sweeper``)."""

    def caught_up(self) -> bool: ...

    def resend(self, saga_id: str, token: str) -> None: ...


class AlwaysCaughtUp:
    """Deadlines of a track processor with no punctuator (the benchmark's stand-in)."""

    def caught_up(self) -> bool:
        return True

    def resend(self, saga_id: str, token: str) -> None:
        return None


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
    """The track processor: the only writer of saga state."""

    def __init__(
        self,
        catalog: Catalog,
        writes: StateWrites,
        dead_letters: DeadLetters,
        metrics: Metrics,
        indexes: Indexes,
        *,
        role: Role | None = None,
        deadlines: Deadlines | None = None,
        hooks: SendHooks | None = None,
        conformance: Conformance | None = None,
        hot_sagas: int = 0,
    ) -> None:
        """``writes``: where saga state is written (the worker's ``StateCache``); ``hot_sagas``:
        most decoded saga states kept between their events (``Hot``)."""
        self.catalog, self.writes, self.dead_letters, self.metrics = catalog, writes, dead_letters, metrics
        self.indexes, self.hooks = indexes, hooks
        self.conformance = conformance if conformance is not None else Conformance()
        self.role: Role = role or Promoted()
        # A timeout record is applied only while this worker is caught up: one sent by a
        # zombie (a paused worker that still thinks it owns the partition) or before a
        # rebalance may precede a completion still in the backlog. The deadline stays in the
        # index; ``deadlines.resend`` lets the sweeper send it again at once when still due.
        self.deadlines: Deadlines = deadlines or AlwaysCaughtUp()
        self.hot = Hot(hot_sagas)
        self.hot_hit, self.hot_miss = metrics.child(metrics.hot_reads, "hit"), metrics.child(metrics.hot_reads, "miss")
        self.context: Context | None = None

    def init(self, context: Context) -> None:
        self.context = context

    def load(self, saga_id: str, partition: int | None = None) -> SagaState | None:
        """The saga's newest state (the row cache first), from its partition's store if known."""
        raw = self.writes.get(saga_id.encode(), partition)
        return None if raw is None else rows.decode(raw)

    async def process(self, record: Record) -> Transition | None:
        """Never raises: a record that cannot be applied is dead-lettered with the reason."""
        try:
            return await self._from_log(record)
        except Exception as exc:
            await self.dead_letters.failed(record, exc, stage="tracking")
            return None

    async def _from_log(self, record: Record) -> Transition | None:
        try:
            event = Event.from_dict(orjson.loads(record.value or b"null"))
        except (orjson.JSONDecodeError, StateError) as exc:
            raise CorrelationError("bad_record", f"not a saga log record of this tracker: {str(exc)[:200]}") from None
        # A service event is at its input record's position whichever way it came, in place or
        # through this log (the way can change between two deliveries when partitions move):
        # a redelivery of that record re-sends what it decided. Any other: this record's.
        from_input = event.kind == SERVICE and event.source
        event = event.at(event.source if from_input else f"{record.partition}/{record.offset}")
        if event.kind == TIMEOUT and not self.deadlines.caught_up() and not self.applied(event):
            self.metrics.timeouts_deferred.inc()
            self.deadlines.resend(event.saga_id, event.token)
            return None
        return await self._decide(event, record, record.partition)  # a saga-log record: its saga's partition

    async def apply_here(self, event: Event, record: Record, partition: int) -> bool:
        """Apply a service event whose saga's state ``partition`` is active here, in the
        feed or agent that read it (see ``ingest``); never raises. False when that partition's
        saga state is not open here (partitions moving): the caller forwards the event."""
        if self.indexes.cached(partition) is None and await self.indexes.ready(partition) is None:
            return False
        try:
            # The input record's position, as on the log route (``_from_log``): a redelivery of the
            # record re-sends what it caused, whichever way it comes.
            await self._decide(event.at(record.source), record, partition)
        except PartitionError:
            return False  # moved away meanwhile (a shadow run awaits between steps): forward it
        except Exception as exc:
            await self.dead_letters.failed(record, exc, stage="tracking")
        return True

    async def _decide(self, event: Event, record: Record, partition: int) -> Transition | None:
        """``partition``: the saga state's (the record's own, but for an event applied in
        place from a service topic's partition)."""
        if self.role.shadow and event.kind == SERVICE:
            # A shadow run over history decides in event time: a deadline that passed before
            # this event fires first (what the changed definition would have done live).
            while (due := virtual_timeout(self.load(event.saga_id), event.time)) is not None:
                # Decided in event time too: at the deadline, as the changed definition would have.
                done = await self._transition(due.at(event.position), record, partition, now=due.time)
                if done is None or not done.changed:
                    break
        return await self._transition(event, record, partition)

    def applied(self, event: Event) -> bool:
        """Already applied: a redelivery, which must go through (it re-sends what it decided)."""
        state = self.load(event.saga_id)
        return state is not None and event.id in state.seen

    async def _transition(self, event: Event, record: Record, partition: int, now: float | None = None) -> Transition | None:
        index = self.indexes.cached(partition)  # built: no coroutine to await (nearly every event)
        if index is None:
            index = await self.indexes.ready(partition)
        if index is None:  # only while partitions move: this record is not ours to apply
            raise PartitionError(f"saga state partition {partition} is not open on this worker")
        state = self.hot.get(event.saga_id, index)
        self.metrics.tally(self.hot_hit if state is not None else self.hot_miss)
        if state is None:
            state = self.load(event.saga_id, partition)
        definition = (
            self.catalog.definition(state.saga_type, state.version)
            if state
            else self.catalog.definition(event.saga_type, event.version)
        )
        if definition is None:
            await self.dead_letters.send(record, "unknown_saga_type", f"no definition for {event.saga_type!r}")
            return None
        assert self.context is not None, "init(context) first"
        transition = apply(definition, state, event, self.context.wall_clock() if now is None else now)
        if "stale_timeout" in transition.outcomes and transition.state is not None:
            # An index row whose deadline has moved on must not be swept again and again.
            current = transition.state.deadline
            if current is None or deadline_key(current.due, event.saga_id) != deadline_key(event.time, event.saga_id):
                index.drop_deadline(deadline_key(event.time, event.saga_id))
        if transition.changed and transition.state is not None:
            await self.store(index, definition, state, transition.state, partition)
        if transition.emits:  # most records decide nothing to send: no comprehension, no hooks
            await self.send_all(transition.emits, partition)
        self.metrics.applied(definition, event.kind, transition.outcomes, state, transition.state)
        if transition.changed:  # a redelivery (duplicate) is not drift twice
            for drift in self.conformance.outcomes(definition.name, transition.outcomes):
                self.metrics.count(self.metrics.drift, definition.name, drift)
        milestones = MILESTONES.intersection(transition.outcomes) if transition.state is not None else None
        # The happy path (started, completed) at thousands a second is noise at INFO.
        level = logging.DEBUG if milestones and ROUTINE.issuperset(milestones) else logging.INFO
        if milestones and log.isEnabledFor(level):  # the message's parts are built only when logged
            s = transition.state
            assert s is not None
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
    ) -> None:
        """Write the saga: noted in its index (its rows and census counts follow at the index's
        next ``place``), kept decoded, and stored with the row cache.

        All before the first await (``put`` caches or stores the row before it sends), so a
        decision stays one step of the event loop: load, apply, write. The index is local and
        rebuilt from the saga rows, so their order does not matter across a crash."""
        change = index.changed(definition, old, new)
        self.hot.put(new.saga_id, index, new)  # before the await: the next load must find it
        # Stored with its head: a rebuild reads the index rows from it (``tables.rows``).
        await self.writes.put(partition, new.saga_id.encode(), change)

    async def send_all(self, emits: tuple[Emit, ...], partition: int) -> None:
        """Send what one decision for a saga of state ``partition`` emitted, in order, each after
        the saga's row (``Outgoing``'s gate); a decision that compensates runs the send hooks
        around its sends."""
        hooks = self.hooks if any(e.kind == "compensation" for e in emits) else None
        if hooks is not None:
            await hooks.before_send()
        sent = [await self.send(emit, partition) for emit in emits]
        if hooks is not None:
            await hooks.after_send(sent)

    async def send(self, emit: Emit, partition: int) -> Any:
        """Queue one output, to leave after its saga's row (of state ``partition``); returns its
        delivery future (None when there is nothing to send).

        Only the promoted generation acts on the world and records decisions; any other
        sends what it would have emitted to its shadow topic (decisions: nothing).
        """
        assert self.context is not None, "init(context) first"
        headers = [(k, v.encode()) for k, v in emit.headers.items()]
        headers.append((GENERATION_HEADER, str(self.role.generation).encode()))
        sink = emit.kind
        if not self.role.active:
            if emit.kind == "decision":
                return None
            sink = "shadow"
            headers.append(("saga_tracker_kind", emit.kind.encode()))
        delivery = await self.context.send(
            sink, emit.key.encode(), orjson.dumps(emit.payload), headers=headers, after_rows_of=partition
        )
        self.metrics.count(self.metrics.emitted, emit.kind if self.role.active else "shadow")
        return delivery
