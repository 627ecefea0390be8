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

Deadlines are derived from event times, never from ``now``; ``now`` is only recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from tracker.core import state as st
from tracker.core.definitions import SagaDefinition
from tracker.core.events import CONTROL, DECISION, MARK_PARTIAL, SERVICE, TIMEOUT, Event, timeout_event
from tracker.core.state import Deadline, SagaState, StepState

TRACE_HEADERS = ("traceparent", "tracestate")
OUTBOX_KEEP = 200  # confirmed outputs kept for the timeline; unconfirmed ones are always kept
PARKED_KEEP = 50  # recorded decisions waiting for their anchor, per saga


@dataclass(frozen=True)
class Emit:
    """An output the shell must send: kind ``compensation``, ``outcome`` or ``decision``, keyed by saga id."""

    kind: str
    id: str
    key: str
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Transition:
    state: SagaState | None
    emits: tuple[Emit, ...] = ()
    deadline: Deadline | None = None  # the saga's next deadline; None: nothing pending
    outcomes: tuple[str, ...] = ()  # what happened, for metrics: started, duplicate, late, ...
    changed: bool = True  # False: the stored state need not be written


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def visible_status(definition: SagaDefinition, s: SagaState) -> str:
    """The status a user sees: ``PENDING_PAYMENT`` while running, else the saga status."""
    if s.status == st.RUNNING and s.current is not None:
        return definition.steps[s.current].pending_status
    return s.status.upper()


