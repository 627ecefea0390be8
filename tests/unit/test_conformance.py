"""Conformance: the machine names drift from the definition, and the tallies stay bounded."""

from __future__ import annotations

from tests.unit.sagas import Saga, ev
from tracker.core.conformance import DRIFTS, OTHER, TYPES, Conformance, merge


def drifts(saga: Saga) -> list[str]:
    c = Conformance()
    for t in saga.transitions:
        c.outcomes("order", t.outcomes)
    return [d for d in DRIFTS if c.counts.get("order", {}).get(d)]


def test_steps_completed_out_of_declared_order_in_event_time_are_drift_once() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    saga(ev("InventoryReserved", 105))  # inventory before payment, by the services' clocks
    saga(ev("PaymentAuthorized", 110))
    saga(ev("ShipmentCreated", 104))
    assert drifts(saga) == ["steps_out_of_order"]
    assert sum("steps_out_of_order" in t.outcomes for t in saga.transitions) == 1  # once per saga


def test_arrival_order_alone_is_not_drift() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    saga(ev("InventoryReserved", 120))  # arrives first, but happened after the payment
    saga(ev("PaymentAuthorized", 110))
    assert drifts(saga) == []


def test_a_completion_after_the_timeout_and_an_undo_nobody_asked_for_are_drift() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    saga.fire()  # payment timed out
    saga(ev("PaymentAuthorized", 140))
    assert drifts(saga) == ["completed_after_timeout"]
    other = Saga()
    other(ev("OrderCreated", 100))
    other(ev("OrderCancelled", 101))  # undone while running: nobody asked
    assert drifts(other) == ["unrequested_confirmation"]


def test_undeclared_event_types_are_tallied_with_a_bounded_number_of_names() -> None:
    c = Conformance()
    for n in range(TYPES + 5):
        c.undeclared_type(["order"], f"Type{n}" + "x" * 300)
    c.undeclared_type(["order", "task"], "Type0" + "x" * 300)
    figures = c.figures()
    assert figures["order"]["undeclared_event_type"] == TYPES + 6
    assert len(figures["order"]["undeclared_types"]) == TYPES + 1 and figures["order"]["undeclared_types"][OTHER] == 5
    assert all(len(name) <= 100 for name in figures["order"]["undeclared_types"])
    merged = merge([figures, figures])
    assert merged["order"]["undeclared_event_type"] == 2 * (TYPES + 6) and len(merged["order"]["undeclared_types"]) == TYPES
    assert merged["task"]["undeclared_event_type"] == 2
