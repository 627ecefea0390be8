"""Recorded decisions: every timeout or action that takes effect is emitted with its anchor;
a replaying generation parks each until its saga reaches that anchor, then applies it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tracker.core import state as st
from tracker.core.definitions import SagaDefinition
from tracker.core.events import CONTROL, TIMEOUT, Event
from tracker.core.machine.actions import Actions
from tracker.core.machine.deadlines import next_due
from tracker.core.state import SagaState

PARKED_KEEP = 50  # recorded decisions waiting for their anchor, per saga


class Decisions(Actions):
    def decide(self, e: Event, anchor: dict[str, Any]) -> None:
        """Record a timeout or action that took effect, for generations that replay this one."""
        payload: dict[str, Any] = {
            "id": e.id,
            "type": "SagaDecision",
            "saga_id": self.s.saga_id,
            "saga_type": self.s.saga_type,
            "saga_version": self.s.version,
            "time": e.time,
            "decided_at": self.decided_at,
            "of": e.kind,
            "anchor": anchor,
        }
        if e.kind == TIMEOUT:
            payload["token"] = e.token
        else:
            payload["action"] = dict(e.action)
        # The compensations it sent: a generation that follows this one may read a service's
        # answer to one of them before the decision itself (another topic), and must still
        # count the attempt (``overtaken``).
        sent = [x for x in self.emits if x.kind == "compensation"]
        payload["emitted"] = [{"id": x.id, "step": x.payload["step"], "attempt": x.payload["attempt"]} for x in sent]
        self.emit("decision", e.id, payload, e.id)

    def recorded(self, e: Event) -> None:
        """A decision another generation took: apply it at its anchor, park it until then."""
        if len(self.s.parked) >= PARKED_KEEP:
            self.count("parked_overflow")
            self.record(e, "parked_overflow", detail=f"more than {PARKED_KEEP} recorded decisions waiting")
            return
        if self.overtaken_only(e):
            return
        self.s.parked = [*self.s.parked, e.to_dict()]  # replaced, never changed in place (``SagaState.copy``)
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
                    self.s.parked = self.s.parked[:i] + self.s.parked[i + 1 :]
                    self.perform(Event.from_dict(raw))
                    progress = True
                    break

    def perform(self, e: Event) -> None:
        spec = e.action
        # Decided when the generation that took it did (older records: at the decision's time).
        before, self.decided_at = self.decided_at, float(spec.get("decided_at", e.time))
        try:
            if spec.get("of") == TIMEOUT:
                self.deadline_reached(e.time, e)  # a timeout's time is its deadline's due time
            else:
                self.control(replace(e, kind=CONTROL, action=spec.get("action") or {}))
            self.overtaken(e)
        finally:
            self.decided_at = before

    def overtaken(self, e: Event) -> bool:
        """Count the compensations a recorded decision sent whose answers reached this saga
        first: the step's undo is confirmed here, its attempt not counted yet. The service
        answered that very request (it was written after the decision, on another topic than
        the decisions), so the attempt was made: the live generation counts it, so does this
        one. Whether any was."""
        found = False
        for sent in e.action.get("emitted") or ():
            i = self.step_named(sent.get("step"))
            if i is None:
                continue
            step, attempt = self.s.steps[i], int(sent.get("attempt") or 0)
            if step.comp_confirmed_at is None or step.comp_attempts >= attempt:
                continue
            found = True
            while step.comp_attempts < attempt:
                self.emit_compensation(i, e.time, e.id)
            step.comp_due = None
            self.undo_answered(i)
            self.record(e, "decision_overtaken", i, detail=f"attempt {attempt} was answered before its decision arrived")
        return found

    def overtaken_only(self, e: Event) -> bool:
        """A recorded retry whose every compensation was answered here before it arrived: its
        anchor (the retry's due time) is gone with those answers, so it would wait for ever,
        and re-emitting is all a retry does. Counted, not parked. Any other decision (a first
        timeout also moves the saga to compensating) waits for its anchor as before."""
        sent = e.action.get("emitted") or ()
        at = e.action.get("anchor") or {}
        if not sent or at.get("status") != st.COMPENSATING or anchor(self.d, self.s) == at:
            return False
        for x in sent:
            i = self.step_named(x.get("step"))
            if i is None or self.s.steps[i].comp_confirmed_at is None:
                return False
        return self.overtaken(e)

    def step_named(self, name: Any) -> int | None:
        """The index of a step a recorded decision names, if this saga has it."""
        try:
            i = self.d.step_index(str(name))
        except KeyError:
            return None
        return i if i < len(self.s.steps) else None


def anchor(d: SagaDefinition, s: SagaState) -> dict[str, Any]:
    """Where a saga is, in terms that do not depend on arrival order: status, pending step
    and next due time (milliseconds). A recorded decision is re-applied at the same anchor."""
    due = next_due(d, s)
    return {
        "status": s.status,
        "step": None if s.current is None else d.steps[s.current].name,
        "due": None if due is None else round(due * 1000),
    }