class _Run:
    """One application of one record; collects outputs and outcomes."""

    def __init__(self, d: SagaDefinition, s: SagaState, now: float, position: str = "") -> None:
        self.d, self.s, self.now, self.position = d, s, now, position
        self.emits: list[Emit] = []
        self.outcomes: list[str] = []

    # --- bookkeeping ---------------------------------------------------------------------

    def record(self, e: Event, outcome: str, step: int | None = None, detail: str = "") -> None:
        entry: dict[str, Any] = {"t": e.time, "at": self.now, "id": e.id, "type": e.type, "kind": e.kind, "outcome": outcome}
        if step is not None:
            entry["step"] = self.d.steps[step].name
        if detail:
            entry["detail"] = detail
        h = self.s.history
        h.append(entry)
        if len(h) > self.d.limits.history:
            del h[0]
            self.s.history_dropped += 1
        self.outcomes.append(outcome)

    def count(self, name: str) -> None:
        self.s.counts[name] = self.s.counts.get(name, 0) + 1

    def remember(self, event_id: str) -> None:
        seen = self.s.seen
        seen.append(event_id)
        if len(seen) > self.d.limits.seen_ids:
            del seen[0]

    def emit(self, kind: str, emit_id: str, payload: dict[str, Any], cause: str, step: int | None = None) -> None:
        """Decide an output: it is recorded in the state (outbox) together with its cause."""
        s = self.s
        headers = {k: v for k, v in s.trace.items() if k in TRACE_HEADERS}
        headers.update({"ce_id": emit_id, "ce_type": str(payload["type"]), "saga_id": s.saga_id})
        out = Emit(kind=kind, id=emit_id, key=s.saga_id, payload=payload, headers=headers)
        self.emits.append(out)
        s.outbox.append(
            {
                "id": emit_id,
                "kind": kind,
                "cause": cause,
                "position": self.position,
                "confirmed": False,
                "step": None if step is None else self.d.steps[step].name,
                "payload": payload,
                "headers": headers,
            }
        )
        if len(s.outbox) > OUTBOX_KEEP:
            for i, entry in enumerate(s.outbox):
                if entry["confirmed"] or entry["kind"] != "compensation":
                    del s.outbox[i]
                    break

    def base_payload(self, event_type: str, emit_id: str, at: float, cause: str) -> dict[str, Any]:
        s = self.s
        return {
            "id": emit_id,
            "type": event_type,
            "time": iso(at),
            "saga_id": s.saga_id,
            "saga_type": s.saga_type,
            "saga_version": s.version,
            "correlation_id": s.trace.get("correlation_id", s.saga_id),
            "causation_id": cause,
            "data": dict(s.keys),
        }

    def outcome(self, event_type: str, at: float, cause: str, **extra: Any) -> None:
        emit_id = f"{self.s.saga_id}:saga:{event_type}"
        payload = self.base_payload(event_type, emit_id, at, cause)
        payload.update(status=self.s.status, reason=self.s.reason, **extra)
        self.emit("outcome", emit_id, payload, cause)

    # --- the saga's progress -------------------------------------------------------------

    def activate_next(self, at: float, e: Event) -> None:
        """Make the first step not yet done pending, or complete the saga."""
        s, d = self.s, self.d
        nxt = next((i for i, step in enumerate(s.steps) if step.state != st.DONE), None)
        if nxt is None:
            s.status, s.current, s.ended_at = st.COMPLETED, None, at
            self.outcome("SagaCompleted", at, e.id)
            self.outcomes.append("saga_completed")  # "completed" alone is a step's outcome
            return
        if nxt == s.current:
            return
        s.current = nxt
        step = s.steps[nxt]
        # It became pending with the latest of the completions before it (reordering).
        started = max([at] + [x.completed_at for x in s.steps[:nxt] if x.completed_at is not None])
        step.state, step.started_at = st.ACTIVE, started
        timeout = d.steps[nxt].timeout
        step.due = None if timeout is None else started + timeout
        # A recorded decision taken at this very point goes first: live, it was taken before
        # any event that may still be waiting here (early completions) was applied.
        self.drain()

    def start(self, e: Event) -> None:
        s, d = self.s, self.d
        s.status, s.started_at = st.RUNNING, e.time
        s.steps = [StepState() for _ in d.steps]
        if d.ttl is not None:
            s.ttl_due = e.time + d.ttl
        role = d.role(e.type)
        if role is not None and role[0] == "complete":  # the start event completes step 0
            self.mark_done(0, e)
        self.record(e, "started", 0 if role and role[0] == "complete" else None)
        self.activate_next(e.time, e)
        early, s.early = s.early, []
        # Apply what waited, in event-time order (stable for equal times: arrival order).
        for raw in sorted(early, key=lambda r: r["time"]):
            self.service(Event.from_dict(raw), replayed=True)

    def mark_done(self, i: int, e: Event) -> None:
        step = self.s.steps[i]
        step.state, step.completed_at, step.completed_by = st.DONE, e.time, e.id
        step.due = None

    def begin_compensation(self, reason: str, at: float, cause: str, *, tracker_emits: bool) -> None:
        """Undo every completed step, newest first.

        ``tracker_emits``: the tracker emits the compensations now (a stall nobody else saw);
        otherwise the services were told by the failure event and the tracker only waits.
        """
        s, _d = self.s, self.d
        s.status, s.reason, s.current = st.COMPENSATING, reason, None
        s.compensated_by = "tracker" if tracker_emits else "services"
        for i in reversed(range(len(s.steps))):
            step = s.steps[i]
            if step.state == st.ACTIVE:
                step.due = None
            if step.state != st.DONE:
                continue
            self.compensate_step(i, at, cause, tracker_emits=tracker_emits)
        self.outcomes.append("compensating")
        self.maybe_finish_compensation(at, cause)

    def compensate_step(self, i: int, at: float, cause: str, *, tracker_emits: bool) -> None:
        step, spec = self.s.steps[i], self.d.steps[i]
        step.comp_started_at = at
        if spec.compensation is None:
            step.state = st.NO_COMPENSATION
            return
        if step.comp_confirmed_at is not None:  # the undo was confirmed before we asked
            step.state = st.STEP_COMPENSATED
            return
        step.state = st.STEP_COMPENSATING
        if tracker_emits:
            self.emit_compensation(i, at, cause)
        else:
            step.comp_due = at + self.d.compensation_policy.confirm_timeout

    def emit_compensation(self, i: int, at: float, cause: str) -> None:
        s, step, spec = self.s, self.s.steps[i], self.d.steps[i]
        assert spec.compensation is not None
        step.comp_attempts += 1
        step.comp_by_tracker = True
        attempt = step.comp_attempts
        emit_id = f"{s.saga_id}:{spec.name}:compensate:{attempt}"
        payload = self.base_payload(spec.compensation.emit, emit_id, at, cause)
        payload.update(step=spec.name, attempt=attempt, reason=s.reason, semantic=spec.compensation.semantic)
        self.emit("compensation", emit_id, payload, cause, i)
        step.comp_due = at + self.d.compensation_policy.delay(attempt)
        self.outcomes.append("compensation_emitted" if attempt == 1 else "compensation_reemitted")

    def maybe_finish_compensation(self, at: float, cause: str) -> None:
        s = self.s
        if s.status != st.COMPENSATING:
            return
        states = [x.state for x in s.steps]
        if st.STEP_COMPENSATING in states:
            return
        if st.COMPENSATION_FAILED in states or st.NO_COMPENSATION in states:
            manual = [
                self.d.steps[i].name for i, x in enumerate(s.steps) if x.state in (st.COMPENSATION_FAILED, st.NO_COMPENSATION)
            ]
            s.status, s.ended_at = st.FAILED_NEEDS_MANUAL, at
            s.reason = f"{s.reason}; not undone: {', '.join(manual)}"
            self.outcome("SagaFailed", at, cause, steps_not_undone=manual)
            self.outcomes.append("failed_needs_manual")
        else:
            s.status, s.ended_at = st.COMPENSATED, at
            self.outcome("SagaCompensated", at, cause)
            self.outcomes.append("compensated")

    # --- records ---------------------------------------------------------------------------

    def service(self, e: Event, *, replayed: bool = False) -> None:
        s, d = self.s, self.d
        for k, v in e.keys.items():
            s.keys.setdefault(k, v)
        for k, v in e.trace.items():
            s.trace.setdefault(k, v)
        role = d.role(e.type)
        if role is None:
            self.record(e, "ignored", detail="event type has no role in this saga")
            return
        what, i = role
        if s.status == st.AWAITING_START and e.type != d.start:
            if len(s.early) >= d.limits.early_events:
                self.count("early_overflow")
                self.record(e, "early_overflow", detail=f"more than {d.limits.early_events} events before the start")
                return
            s.early.append(e.to_dict())
            self.count("early")
            self.record(e, "early", i if i >= 0 else None, detail="waiting for the start event")
            return
        if s.status == st.AWAITING_START:
            if s.orphaned:
                self.outcomes.append("orphan_adopted")
            self.start(e)
            return
        if s.terminal:
            self.count("late")
            self.record(e, "late", i if i >= 0 else None, detail=f"saga already {s.status}")
            if what == "complete" and s.steps and s.steps[i].completed_at is None:
                # Fenced, but the timeline keeps when an implied step really completed.
                s.steps[i].completed_at, s.steps[i].completed_by = e.time, e.id
            return
        if what == "start":
            self.record(e, "ignored", detail="saga already started")
            return
        if replayed:
            self.count("early_applied")
        if what == "complete":
            self.complete(i, e)
        elif what == "fail":
            self.fail(i, e)
        elif what == "confirm":
            self.confirm(i, e)

    def complete(self, i: int, e: Event) -> None:
        s, step = self.s, self.s.steps[i]
        if step.completed_at is not None:
            self.record(e, "redundant", i, detail="step already completed")
            return
        if s.status == st.COMPENSATING:
            prior = step.state
            step.completed_at, step.completed_by = e.time, e.id
            if prior in (st.WAITING, st.ACTIVE, st.TIMED_OUT, st.FAILED):
                # The stalled or failed step did happen after all: it must be undone too.
                step.state, step.due = st.DONE, None
                self.record(e, "late_completion", i, detail=f"step was {prior}; compensating it")
                self.compensate_step(i, e.time, e.id, tracker_emits=s.compensated_by == "tracker")
            else:  # already being undone, implied by a later step's failure
                self.record(e, "late_completion", i, detail=f"step is already {prior}")
            return
        reordered = s.current is not None and i > s.current
        self.mark_done(i, e)
        if reordered:
            step.out_of_order = True
            self.count("reordered")
        self.record(e, "reordered" if reordered else "completed", i)
        if i == s.current:
            s.current = None
            self.activate_next(e.time, e)

    def fail(self, i: int, e: Event) -> None:
        s, step = self.s, self.s.steps[i]
        if step.state != st.DONE:
            step.state, step.failed_at, step.due = st.FAILED, e.time, None
        else:
            step.failed_at = e.time  # contradicts its completion: compensate it like the others
        if s.status == st.COMPENSATING:
            self.record(e, "failed", i, detail="already compensating")
            return
        self.record(e, "failed", i)
        # A service acts only after the step before it completed: a failure at step i means
        # steps before it completed, even if their events are still in flight.
        for j in range(i):
            if s.steps[j].state in (st.WAITING, st.ACTIVE):
                s.steps[j].state, s.steps[j].due = st.DONE, None
                self.count("implied_completions")
        self.begin_compensation(f"step {self.d.steps[i].name} failed: {e.type}", e.time, e.id, tracker_emits=False)

    def confirm(self, i: int, e: Event) -> None:
        s, step = self.s, self.s.steps[i]
        if step.comp_confirmed_at is not None:
            self.record(e, "redundant", i, detail="compensation already confirmed")
            return
        step.comp_confirmed_at = e.time
        step.comp_due = None
        for entry in s.outbox:
            if entry["step"] == self.d.steps[i].name and entry["kind"] == "compensation":
                entry["confirmed"] = True
        if s.status != st.COMPENSATING or step.state not in (st.STEP_COMPENSATING, st.COMPENSATION_FAILED):
            self.count("reordered")
            self.record(e, "confirmed_early", i, detail="undo confirmed before compensation was needed")
            return
        step.state = st.STEP_COMPENSATED
        self.record(e, "compensation_confirmed", i)
        self.outcomes.append("compensation_confirmed")
        self.maybe_finish_compensation(e.time, e.id)

    def timeout(self, e: Event) -> None:
        s = self.s
        if s.deadline is None or e.token != s.deadline.token:
            self.count("stale_timeouts")
            self.outcomes.append("stale_timeout")
            return
        self.deadline_reached(s.deadline.due, e)

    def deadline_reached(self, due: float, e: Event, *, forced: bool = False) -> None:
        """Act on everything due at ``due`` (the deadline's own time: deterministic)."""
        s, d = self.s, self.d
        if s.status == st.AWAITING_START:
            if not s.orphaned and s.first_seen_at is not None and s.first_seen_at + d.limits.orphan_after <= due:
                s.orphaned = True
                self.record(e, "orphaned", detail=f"no {d.start} within {d.limits.orphan_after:g}s")
                self.outcome("SagaOrphaned", due, e.id)
            return
        if s.status == st.RUNNING:
            i = s.current
            step = s.steps[i] if i is not None else None
            if step is not None and step.due is not None and (step.due <= due or forced):
                name = d.steps[i].name  # type: ignore[index]
                step.state = st.TIMED_OUT
                self.record(e, "timeout", i, detail=f"step {name} due {iso(step.due)}")
                self.begin_compensation(f"timeout of step {name} at {iso(step.due)}", due, e.id, tracker_emits=True)
            elif s.ttl_due is not None and s.ttl_due <= due:
                self.record(e, "timeout", i, detail=f"saga time-to-live ended {iso(s.ttl_due)}")
                if step is not None:
                    step.state = st.TIMED_OUT
                self.begin_compensation(f"saga time-to-live ended at {iso(s.ttl_due)}", due, e.id, tracker_emits=True)
            return
        if s.status == st.COMPENSATING:
            policy = d.compensation_policy
            for i in reversed(range(len(s.steps))):
                step = s.steps[i]
                if step.state != st.STEP_COMPENSATING or step.comp_due is None or (step.comp_due > due and not forced):
                    continue
                if step.comp_attempts < policy.max_attempts:
                    self.record(e, "compensation_overdue", i, detail=f"attempt {step.comp_attempts} unconfirmed")
                    self.emit_compensation(i, due, e.id)
                else:
                    step.state, step.comp_due = st.COMPENSATION_FAILED, None
                    self.record(e, "compensation_failed", i, detail=f"unconfirmed after {step.comp_attempts} attempts")
            self.maybe_finish_compensation(due, e.id)

    def control(self, e: Event) -> None:
        s, a = self.s, e.action
        action, actor, why = a.get("action"), a.get("actor", "?"), a.get("reason", "")
        detail = f"by {actor}" + (f": {why}" if why else "")
        if action == MARK_PARTIAL:
            s.partial = True
            self.record(e, "partial", detail=why or "events before the replay window are no longer retained")
            return None

        def reject(msg: str) -> None:
            self.record(e, "rejected", detail=f"{action} {detail}: {msg}")

        if action == "resolve":
            if s.status != st.FAILED_NEEDS_MANUAL:
                return reject(f"only a failed_needs_manual saga can be resolved, this one is {s.status}")
            s.status, s.resolution = st.RESOLVED, {"actor": actor, "comment": why, "at": e.time}
            self.record(e, "resolved", detail=detail)
            self.outcome("SagaResolved", e.time, e.id, resolved_by=actor, comment=why)
            return None
        if s.terminal or s.status == st.AWAITING_START:
            return reject(f"saga is {s.status}")
        if action == "force_compensation":
            if s.status != st.RUNNING:
                return reject("saga is already compensating")
            self.record(e, "forced_compensation", s.current, detail=detail)
            if s.current is not None:
                s.steps[s.current].state = st.TIMED_OUT
            self.begin_compensation(f"compensation forced {detail}", e.time, e.id, tracker_emits=True)
        elif action == "retry_timeout":
            if s.deadline is None:
                return reject("nothing is waiting on a deadline")
            self.record(e, "timeout_retried", s.current, detail=detail)
            self.deadline_reached(e.time, e, forced=True)
        elif action == "extend_deadline":
            seconds = a.get("seconds")
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
                return reject("'seconds' must be a positive number")
            extended = False
            for step in s.steps:
                if step.state == st.ACTIVE and step.due is not None:
                    step.due, extended = step.due + seconds, True
                elif step.state == st.STEP_COMPENSATING and step.comp_due is not None:
                    step.comp_due, extended = step.comp_due + seconds, True
            if s.ttl_due is not None:
                s.ttl_due, extended = s.ttl_due + seconds, True
            if not extended:
                return reject("nothing is waiting on a deadline")
            self.record(e, "deadline_extended", s.current, detail=f"+{seconds:g}s {detail}")
        else:
            return reject("unknown action")
        return None

    # --- recorded decisions (replay) ------------------------------------------------------

    def decide(self, e: Event, anchor: dict[str, Any]) -> None:
        """Record a timeout or action that took effect, for generations that replay this one."""
        payload: dict[str, Any] = {
            "id": e.id,
            "type": "SagaDecision",
            "saga_id": self.s.saga_id,
            "saga_type": self.s.saga_type,
            "saga_version": self.s.version,
            "time": e.time,
            "of": e.kind,
            "anchor": anchor,
        }
        if e.kind == TIMEOUT:
            payload["token"] = e.token
        else:
            payload["action"] = dict(e.action)
        self.emit("decision", e.id, payload, e.id)

    def recorded(self, e: Event) -> None:
        """A decision another generation took: apply it at its anchor, park it until then."""
        if len(self.s.parked) >= PARKED_KEEP:
            self.count("parked_overflow")
            self.record(e, "parked_overflow", detail=f"more than {PARKED_KEEP} recorded decisions waiting")
            return
        self.s.parked.append(e.to_dict())
        self.drain()
        if any(p["id"] == e.id for p in self.s.parked):
            self.record(e, "parked", detail=f"recorded {e.action.get('of')} waits for {e.action.get('anchor')}")

    def drain(self) -> None:
        """Apply every parked decision whose anchor is where the saga is now."""
        progress = True
        while progress and self.s.parked:
            progress = False
            here = anchor(self.d, self.s)
            for i, raw in enumerate(self.s.parked):
                if raw["action"].get("anchor") == here:
                    del self.s.parked[i]
                    self.perform(Event.from_dict(raw))
                    progress = True
                    break

    def perform(self, e: Event) -> None:
        spec = e.action
        if spec.get("of") == TIMEOUT:
            self.deadline_reached(e.time, e)  # a timeout's time is its deadline's due time
        else:
            self.control(replace(e, kind=CONTROL, action=spec.get("action") or {}))

    # --- the next deadline ---------------------------------------------------------------

    def next_deadline(self) -> Deadline | None:
        s = self.s
        due = next_due(self.d, s)
        if due is None:
            return None
        if s.deadline is not None and s.deadline.due == due:
            return s.deadline
        s.deadline_seq += 1
        return Deadline(token=f"{s.deadline_seq}@{round(due * 1000)}", due=due)


