"""The saga state machine: every rule, applied record by record (no faust, no clock)."""

from __future__ import annotations

import pytest

from tests.unit.sagas import COMPLETIONS, Saga, action, ev, order_saga
from tracker.core import state as st
from tracker.core.definitions import Compensation, Step
from tracker.core.events import timeout_event
from tracker.core.machine import Transition, apply, visible_status


def outputs(t: Transition) -> list[str]:
    """Ids of what the services see; decisions (kind "decision") are checked on their own."""
    return [e.id for e in t.emits if e.kind != "decision"]


def run_happy(saga: Saga) -> None:
    for i, t in enumerate(COMPLETIONS):
        saga(ev(t, 100 + i))


def test_happy_path_completes_with_visible_statuses_and_an_outcome() -> None:
    saga = Saga()
    seen = []
    for i, t in enumerate(COMPLETIONS):
        saga(ev(t, 100 + i))
        seen.append(visible_status(saga.d, saga.s))
    assert seen == ["PENDING_PAYMENT", "PENDING_INVENTORY", "PENDING_SHIPPING", "COMPLETED"]
    assert saga.s.status == st.COMPLETED and saga.s.ended_at == 103
    assert saga.step_states() == [st.DONE] * 4
    assert saga.s.keys == {} and saga.s.deadline is None
    last = saga.transitions[-1]
    assert outputs(last) == ["o-1:saga:SagaCompleted"]
    assert last.emits[0].kind == "outcome" and last.emits[0].payload["status"] == "completed"
    assert [h["outcome"] for h in saga.s.history] == ["started", "completed", "completed", "completed"]


def test_step_deadline_is_start_event_time_plus_timeout() -> None:
    saga = Saga()
    t = saga(ev("OrderCreated", 100))
    assert t.deadline is not None and t.deadline.due == 130
    t = saga(ev("PaymentAuthorized", 110))
    assert t.deadline is not None and t.deadline.due == 140 and saga.s.steps[2].started_at == 110


def test_duplicate_event_id_is_a_no_op() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100, "e1"))
    before = saga.s.to_dict()
    t = saga(ev("OrderCreated", 100, "e1"), now=2e9)
    assert t.outcomes == ("duplicate",) and not t.changed and t.emits == ()
    assert saga.s.to_dict() == before


def test_seen_ids_are_bounded() -> None:
    saga = Saga(order_saga(limits=order_saga().limits.__class__(seen_ids=3, history=100, early_events=10, orphan_after=60)))
    saga(ev("OrderCreated", 100, "e0"))
    for i in range(1, 6):
        saga(ev("Noise", 100 + i, f"n{i}"))
    assert saga.s.seen == ["n3", "n4", "n5"]


def test_reordered_completion_is_recorded_and_honoured_never_regressing() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    t = saga(ev("InventoryReserved", 120))  # before the payment it depends on
    assert t.outcomes == ("reordered",)
    assert visible_status(saga.d, saga.s) == "PENDING_PAYMENT"
    assert saga.step_states() == [st.DONE, st.ACTIVE, st.DONE, st.WAITING]
    assert saga.s.steps[2].out_of_order and saga.s.counts["reordered"] == 1
    saga(ev("PaymentAuthorized", 110))
    assert visible_status(saga.d, saga.s) == "PENDING_SHIPPING"
    # The pending step started with the latest completion before it.
    assert saga.s.steps[3].started_at == 120 and saga.s.steps[3].due == 180
    saga(ev("ShipmentCreated", 130))
    assert saga.s.status == st.COMPLETED


def test_early_events_wait_for_the_start_event() -> None:
    saga = Saga()
    t = saga(ev("PaymentAuthorized", 105))
    assert saga.s.status == st.AWAITING_START and t.outcomes == ("early",)
    assert t.deadline is not None and t.deadline.due == 105 + 60  # the orphan window
    saga(ev("InventoryReserved", 106))
    saga(ev("OrderCreated", 100))
    assert visible_status(saga.d, saga.s) == "PENDING_SHIPPING" and saga.s.early == []
    assert saga.s.counts["early"] == 2 and saga.s.counts["early_applied"] == 2


