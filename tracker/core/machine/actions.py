"""Operator actions: resolve, force a compensation, retry a timeout, extend a deadline."""

from __future__ import annotations

from tracker.core import state as st
from tracker.core.events import MARK_PARTIAL, Event
from tracker.core.machine.deadlines import Deadlines


class Actions(Deadlines):
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
