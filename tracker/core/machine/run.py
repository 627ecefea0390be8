"""A run: one application of one record to one saga, and its bookkeeping (history, seen ids,
the outbox). The rules are layered on it by concern: ``compensation``, ``deadlines``,
``actions``, ``decisions`` and ``forward`` (each builds on the ones before it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from tracker.core import state as st
from tracker.core.correlation import TRACE_HEADERS  # the headers carried from input to outputs
from tracker.core.definitions import SagaDefinition
from tracker.core.events import Event
from tracker.core.state import Deadline, SagaState

OUTBOX_KEEP = 200  # confirmed outputs kept for the timeline; unconfirmed ones are always kept


class Emit(NamedTuple):
    """An output the shell must send: kind ``compensation``, ``outcome`` or ``decision``, keyed by
    saga id. A named tuple, as ``Transition``: immutable, and made in a fraction of a frozen
    dataclass's time (its ``__init__`` sets each field through ``object.__setattr__``)."""

    kind: str
    id: str
    key: str
    payload: dict[str, Any]
    headers: dict[str, str]


class Transition(NamedTuple):
    """What applying one record did; one per record applied."""

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


class Run:
    """One application of one record; collects outputs and outcomes."""

    def __init__(self, d: SagaDefinition, s: SagaState, now: float, position: str = "") -> None:
        self.d, self.s, self.now, self.position = d, s, now, position
        # When the decision being applied was taken: now, or a replayed decision's recorded time.
        # A compensation's confirmation window counts from it (see ``Compensation.emit_compensation``).
        self.decided_at = now
        self.emits: list[Emit] = []
        self.outcomes: list[str] = []

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
