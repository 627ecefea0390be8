"""Recorded decisions: every timeout or action that takes effect is emitted with its anchor;
a replaying generation parks each until its saga reaches that anchor, then applies it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

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
        # Decided when the generation that took it did (older records: at the decision's time).
        before, self.decided_at = self.decided_at, float(spec.get("decided_at", e.time))
        try:
            if spec.get("of") == TIMEOUT:
                self.deadline_reached(e.time, e)  # a timeout's time is its deadline's due time
            else:
                self.control(replace(e, kind=CONTROL, action=spec.get("action") or {}))
        finally:
            self.decided_at = before


def anchor(d: SagaDefinition, s: SagaState) -> dict[str, Any]:
    """Where a saga is, in terms that do not depend on arrival order: status, pending step
    and next due time (milliseconds). A recorded decision is re-applied at the same anchor."""
    due = next_due(d, s)
    return {
        "status": s.status,
        "step": None if s.current is None else d.steps[s.current].name,
        "due": None if due is None else round(due * 1000),
    }
