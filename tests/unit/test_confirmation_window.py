"""A compensation's confirmation window counts from when the attempt was decided, not from the
deadline that caused it; replay reproduces it from the decision's recorded time."""

from __future__ import annotations

from typing import Any

from tests.unit.sagas import Saga, ev
from tracker.core import state as st
from tracker.core.events import decision_event, timeout_event
from tracker.core.machine import Transition


def stalled() -> Saga:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    saga(ev("PaymentAuthorized", 110))  # inventory pending, due at 140
    return saga


def timed_out(now: float) -> tuple[Saga, Transition]:
    """A stalled saga whose deadline (140) a worker acts on at ``now``."""
    saga = stalled()
    dl = saga.s.deadline
    assert dl is not None and dl.due == 140
    return saga, saga(timeout_event("o-1", "order", dl.token, dl.due), now=now)


def decision_of(t: Transition) -> dict[str, Any]:
    [decision] = [e for e in t.emits if e.kind == "decision"]
    return decision.payload


def test_a_worker_that_decides_late_still_gives_the_service_its_whole_window() -> None:
    saga = stalled()
    dl = saga.s.deadline
    assert dl is not None and dl.due == 140
    t = saga(timeout_event("o-1", "order", dl.token, dl.due), now=240.0)  # the worker was 100 s behind
    assert saga.s.status == st.COMPENSATING and {e.id for e in t.emits} >= {"o-1:payment:compensate:1"}
    assert saga.s.steps[1].comp_due == 250.0  # decided at 240, confirm_timeout 10 s
    assert saga.s.deadline is not None and saga.s.deadline.due == 250.0  # attempt 2 not before 250


def test_on_time_the_window_counts_from_the_deadline_as_before() -> None:
    saga = stalled()
    dl = saga.s.deadline
    assert dl is not None
    saga(timeout_event("o-1", "order", dl.token, dl.due), now=139.0)  # a sweep a little early: never earlier
    assert saga.s.steps[1].comp_due == 150.0


def test_a_replayed_decision_reproduces_the_window_from_its_recorded_time() -> None:
    live, t = timed_out(now=240.0)
    decision = decision_of(t)
    assert decision["decided_at"] == 240.0
    replay = stalled()
    replay(decision_event(decision), now=5000.0)  # replayed much later
    assert replay.s.steps[1].comp_due == live.s.steps[1].comp_due == 250.0
    assert st.outcome_view(replay.s.to_dict()) == st.outcome_view(live.s.to_dict())


def test_a_decision_recorded_before_windows_counted_from_decisions_keeps_its_old_window() -> None:
    _, t = timed_out(now=141.0)
    old = {k: v for k, v in decision_of(t).items() if k != "decided_at"}
    replay = stalled()
    replay(decision_event(old), now=5000.0)
    assert replay.s.steps[1].comp_due == 150.0  # from the deadline, as such records were made


def test_a_compensation_a_late_completion_causes_counts_from_that_event_whenever_applied() -> None:
    """Nothing records when a worker applied a service event, so what it causes is decided at
    the event's time: a replay applying it hours later opens the same window."""
    live, _ = timed_out(now=140.0)
    live(ev("InventoryReserved", 150), now=150.0)  # late: its step is compensated at once
    replayed, _ = timed_out(now=140.0)
    replayed(ev("InventoryReserved", 150), now=9000.0)
    assert live.s.steps[2].comp_attempts == replayed.s.steps[2].comp_attempts == 1
    assert live.s.steps[2].comp_due == replayed.s.steps[2].comp_due == 160.0
    assert st.outcome_view(replayed.s.to_dict()) == st.outcome_view(live.s.to_dict())
