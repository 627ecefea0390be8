"""A compensation confirmed after the tracker gave up still counts (failed_needs_manual ->
compensated), and forward events after a terminal status stay fenced."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as hs

from tests.unit.sagas import Saga, ev, order_saga
from tracker.core import state as st
from tracker.core.definitions import Step


def gave_up() -> Saga:
    """Order and payment done, inventory stalled; the order's undo is confirmed, the payment's is
    not, until the tracker gives up after three attempts."""
    saga = Saga()
    saga(ev("OrderCreated", 100))
    saga(ev("PaymentAuthorized", 110))
    saga.fire()  # inventory stalled at 140: compensations of payment and order, attempt 1
    saga(ev("OrderCancelled", 141))
    for _ in range(3):
        saga.fire()
    assert saga.s.status == st.FAILED_NEEDS_MANUAL and saga.s.steps[1].state == st.COMPENSATION_FAILED
    return saga


def outputs(saga: Saga) -> list[str]:
    return saga.emitted_ids()


def test_a_confirmation_after_the_tracker_gave_up_compensates_the_saga() -> None:
    saga = gave_up()
    t = saga(ev("PaymentRefunded", 400))
    assert saga.s.status == st.COMPENSATED and saga.s.steps[1].state == st.STEP_COMPENSATED
    assert [e.id for e in t.emits] == ["o-1:saga:SagaCompensated"]
    assert "compensated" in t.outcomes and t.deadline is None
    assert saga.s.history[-1]["outcome"] == "compensation_confirmed_late"
    assert "after the tracker gave up" in saga.s.history[-1]["detail"]
    assert "not undone" not in saga.s.reason and saga.s.reason.startswith("timeout of step inventory")
    assert all(o["confirmed"] for o in saga.s.outbox if o["kind"] == "compensation" and o["step"] == "payment")
    # Decided once: a redelivery of the same record re-sends the same id (a crash may have come
    # between the state write and the send), another confirmation decides nothing more.
    again = saga(ev("PaymentRefunded", 400))
    assert [e.id for e in again.emits] == ["o-1:saga:SagaCompensated"] and "duplicate" in again.outcomes
    other = saga(ev("PaymentVoided", 401, event_id="voided"))
    assert other.emits == () and saga.s.status == st.COMPENSATED
    decided = [o["id"] for o in saga.s.outbox if o["kind"] == "outcome"]
    assert decided == ["o-1:saga:SagaFailed", "o-1:saga:SagaCompensated"]


def test_a_late_confirmation_leaves_the_saga_failed_while_another_step_is_not_undone() -> None:
    steps = list(order_saga().steps)
    steps[0] = Step("order", completed_by=("OrderCreated",), compensation=None)  # irreversible
    saga = Saga(order_saga(steps=tuple(steps)))
    saga(ev("OrderCreated", 100))
    saga(ev("PaymentAuthorized", 110))
    for _ in range(4):
        saga.fire()
    assert saga.s.status == st.FAILED_NEEDS_MANUAL and "not undone: order, payment" in saga.s.reason
    t = saga(ev("PaymentRefunded", 400))
    assert saga.s.status == st.FAILED_NEEDS_MANUAL and saga.s.steps[1].state == st.STEP_COMPENSATED
    assert t.emits == () and saga.s.reason.endswith("; not undone: order")


def test_forward_events_after_a_terminal_status_stay_fenced() -> None:
    saga = gave_up()
    t = saga(ev("InventoryReserved", 400))
    assert saga.s.status == st.FAILED_NEEDS_MANUAL and t.emits == () and saga.s.history[-1]["outcome"] == "late"
    saga(ev("PaymentRefunded", 401))
    t = saga(ev("ShipmentCreated", 402))
    assert saga.s.status == st.COMPENSATED and t.emits == () and saga.s.history[-1]["outcome"] == "late"


@settings(max_examples=200, deadline=None)
@given(hs.lists(hs.sampled_from(["fire", "refund", "cancel"]), min_size=1, max_size=12))
def test_late_confirmations_interleaved_with_retries_end_in_one_outcome_per_kind(steps: list[str]) -> None:
    """Whatever the order of retries and confirmations: once both undos are confirmed the saga is
    compensated; until then it is compensating or failed_needs_manual; each outcome at most once."""
    saga = Saga()
    saga(ev("OrderCreated", 100))
    saga(ev("PaymentAuthorized", 110))
    saga.fire()  # compensating, both undos emitted
    confirmed: set[str] = set()
    t = 200.0
    for step in steps:
        t += 1
        if step == "fire" and saga.s.deadline is not None:
            saga.fire()
        elif step == "refund":
            saga(ev("PaymentRefunded", t))
            confirmed.add("payment")
        elif step == "cancel":
            saga(ev("OrderCancelled", t))
            confirmed.add("order")
        status = saga.s.status
        if confirmed == {"payment", "order"}:
            assert status == st.COMPENSATED
        else:
            assert status in (st.COMPENSATING, st.FAILED_NEEDS_MANUAL)
    ids = outputs(saga)
    assert ids.count("o-1:saga:SagaCompensated") <= 1 and ids.count("o-1:saga:SagaFailed") <= 1
    assert len(ids) == len(set(ids))  # every output id once