def test_early_events_become_an_orphan_after_the_window() -> None:
    saga = Saga()
    saga(ev("PaymentAuthorized", 105))
    t = saga.fire()
    assert saga.s.orphaned and t.outcomes == ("orphaned",)
    assert outputs(t) == ["o-1:saga:SagaOrphaned"]
    assert t.deadline is None
    saga(ev("OrderCreated", 300))  # the start does come, late: the saga is adopted
    assert saga.s.status == st.RUNNING and visible_status(saga.d, saga.s) == "PENDING_INVENTORY"


def test_early_events_are_bounded_and_overflow_is_counted() -> None:
    saga = Saga()
    for i in range(12):
        saga(ev("PaymentAuthorized", 100 + i, f"p{i}"))
    assert len(saga.s.early) == 10 and saga.s.counts["early_overflow"] == 2


def test_late_events_after_terminal_are_recorded_counted_and_fenced() -> None:
    saga = Saga()
    run_happy(saga)
    t = saga(ev("PaymentDeclined", 200))
    assert saga.s.status == st.COMPLETED and t.outcomes == ("late",) and t.emits == ()
    assert saga.s.counts["late"] == 1 and saga.s.history[-1]["outcome"] == "late"


def test_service_failure_is_followed_without_emitting() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    saga(ev("PaymentAuthorized", 101))
    t = saga(ev("OutOfStock", 102))
    assert saga.s.status == st.COMPENSATING and t.emits == ()
    assert saga.s.compensated_by == "services" and "inventory failed" in saga.s.reason
    assert saga.step_states() == [st.STEP_COMPENSATING, st.STEP_COMPENSATING, st.FAILED, st.WAITING]
    assert t.deadline is not None and t.deadline.due == 112  # confirmations awaited with a deadline
    saga(ev("PaymentRefunded", 103))
    t = saga(ev("OrderCancelled", 104))
    assert saga.s.status == st.COMPENSATED and outputs(t) == ["o-1:saga:SagaCompensated"]
    assert saga.emitted_ids() == ["o-1:saga:SagaCompensated"]


def test_overdue_service_compensation_is_then_emitted_by_the_tracker() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    saga(ev("PaymentAuthorized", 101))
    saga(ev("OutOfStock", 102))
    saga(ev("OrderCancelled", 103))
    t = saga.fire()
    assert outputs(t) == ["o-1:payment:compensate:1"]


def test_stall_emits_compensations_newest_first_with_full_payload() -> None:
    saga = Saga()
    trace = {"traceparent": "00-abc-def-01", "correlation_id": "corr-9"}
    saga(ev("OrderCreated", 100, "e0", keys={"order_id": "o-1"}, trace=trace))
    saga(ev("PaymentAuthorized", 110, "e1"))
    t = saga.fire()  # inventory never came: due at 140
    assert saga.s.status == st.COMPENSATING and saga.s.compensated_by == "tracker"
    assert outputs(t) == ["o-1:payment:compensate:1", "o-1:order:compensate:1"]
    first = t.emits[0]
    assert first.kind == "compensation" and first.key == "o-1"
    p = first.payload
    assert p["type"] == "RefundPayment" and p["step"] == "payment" and p["attempt"] == 1
    assert p["saga_id"] == "o-1" and p["saga_type"] == "order"
    assert p["reason"] == "timeout of step inventory at 1970-01-01T00:02:20.000Z"
    assert p["correlation_id"] == "corr-9" and p["causation_id"] == t.state.seen[-1]  # type: ignore[union-attr]
    assert p["data"] == {"order_id": "o-1"} and p["time"] == "1970-01-01T00:02:20.000Z"
    assert first.headers["traceparent"] == "00-abc-def-01" and first.headers["ce_id"] == first.id
    assert saga.step_states() == [st.STEP_COMPENSATING, st.STEP_COMPENSATING, st.TIMED_OUT, st.WAITING]


