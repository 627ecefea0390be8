"""Definitions built from Python dataclasses (the same ones YAML produces), for unit tests."""

from __future__ import annotations

from tracker.core.definitions import (
    Compensation,
    CompensationPolicy,
    Correlation,
    FieldRef,
    Limits,
    SagaDefinition,
    Step,
)
from tracker.core.events import CONTROL, Event, timeout_event
from tracker.core.machine import Transition, apply
from tracker.core.state import SagaState


def order_saga(**overrides: object) -> SagaDefinition:
    fields: dict[str, object] = dict(
        name="order",
        start="OrderCreated",
        topics=("orders", "payments", "inventory", "shipping"),
        correlation=Correlation(saga_id=(FieldRef.parse("data.order_id"),)),
        business_keys={"order_id": (FieldRef.parse("data.order_id"),)},
        compensation_policy=CompensationPolicy(confirm_timeout=10, max_attempts=3, backoff=2, max_delay=100),
        limits=Limits(seen_ids=50, history=100, early_events=10, orphan_after=60),
        steps=(
            Step("order", completed_by=("OrderCreated",), compensation=Compensation("CancelOrder", ("OrderCancelled",))),
            Step(
                "payment",
                completed_by=("PaymentAuthorized",),
                failed_by=("PaymentDeclined",),
                timeout=30,
                compensation=Compensation("RefundPayment", ("PaymentRefunded",)),
                status="PENDING_PAYMENT",
            ),
            Step(
                "inventory",
                completed_by=("InventoryReserved",),
                failed_by=("OutOfStock",),
                timeout=30,
                compensation=Compensation("ReleaseStock", ("StockReleased",)),
            ),
            Step(
                "shipping",
                completed_by=("ShipmentCreated",),
                failed_by=("ShipmentFailed",),
                timeout=60,
                compensation=Compensation("CancelShipment", ("ShipmentCancelled",)),
            ),
        ),
    )
    fields.update(overrides)
    return SagaDefinition(**fields)  # type: ignore[arg-type]


COMPLETIONS = ["OrderCreated", "PaymentAuthorized", "InventoryReserved", "ShipmentCreated"]


def ev(event_type: str, time: float, event_id: str | None = None, saga_id: str = "o-1", **kw: object) -> Event:
    return Event(saga_id=saga_id, saga_type="order", id=event_id or f"{event_type}-{time}", type=event_type, time=time, **kw)  # type: ignore[arg-type]


def action(name: str, time: float, event_id: str = "a-1", saga_id: str = "o-1", **extra: object) -> Event:
    return Event(
        saga_id=saga_id,
        saga_type="order",
        id=event_id,
        type="OperatorAction",
        time=time,
        kind=CONTROL,
        action={"action": name, "actor": "alice", **extra},
    )


class Saga:
    """Applies records one by one and keeps every transition, like the track agent does."""

    def __init__(self, definition: SagaDefinition | None = None) -> None:
        self.d = definition or order_saga()
        self.state: SagaState | None = None
        self.transitions: list[Transition] = []

    def __call__(self, event: Event, now: float | None = None) -> Transition:
        """Apply ``event`` at ``now`` (default: on time, at the event's own time; a worker that was
        behind applies it later, and the windows its decisions open count from then)."""
        given = None if self.state is None else self.state.to_dict()
        t = apply(self.d, self.state, event, event.time if now is None else now)
        # The worker keeps the state it hands to ``apply`` (``Hot``), and the new state shares
        # some of its containers (``SagaState.copy``): checked here for every record every
        # machine test applies.
        assert self.state is None or self.state.to_dict() == given, f"apply changed the state it was given ({event.type})"
        self.transitions.append(t)
        if t.state is not None:
            self.state = t.state
        return t

    def fire(self) -> Transition:
        """Deliver the timeout record of the saga's current deadline."""
        assert self.state is not None and self.state.deadline is not None
        dl = self.state.deadline
        return self(timeout_event(self.state.saga_id, self.state.saga_type, dl.token, dl.due))

    @property
    def s(self) -> SagaState:
        assert self.state is not None
        return self.state

    def step_states(self) -> list[str]:
        return [x.state for x in self.s.steps]

    def emitted_ids(self) -> list[str]:
        return [e.id for t in self.transitions for e in t.emits]
