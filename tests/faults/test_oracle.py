"""The oracle's own rules on hand-made inputs (no broker): it judges every scenario, so it
must be right about the cases the tracker's contract singles out."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from tests.faults import oracle
from tests.faults.harness import TIMEOUT, FaultScenario, fault_definitions
from tests.faults.scenarios import order_event

SPECS = oracle.load_specs(fault_definitions("p-"))
PREFIXED = cast(FaultScenario, SimpleNamespace(prefix="p-"))  # order_event reads only the topic prefix


def records(*events: tuple[str, float]) -> list[dict[str, Any]]:
    """(type, seconds after t0) for saga o-1, as the services' topics hold them."""
    t0 = 1_800_000_000.0
    made = (order_event(PREFIXED, etype, "o-1", t0 + at) for etype, at in events)
    return [{"topic": topic, "value": value} for topic, _, value, _ in made]


def judge(*events: tuple[str, float]) -> oracle.Expected:
    return oracle.expected(SPECS, records(*events))["o-1"]


def test_completions_before_their_deadlines_complete_the_saga() -> None:
    # Judged after the run: a step still pending would have stalled by then.
    e = judge(("OrderCreated", 0), ("PaymentAuthorized", 1), ("InventoryReserved", 2), ("ShipmentCreated", 3))
    assert e.status == "completed" and e.completed == {"order", "payment", "inventory", "shipping"} and not e.compensations


def test_a_stall_undoes_the_completed_steps() -> None:
    e = judge(("OrderCreated", 0), ("PaymentAuthorized", 1))  # inventory never comes
    assert e.status == "compensating" and e.due == 1_800_000_000.0 + 1 + TIMEOUT
    assert e.compensations == {"o-1:order:compensate:1", "o-1:payment:compensate:1"}


def test_a_late_completion_while_compensating_is_undone_too() -> None:
    late = 1 + TIMEOUT + 3  # after the deadline, before every undo is confirmed
    e = judge(("OrderCreated", 0), ("PaymentAuthorized", 1), ("OrderCancelled", late + 5), ("InventoryReserved", late))
    assert e.compensations == {f"o-1:{s}:compensate:1" for s in ("order", "payment", "inventory")}
    assert e.status == "compensating" and e.undone == {"order"}


def test_a_late_completion_after_the_saga_is_compensated_is_fenced() -> None:
    done = 1 + TIMEOUT + 2
    e = judge(
        ("OrderCreated", 0),
        ("PaymentAuthorized", 1),
        ("OrderCancelled", done - 1),
        ("PaymentRefunded", done),
        ("InventoryReserved", done + 5),
    )
    assert e.status == "compensated" and not e.ambiguous
    assert e.compensations == {"o-1:order:compensate:1", "o-1:payment:compensate:1"}
    assert "inventory" in e.completed  # recorded on the timeline, never acted on


def test_a_late_completion_at_the_moment_the_saga_ends_is_ambiguous() -> None:
    done = 1 + TIMEOUT + 2
    e = judge(
        ("OrderCreated", 0),
        ("PaymentAuthorized", 1),
        ("OrderCancelled", done),
        ("PaymentRefunded", done),
        ("InventoryReserved", done + 0.5),
    )
    assert e.ambiguous