def test_stale_and_duplicate_timeouts_change_nothing() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    stale = timeout_event("o-1", "order", saga.s.deadline.token, 130)  # type: ignore[union-attr]
    saga(ev("PaymentAuthorized", 110))  # the deadline moved on
    t = saga(stale)
    assert t.outcomes == ("stale_timeout",) and t.emits == () and saga.s.status == st.RUNNING
    fired = saga.fire()
    again = apply(saga.d, saga.s, timeout_event("o-1", "order", fired.state.seen[-1][len("timeout:") :], 140), 1e9)  # type: ignore[union-attr]
    assert again.outcomes == ("duplicate",) and not again.changed


def test_redelivered_record_resends_only_its_unconfirmed_outputs_with_the_same_ids() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    saga(ev("PaymentAuthorized", 110))
    deadline = saga.s.deadline
    assert deadline is not None
    first = saga.fire()
    record = timeout_event("o-1", "order", deadline.token, deadline.due)
    again = apply(saga.d, saga.s, record, 1e9)  # as after a crash between state write and send
    assert outputs(again) == outputs(first)
    saga(ev("PaymentRefunded", 150))
    again = apply(saga.d, saga.s, record, 1e9)
    assert outputs(again) == ["o-1:order:compensate:1"]


def test_unconfirmed_compensation_is_retried_with_backoff_then_needs_manual() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    saga(ev("PaymentAuthorized", 110))
    saga.fire()  # at 140: attempt 1 of payment and order
    saga(ev("OrderCancelled", 141))
    dues = []
    for _ in range(2):
        dues.append(saga.s.deadline.due)  # type: ignore[union-attr]
        saga.fire()
    assert dues == [150, 170]  # 140 + 10, then 150 + 10*2
    assert saga.s.deadline.due == 210  # type: ignore[union-attr]  # 170 + 10*4
    t = saga.fire()
    assert saga.s.status == st.FAILED_NEEDS_MANUAL
    assert saga.s.steps[1].state == st.COMPENSATION_FAILED and saga.s.steps[1].comp_attempts == 3
    assert outputs(t) == ["o-1:saga:SagaFailed"]
    assert t.emits[0].payload["steps_not_undone"] == ["payment"]
    assert "failed_needs_manual" in t.outcomes and t.deadline is None
    assert [i for i in saga.emitted_ids() if "payment" in i] == [f"o-1:payment:compensate:{n}" for n in (1, 2, 3)]


def test_late_completion_during_tracker_compensation_is_compensated_too() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    saga.fire()  # payment stalled at 130
    t = saga(ev("PaymentAuthorized", 131))
    assert outputs(t) == ["o-1:payment:compensate:1"]
    assert saga.s.steps[1].state == st.STEP_COMPENSATING


def test_a_completed_irreversible_step_ends_in_manual_follow_up() -> None:
    steps = list(order_saga().steps)
    steps[1] = Step("payment", completed_by=("PaymentAuthorized",), timeout=30, compensation=None)
    d = order_saga(steps=tuple(steps))
    assert any("irreversible" in w and "payment" in w for w in d.warnings)
    saga = Saga(d)
    saga(ev("OrderCreated", 100))
    saga(ev("PaymentAuthorized", 101))
    saga.fire()
    assert saga.s.steps[1].state == st.NO_COMPENSATION
    saga(ev("OrderCancelled", 150))
    assert saga.s.status == st.FAILED_NEEDS_MANUAL and "not undone: payment" in saga.s.reason


def test_a_step_without_limit_has_no_deadline() -> None:
    steps = list(order_saga().steps)
    steps[1] = Step("approval", completed_by=("Approved",), timeout=None, compensation=Compensation("Revoke", ("Revoked",)))
    saga = Saga(order_saga(steps=tuple(steps)))
    t = saga(ev("OrderCreated", 100))
    assert visible_status(saga.d, saga.s) == "PENDING_APPROVAL" and t.deadline is None
    saga(ev("Approved", 10_000))
    assert saga.s.deadline is not None and saga.s.deadline.due == 10_030


