"""Recorded decisions: a replaying generation re-applies timeouts and actions at the point
they were taken, instead of deciding again (no faust, no clock)."""

from __future__ import annotations

from dataclasses import replace

import orjson

from tests.unit.sagas import Saga, action, ev
from tracker.core import state as st
from tracker.core.events import MARK_PARTIAL, decision_event
from tracker.core.machine import Transition, apply, virtual_timeout


def decisions(saga: Saga) -> list[dict]:
    return [orjson.loads(orjson.dumps(e.payload)) for t in saga.transitions for e in t.emits if e.kind == "decision"]


def outputs(saga: Saga) -> list[str]:
    return [e.id for t in saga.transitions for e in t.emits if e.kind == "compensation"]


def live_stall() -> Saga:
    """Live: payment done at 110, inventory stalls (due 140), the timeout fires, then the
    inventory event arrives late."""
    live = Saga()
    live(ev("OrderCreated", 100))
    live(ev("PaymentAuthorized", 110))
    live.fire()
    live(ev("InventoryReserved", 150))
    return live


def test_a_timeout_that_takes_effect_is_recorded_with_its_anchor() -> None:
    live = live_stall()
    [d] = decisions(live)
    assert d["of"] == "timeout" and d["id"] == "timeout:2@140000" and d["time"] == 140
    assert d["anchor"] == {"status": "running", "step": "inventory", "due": 140000}
    assert outputs(live) == ["o-1:payment:compensate:1", "o-1:order:compensate:1", "o-1:inventory:compensate:1"]


def test_a_stale_timeout_records_no_decision() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    token = saga.s.deadline.token  # type: ignore[union-attr]
    saga(ev("PaymentAuthorized", 110))
    from tracker.core.events import timeout_event

    t = saga(timeout_event("o-1", "order", token, 130))
    assert "stale_timeout" in t.outcomes and decisions(saga) == []


def test_replay_in_the_same_order_reaches_the_same_saga_and_ids() -> None:
    live = live_stall()
    [d] = decisions(live)
    replay = Saga()
    replay(ev("OrderCreated", 100))
    replay(ev("PaymentAuthorized", 110))
    replay(decision_event(d))
    replay(ev("InventoryReserved", 150))
    assert outputs(replay) == outputs(live)
    assert st.outcome_view(replay.s.to_dict()) == st.outcome_view(live.s.to_dict())
    assert decisions(replay) == []  # re-applied, not decided again


def test_a_decision_that_arrives_before_its_anchor_waits_for_it() -> None:
    live = live_stall()
    [d] = decisions(live)
    replay = Saga()
    replay(ev("OrderCreated", 100))
    t = replay(decision_event(d))
    assert t.outcomes == ("parked",) and replay.s.status == st.RUNNING and len(replay.s.parked) == 1
    replay(ev("PaymentAuthorized", 110))  # arms inventory, due 140: the anchor
    assert replay.s.status == st.COMPENSATING and replay.s.parked == []
    replay(ev("InventoryReserved", 150))
    assert outputs(replay) == outputs(live)
    assert st.outcome_view(replay.s.to_dict()) == st.outcome_view(live.s.to_dict())


def test_a_recorded_decision_goes_before_completions_waiting_at_its_anchor() -> None:
    # Live, the start came late and the timeout of payment (due 130) fired before the payment
    # event was seen. In the replay the payment event waits with the start: the decision
    # still comes first, as it did live.
    live = Saga()
    live(ev("OrderCreated", 100))
    live.fire()
    live(ev("PaymentAuthorized", 135))
    [d] = decisions(live)
    replay = Saga()
    replay(decision_event(d))
    replay(ev("PaymentAuthorized", 135))
    replay(ev("OrderCreated", 100))
    assert replay.s.status == live.s.status == st.COMPENSATING
    assert outputs(replay) == outputs(live)
    assert st.outcome_view(replay.s.to_dict()) == st.outcome_view(live.s.to_dict())