def next_due(d: SagaDefinition, s: SagaState) -> float | None:
    """When the saga next needs the tracker if nothing arrives: the earliest of its deadlines."""
    candidates: list[float] = []
    if s.status == st.AWAITING_START and not s.orphaned and s.first_seen_at is not None:
        candidates.append(s.first_seen_at + d.limits.orphan_after)
    elif s.status == st.RUNNING:
        if s.current is not None and s.steps[s.current].due is not None:
            candidates.append(s.steps[s.current].due)  # type: ignore[arg-type]
        if s.ttl_due is not None:
            candidates.append(s.ttl_due)
    elif s.status == st.COMPENSATING:
        candidates.extend(x.comp_due for x in s.steps if x.state == st.STEP_COMPENSATING and x.comp_due is not None)
    return min(candidates) if candidates else None


def anchor(d: SagaDefinition, s: SagaState) -> dict[str, Any]:
    """Where a saga is, in terms that do not depend on arrival order: status, pending step
    and next due time (milliseconds). A recorded decision is re-applied at the same anchor."""
    due = next_due(d, s)
    return {
        "status": s.status,
        "step": None if s.current is None else d.steps[s.current].name,
        "due": None if due is None else round(due * 1000),
    }


def virtual_timeout(state: SagaState | None, at: float) -> Event | None:
    """The timeout a saga's deadline fires before an event at time ``at``, deciding in event
    time (a shadow run over history); None when nothing is due by then."""
    if state is None or state.deadline is None or state.deadline.due >= at:
        return None
    return timeout_event(state.saga_id, state.saga_type, state.deadline.token, state.deadline.due)


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
    run = _Run(definition, s, now, event.position)
    run.remember(event.id)
    if s.first_seen_at is None and event.kind != DECISION:
        s.first_seen_at = event.time
    before = anchor(definition, s)
    if event.kind == SERVICE:
        run.service(event)
    elif event.kind == TIMEOUT:
        run.timeout(event)
        if "stale_timeout" not in run.outcomes:
            run.decide(event, before)
    elif event.kind == CONTROL:
        run.control(event)
        if event.action.get("action") != MARK_PARTIAL and "rejected" not in run.outcomes:
            run.decide(event, before)
    elif event.kind == DECISION:
        run.recorded(event)
    run.drain()
    s.updated_at = now
    s.deadline = run.next_deadline()
    return Transition(s, tuple(run.emits), s.deadline, tuple(run.outcomes))