def test_saga_time_to_live() -> None:
    saga = Saga(order_saga(ttl=45))
    saga(ev("OrderCreated", 100))
    saga(ev("PaymentAuthorized", 120))  # inventory due at 150, ttl at 145
    assert saga.s.deadline.due == 145  # type: ignore[union-attr]
    saga.fire()
    assert saga.s.status == st.COMPENSATING and "time-to-live" in saga.s.reason


def test_confirmation_before_failure_is_honoured() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    saga(ev("PaymentAuthorized", 101))
    t = saga(ev("PaymentRefunded", 103))
    assert t.outcomes == ("confirmed_early",) and saga.s.status == st.RUNNING
    saga(ev("OutOfStock", 102))
    assert saga.s.steps[1].state == st.STEP_COMPENSATED
    saga(ev("OrderCancelled", 104))
    assert saga.s.status == st.COMPENSATED


def test_operator_force_compensation_extend_retry_and_resolve() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    t = saga(action("extend_deadline", 110, "a1", seconds=100, reason="payment provider slow"))
    assert saga.s.steps[1].due == 230 and t.deadline.due == 230  # type: ignore[union-attr]
    assert saga.s.history[-1]["outcome"] == "deadline_extended" and "alice" in saga.s.history[-1]["detail"]
    t = saga(action("force_compensation", 120, "a2", reason="customer cancelled"))
    assert outputs(t) == ["o-1:order:compensate:1"] and saga.s.status == st.COMPENSATING
    again = saga(action("force_compensation", 120, "a2"))
    assert again.outcomes == ("duplicate",)
    t = saga(action("retry_timeout", 121, "a3"))
    assert outputs(t) == ["o-1:order:compensate:2"]
    saga(action("retry_timeout", 122, "a4"))
    saga(action("retry_timeout", 123, "a5"))
    assert saga.s.status == st.FAILED_NEEDS_MANUAL
    t = saga(action("resolve", 130, "a6", reason="refunded by hand"))
    assert saga.s.status == st.RESOLVED and saga.s.resolution == {"actor": "alice", "comment": "refunded by hand", "at": 130}
    assert outputs(t) == ["o-1:saga:SagaResolved"]


@pytest.mark.parametrize(
    ("setup", "name", "extra"),
    [
        (COMPLETIONS, "force_compensation", {}),
        (COMPLETIONS[:2], "resolve", {}),
        (COMPLETIONS[:2], "extend_deadline", {"seconds": -5}),
        (COMPLETIONS[:2], "launch_rockets", {}),
    ],
)
def test_invalid_operator_actions_are_rejected_and_change_nothing_else(setup: list[str], name: str, extra: dict) -> None:
    saga = Saga()
    for i, t in enumerate(setup):
        saga(ev(t, 100 + i))
    before = saga.s.to_dict()
    done = saga(action(name, 200, **extra))
    assert done.outcomes == ("rejected",) and done.emits == ()
    after = saga.s.to_dict()
    for k in ("history", "seen", "updated_at"):
        before.pop(k), after.pop(k)
    assert after == before


def test_actions_and_timeouts_for_an_unknown_saga_create_nothing() -> None:
    d = order_saga()
    assert apply(d, None, action("resolve", 1), 1).state is None
    assert apply(d, None, timeout_event("x", "order", "1@1", 1), 1).state is None


def test_history_is_bounded_and_counts_what_it_dropped() -> None:
    limits = order_saga().limits.__class__(seen_ids=1000, history=5, early_events=10, orphan_after=60)
    saga = Saga(order_saga(limits=limits))
    saga(ev("OrderCreated", 100))
    for i in range(10):
        saga(ev("Noise", 101 + i, f"x{i}"))
    assert len(saga.s.history) == 5 and saga.s.history_dropped == 6


