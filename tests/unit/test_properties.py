"""Properties of the machine under what the network does: shuffling, duplication, redelivery."""

from __future__ import annotations

import copy
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from tests.unit.sagas import COMPLETIONS, Saga, ev, order_saga
from tracker.core import state as st
from tracker.core.events import Event, timeout_event
from tracker.core.machine import Transition, apply

FAILURES = {1: "PaymentDeclined", 2: "OutOfStock", 3: "ShipmentFailed"}
CONFIRMS = ["OrderCancelled", "PaymentRefunded", "StockReleased", "ShipmentCancelled"]


@hs.composite
def scenario(draw: Any) -> list[Event]:
    """The events of one saga as the services would publish them, in causal order."""
    done = draw(hs.integers(1, 4))  # steps completed
    fails = done < 4 and draw(hs.booleans())
    events = [ev(t, 100 + i, f"c{i}") for i, t in enumerate(COMPLETIONS[:done])]
    if fails:
        events.append(ev(FAILURES[done], 100 + done, "f"))
        # The services undo what they did, any subset confirmed.
        for i in range(done):
            if draw(hs.booleans()):
                events.append(ev(CONFIRMS[i], 110 + i, f"u{i}"))
    return events


def project(s: st.SagaState) -> tuple[Any, ...]:
    """What must not depend on arrival order."""
    return (
        s.status,
        tuple(x.state for x in s.steps),
        tuple(x.completed_at for x in s.steps),
        tuple(x.comp_confirmed_at for x in s.steps),
        s.compensated_by,
    )


def run(events: list[Event]) -> tuple[st.SagaState, set[str]]:
    saga = Saga()
    for e in events:
        saga(e)
    return saga.s, set(saga.emitted_ids())


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 300)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=hs.data(), events=scenario())
def test_shuffled_and_duplicated_events_reach_the_in_order_state(data: Any, events: list[Event]) -> None:
    expected, expected_emits = run(events)
    duplicated = events + data.draw(hs.lists(hs.sampled_from(events), max_size=6))
    shuffled = data.draw(hs.permutations(duplicated))
    got, got_emits = run(shuffled)
    assert project(got) == project(expected)
    assert got_emits == expected_emits


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 300)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=hs.data(), events=scenario(), ops=hs.lists(hs.sampled_from(["event", "fire", "redeliver"]), max_size=30))
def test_no_compensation_is_decided_twice_whatever_the_interleaving(data: Any, events: list[Event], ops: list[str]) -> None:
    d = order_saga()
    state: st.SagaState | None = None
    applied: list[Event] = []
    payloads: dict[str, dict[str, Any]] = {}
    decided: list[str] = []  # ids minted by non-duplicate transitions
    pending = list(events)

    def step(record: Event) -> None:
        nonlocal state
        given = None if state is None else copy.deepcopy(state.to_dict())
        t: Transition = apply(d, state, record, 1e9)
        # The worker keeps the state it hands to ``apply`` (decoded, in ``Hot``) for the saga's
        # next event, whatever this one came to: ``apply`` must not have touched it.
        assert given is None or state is None or state.to_dict() == given, "apply changed the state it was given"
        for e in t.emits:
            assert payloads.setdefault(e.id, e.payload) == e.payload, "one id, two different outputs"
            if "duplicate" not in t.outcomes:
                decided.append(e.id)
        if t.state is not None:
            state = t.state
        applied.append(record)

    for op in ops:
        if op == "event" and pending:
            step(pending.pop(0))
        elif op == "fire" and state is not None and state.deadline is not None:
            step(timeout_event(state.saga_id, state.saga_type, state.deadline.token, state.deadline.due))
        elif op == "redeliver" and applied:
            step(data.draw(hs.sampled_from(applied)))
    assert len(decided) == len(set(decided)), "an output id was decided twice"
    attempts: dict[str, list[int]] = {}
    for emit_id in decided:
        if ":compensate:" in emit_id:
            _, step_name, _, attempt = emit_id.split(":")
            attempts.setdefault(step_name, []).append(int(attempt))
    for step_name, numbers in attempts.items():
        assert numbers == list(range(1, len(numbers) + 1)), step_name
        assert len(numbers) <= d.compensation_policy.max_attempts
    if state is not None and state.status == st.COMPLETED:
        assert not attempts
