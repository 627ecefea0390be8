"""Compensation: undo completed steps newest first, follow their confirmations, finish."""

from __future__ import annotations

from tracker.core import state as st
from tracker.core.events import Event
from tracker.core.machine.run import Run

NOT_UNDONE = "; not undone: "  # how a failed_needs_manual saga's reason lists the steps left


class Compensation(Run):
    def begin_compensation(self, reason: str, at: float, cause: str, *, tracker_emits: bool, at_step: int | None = None) -> None:
        """Undo every completed step, newest first.

        ``tracker_emits``: the tracker emits the compensations now (a stall nobody else saw);
        otherwise the services were told by the failure event and the tracker only waits.
        ``at_step``: where it went wrong (default: the pending step).
        """
        s, _d = self.s, self.d
        s.trouble_step = at_step if at_step is not None else s.current
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
        # The service gets its whole window from when the attempt was decided: a worker that was
        # behind decides late, and a window counted from the deadline would be spent already.
        step.comp_due = max(at, self.decided_at) + self.d.compensation_policy.delay(attempt)
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
            s.reason = f"{s.reason}{NOT_UNDONE}{', '.join(manual)}"
            self.outcome("SagaFailed", at, cause, steps_not_undone=manual)
            self.outcomes.append("failed_needs_manual")
        else:
            s.status, s.ended_at = st.COMPENSATED, at
            self.outcome("SagaCompensated", at, cause)
            self.outcomes.append("compensated")

    def undo_answered(self, i: int) -> None:
        """Every compensation sent for step ``i`` is answered: none is re-sent on redelivery."""
        name = self.d.steps[i].name
        for entry in self.s.outbox:
            if entry["step"] == name and entry["kind"] == "compensation":
                entry["confirmed"] = True

    def confirm_after_giving_up(self, i: int, e: Event) -> None:
        """A service confirms an undo the tracker had given up on (``failed_needs_manual``): the
        step is undone after all, and once nothing is left to undo the saga is ``compensated``
        (its ``SagaCompensated`` outcome sent once, with its deterministic id). Without this, the
        saga would keep paging for what the service already did."""
        s, step = self.s, self.s.steps[i]
        step.comp_confirmed_at, step.comp_due, step.state = e.time, None, st.STEP_COMPENSATED
        self.undo_answered(i)
        self.record(e, "compensation_confirmed_late", i, detail="confirmed after the tracker gave up")
        self.outcomes.append("compensation_confirmed")
        left = [self.d.steps[j].name for j, x in enumerate(s.steps) if x.state in (st.COMPENSATION_FAILED, st.NO_COMPENSATION)]
        cause = s.reason.split(NOT_UNDONE)[0]
        if left:
            s.reason = f"{cause}{NOT_UNDONE}{', '.join(left)}"
            return
        s.status, s.reason, s.ended_at = st.COMPENSATED, cause, e.time
        self.outcome("SagaCompensated", e.time, e.id)
        self.outcomes.append("compensated")

    def confirm(self, i: int, e: Event) -> None:
        s, step = self.s, self.s.steps[i]
        if step.comp_confirmed_at is not None:
            self.record(e, "redundant", i, detail="compensation already confirmed")
            return
        step.comp_confirmed_at = e.time
        step.comp_due = None
        self.undo_answered(i)
        if s.status != st.COMPENSATING or step.state not in (st.STEP_COMPENSATING, st.COMPENSATION_FAILED):
            self.count("reordered")
            self.record(e, "confirmed_early", i, detail="undo confirmed before compensation was needed")
            return
        step.state = st.STEP_COMPENSATED
        self.record(e, "compensation_confirmed", i)
        self.outcomes.append("compensation_confirmed")
        self.maybe_finish_compensation(e.time, e.id)