def test_state_round_trips_through_its_dict_form() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    saga.fire()
    assert st.SagaState.from_dict(saga.s.to_dict()) == saga.s


def test_apply_does_not_modify_its_input_state() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    before = saga.s.to_dict()
    apply(saga.d, saga.s, ev("PaymentAuthorized", 101), 5)
    assert saga.s.to_dict() == before


def test_a_new_duplicate_elsewhere_in_the_log_resends_nothing() -> None:
    from dataclasses import replace

    saga = Saga()
    saga(ev("OrderCreated", 100))
    saga(ev("PaymentAuthorized", 101))
    saga(ev("InventoryReserved", 102))
    last = replace(ev("ShipmentCreated", 103), position="2/40")
    assert [e.id for e in saga(last).emits] == ["o-1:saga:SagaCompleted"]
    assert apply(saga.d, saga.s, replace(last, position="2/41"), 1e9).emits == ()  # a service sent it twice
    assert [e.id for e in apply(saga.d, saga.s, last, 1e9).emits] == ["o-1:saga:SagaCompleted"]  # redelivery


def test_orjson_encodes_the_state_as_to_dict_with_its_steps_sparse() -> None:
    import orjson  # the shell stores states with orjson's native dataclass encoding

    saga = Saga()
    saga(ev("OrderCreated", 100, keys={"order_id": "o-1"}, trace={"traceparent": "00-a-b-01"}))
    saga.fire()
    stored = orjson.loads(orjson.dumps(saga.s))
    full = saga.s.to_dict()
    assert {k: v for k, v in stored.items() if k != "steps"} == {k: v for k, v in full.items() if k != "steps"}
    # A step is stored with the fields set on it, the rest being the defaults to_dict fills in.
    waiting = {"state": "waiting"}
    assert stored["steps"][1:] == [{"state": "timed_out", "started_at": 100, "due": 130}, waiting, waiting]
    assert [{**defaults_of_a_step(), **x} for x in stored["steps"]] == full["steps"]
    assert st.SagaState.from_dict(stored) == saga.s
    assert st.SagaState.from_dict(stored).to_dict() == full


def defaults_of_a_step() -> dict[str, object]:
    return st.StepState().__dict__


def test_a_row_written_with_every_step_field_loads_as_before() -> None:
    import orjson

    saga = Saga()
    saga(ev("OrderCreated", 100))
    saga(ev("PaymentAuthorized", 101))
    older = orjson.loads(orjson.dumps(saga.s.to_dict()))  # as rows were written before steps were sparse
    assert len(older["steps"][2]) == len(defaults_of_a_step())
    loaded = st.SagaState.from_dict(older)
    assert loaded == saga.s and loaded.to_dict() == saga.s.to_dict()
    with pytest.raises(st.StateError, match="cannot load"):
        st.SagaState.from_dict({**older, "steps": [{"state": "done", "unknown": 1}]})


def test_copies_do_not_share_what_apply_changes() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    saga(ev("PaymentAuthorized", 101))
    saga.fire()
    original = saga.s.to_dict()
    clone = saga.s.copy()
    clone.steps[0].state = "x"
    clone.outbox[0]["confirmed"] = True
    clone.counts["y"] = 1
    clone.history.append({"t": 1})
    assert saga.s.to_dict() == original


def test_early_events_are_replaced_not_changed_in_the_state_apply_was_given() -> None:
    """A copy shares the early events' list (``SagaState.copy``): the machine must replace it."""
    saga = Saga()
    saga(ev("PaymentAuthorized", 101))  # before the start: it waits in the saga
    waiting = saga.s
    before = waiting.to_dict()
    later = apply(saga.d, waiting, ev("InventoryReserved", 102), 5)
    assert len(later.state.early) == 2 and waiting.to_dict() == before  # type: ignore[union-attr]
    started = apply(saga.d, later.state, ev("OrderCreated", 100), 6)
    assert started.state.early == [] and len(later.state.early) == 2  # type: ignore[union-attr]