def test_operator_actions_are_recorded_and_replayed_at_their_anchor() -> None:
    live = Saga()
    live(ev("OrderCreated", 100))
    live(ev("PaymentAuthorized", 110))
    live(action("force_compensation", 120, "a-9", reason="customer called"))
    [d] = decisions(live)
    assert d["of"] == "control" and d["action"]["action"] == "force_compensation"
    assert d["anchor"] == {"status": "running", "step": "inventory", "due": 140000}
    replay = Saga()
    replay(ev("OrderCreated", 100))
    replay(decision_event(d))  # parked: the saga is still waiting for payment
    assert replay.s.status == st.RUNNING
    replay(ev("PaymentAuthorized", 110))
    assert outputs(replay) == outputs(live) == ["o-1:payment:compensate:1", "o-1:order:compensate:1"]
    assert st.outcome_view(replay.s.to_dict()) == st.outcome_view(live.s.to_dict())


def test_a_rejected_action_records_no_decision() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    t = saga(action("resolve", 110))
    assert "rejected" in t.outcomes and decisions(saga) == []


def test_a_decision_seen_twice_is_applied_once() -> None:
    live = live_stall()
    [d] = decisions(live)
    replay = Saga()
    replay(ev("OrderCreated", 100))
    replay(ev("PaymentAuthorized", 110))
    replay(replace(decision_event(d), position="0/7"))
    t = replay(replace(decision_event(d), position="0/9"))  # the same decision again, elsewhere in the log
    assert t.outcomes == ("duplicate",) and not t.changed and t.emits == ()


def test_a_decision_for_a_saga_not_yet_seen_waits_without_starting_an_orphan_clock() -> None:
    live = live_stall()
    [d] = decisions(live)
    replay = Saga()
    t: Transition = replay(decision_event(d))
    assert replay.s.status == st.AWAITING_START and replay.s.first_seen_at is None and t.deadline is None
    replay(ev("OrderCreated", 100))
    replay(ev("PaymentAuthorized", 110))
    assert replay.s.status == st.COMPENSATING


def test_mark_partial_flags_the_saga_and_is_not_a_decision() -> None:
    saga = Saga()
    saga(ev("PaymentAuthorized", 110))
    saga(action(MARK_PARTIAL, 110, "partial-1", reason="replay window starts after this saga"))
    assert saga.s.partial and saga.s.history[-1]["outcome"] == "partial"
    assert decisions(saga) == []
    assert st.outcome_view(saga.s.to_dict())["partial"] is True


def test_virtual_timeout_decides_in_event_time() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    assert virtual_timeout(saga.s, 125) is None  # payment is due at 130
    timeout = virtual_timeout(saga.s, 131)
    assert timeout is not None and timeout.time == 130 and timeout.token == saga.s.deadline.token  # type: ignore[union-attr]
    saga(timeout)
    assert saga.s.status == st.COMPENSATING


def test_malformed_decisions_are_refused() -> None:
    import pytest

    from tracker.core.errors import StateError

    bad: object
    for bad in (None, [], {"of": "service"}, {"of": "timeout"}, {"of": "timeout", "anchor": {}, "saga_id": ""}):
        with pytest.raises(StateError):
            decision_event(bad)


def test_parked_decisions_are_replaced_not_changed_in_the_state_apply_was_given() -> None:
    """A copy shares the parked decisions' list (``SagaState.copy``): the machine must replace it,
    when it parks one and when it applies one at its anchor."""
    live = live_stall()
    [d] = decisions(live)
    replay = Saga()
    replay(ev("OrderCreated", 100))
    empty = replay.s
    parked = apply(replay.d, empty, decision_event(d), 5).state
    assert parked is not None and len(parked.parked) == 1 and empty.parked == []
    applied = apply(replay.d, parked, ev("PaymentAuthorized", 110), 6).state  # its anchor: applied
    assert applied is not None and applied.status == st.COMPENSATING and applied.parked == []
    assert len(parked.parked) == 1
