"""Deadlines: a stalled step, a saga's time-to-live, an unconfirmed compensation, an orphan;
and when the saga next needs the tracker. Derived from event times, never from ``now``."""

from __future__ import annotations

from tracker.core import state as st
from tracker.core.definitions import SagaDefinition
from tracker.core.events import Event, timeout_event
from tracker.core.machine.compensation import Compensation
from tracker.core.machine.run import iso
from tracker.core.state import Deadline, SagaState


class Deadlines(Compensation):
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


def virtual_timeout(state: SagaState | None, at: float) -> Event | None:
    """The timeout a saga's deadline fires before an event at time ``at``, deciding in event
    time (a shadow run over history); None when nothing is due by then."""
    if state is None or state.deadline is None or state.deadline.due >= at:
        return None
    return timeout_event(state.saga_id, state.saga_type, state.deadline.token, state.deadline.due)
