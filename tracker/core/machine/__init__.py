"""The saga state machine: ``apply(definition, state, event, now) -> Transition``.

Standard library only, no clock, no I/O: the same records in the same order give the
same state and the same outputs, which is what makes redelivery, restart and replay
safe. Rules:

- an id already applied is a no-op, except that a redelivery of the very same log record
  (same ``position``) hands back the unconfirmed outputs it caused for re-sending, with
  the same ids: that covers a crash between the state write and the send;
- completions may arrive in any order; a later step's completion is recorded and
  honoured when the earlier ones arrive, and a step never goes back;
- events before the start event wait in the saga and are applied when it arrives;
  after ``limits.orphan_after`` the saga is reported as an orphan;
- after a terminal status, events are recorded and counted but change nothing;
- a failure event or a stalled step moves the saga to compensating; every completed step
  is then undone newest first. A failure at step i implies the steps before it completed
  (a service acts only after its predecessor), even if their events are still in flight.
  After a service failure the services compensate themselves and the tracker only follows; it emits a compensation only when a
  confirmation is overdue, or at once when a step stalled (nobody else noticed);
- unconfirmed compensations are re-emitted with backoff, then the saga needs manual help;
- every timeout or operator action that takes effect is also emitted as a ``decision``
  with the point (anchor: status, pending step, next due time) where it was taken. A
  replaying generation receives those decisions as records and applies each one when its
  saga reaches the same anchor (parking it until then), instead of deciding again.

Deadlines are derived from event times, never from ``now``; ``now`` is recorded, and is when a
timeout or action is decided: a compensation's confirmation window counts from it (a replayed
decision carries the time it was first taken, so replay reproduces the window). A compensation
a service event causes (a late completion) counts its window from that event's time.
"""

from __future__ import annotations

from tracker.core.definitions import SagaDefinition
from tracker.core.events import CONTROL, DECISION, MARK_PARTIAL, SERVICE, TIMEOUT, Event
from tracker.core.machine.deadlines import next_due, virtual_timeout
from tracker.core.machine.decisions import anchor
from tracker.core.machine.forward import Forward
from tracker.core.machine.run import TRACE_HEADERS, Emit, Transition, iso, visible_status
from tracker.core.state import SagaState

__all__ = [
    "TRACE_HEADERS",
    "Emit",
    "Transition",
    "anchor",
    "apply",
    "iso",
    "new_state",
    "next_due",
    "virtual_timeout",
    "visible_status",
]


def new_state(definition: SagaDefinition, event: Event) -> SagaState:
    return SagaState(saga_id=event.saga_id, saga_type=definition.name, version=definition.version)


def apply(definition: SagaDefinition, state: SagaState | None, event: Event, now: float) -> Transition:
    """Apply one record to one saga. ``state`` is not modified; the new state is returned."""
    if state is None:
        if event.kind not in (SERVICE, DECISION):
            return Transition(None, outcomes=("unknown_saga",), changed=False)
        s = new_state(definition, event)
    else:
        if event.id in state.seen:
            resend = tuple(
                Emit(kind=o["kind"], id=o["id"], key=state.saga_id, payload=o["payload"], headers=o["headers"])
                for o in state.outbox
                if o["cause"] == event.id and o.get("position", "") == event.position and not o["confirmed"]
            )
            return Transition(state, resend, state.deadline, ("duplicate",), changed=False)
        s = state.copy()
    run = Forward(definition, s, now, event.position)
    run.remember(event.id)
    if s.first_seen_at is None and event.kind != DECISION:
        s.first_seen_at = event.time
    if event.kind == SERVICE:
        # What a service event causes is decided at the event's own time, whenever and by
        # whichever generation it is applied: nothing records when a worker applied it, so a
        # replay could not reproduce a window counted from that.
        run.decided_at = event.time
        run.service(event)
    elif event.kind == TIMEOUT:
        before = anchor(definition, s)  # where the saga was when the decision was taken
        run.timeout(event)
        if "stale_timeout" not in run.outcomes:
            run.decide(event, before)
    elif event.kind == CONTROL:
        before = anchor(definition, s)
        run.control(event)
        if event.action.get("action") != MARK_PARTIAL and "rejected" not in run.outcomes:
            run.decide(event, before)
    elif event.kind == DECISION:
        run.recorded(event)
    run.drain()
    s.updated_at = now
    s.deadline = run.next_deadline()
    return Transition(s, tuple(run.emits), s.deadline, tuple(run.outcomes))
