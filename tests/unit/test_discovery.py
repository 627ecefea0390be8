"""Discovery mines a draft definition from event traffic (no broker: the traffic is simulated
the way the demo services behave; ``tests/integration/test_discover.py`` reads real topics)."""

from __future__ import annotations

import random
from typing import Any

import yaml

from tracker.core.discovery import KeyFinder, Miner, fits, mine, nice, render
from tracker.loader import parse_text

FORWARD = ["OrderCreated", "PaymentAuthorized", "InventoryReserved", "ShipmentCreated"]
FAILS = {1: "PaymentDeclined", 2: "OutOfStock", 3: "ShipmentFailed"}
UNDO = {0: "OrderCancelled", 1: "PaymentRefunded", 2: "StockReleased", 3: "ShipmentCancelled"}
STEP_SECONDS = {1: (0.5, 3.0), 2: (1.0, 6.0), 3: (0.2, 1.0)}


def traffic(n: int, seed: int = 7) -> list[tuple[str, float, dict[str, Any]]]:
    """(type, time, body) of ``n`` orders: 10 % fail at a step, 12 % stall (the tracker then
    asks for undos, newest first), 10 % duplicates, the rest complete."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        oid, customer = f"o-{i:05d}", f"c-{rng.randint(1, 30):02d}"
        t = 1000.0 + i

        def emit(event_type: str, at: float, oid: str = oid, customer: str = customer) -> None:
            body: dict[str, Any] = {"specversion": "1.0", "id": f"{oid}-{event_type}", "type": event_type, "source": "/demo"}
            body["data"] = {"order_id": oid, "customer_id": customer, "amount": 12.5}
            out.append((event_type, at, body))
            if rng.random() < 0.1:
                out.append((event_type, at, body))  # a duplicate

        emit(FORWARD[0], t)
        done = 0
        for step in (1, 2, 3):
            roll = rng.random()
            if roll < 0.1:  # the service fails; the others undo what they did
                t += rng.uniform(*STEP_SECONDS[step])
                emit(FAILS[step], t)
                for j in range(done, -1, -1):
                    t += 0.3
                    emit(UNDO[j], t)
                break
            if roll < 0.22:  # it stalls; the tracker compensates after its timeout
                t += 30
                for j in range(done, -1, -1):
                    t += 0.4
                    emit(UNDO[j], t)
                break
            t += rng.uniform(*STEP_SECONDS[step])
            emit(FORWARD[step], t)
            done = step
    return out


def mined(n: int = 3000, variant: list[str] | None = None) -> Any:
    events = traffic(n)
    finder, miner = KeyFinder(), Miner("data.order_id", max_instances=100_000)
    for event_type, _, body in events[:5000]:
        finder.add(event_type, body)
    for event_type, at, body in events:
        miner.add(body["data"]["order_id"], event_type, at)
    for i, event_type in enumerate(variant or []):
        miner.add("odd-one", event_type, 5000.0 + i)
    return finder, miner, mine(miner, "orders", ["orders", "payments"])


def test_the_key_that_joins_one_instance_at_a_time_ranks_first() -> None:
    finder, _, _ = mined(600)
    ranked = finder.ranked()
    assert ranked[0][0] == "data.order_id"
    assert ranked[0][2] == sorted({*FORWARD, *FAILS.values(), *UNDO.values()} - {"ShipmentCancelled"})
    assert "data.customer_id" in [r[0] for r in ranked] and "id" not in [r[0] for r in ranked]


def test_the_draft_recovers_steps_order_failures_compensations_and_realistic_timeouts() -> None:
    _, miner, draft = mined()
    assert draft.start == "OrderCreated" and [s.completed_by for s in draft.steps] == FORWARD
    assert [s.name for s in draft.steps] == ["order", "payment", "inventory", "shipment"]  # from the event names
    assert [s.failed_by for s in draft.steps] == [[], ["PaymentDeclined"], ["OutOfStock"], ["ShipmentFailed"]]
    assert [s.confirmed_by for s in draft.steps] == [["OrderCancelled"], ["PaymentRefunded"], ["StockReleased"], []]
    for i, (_, high) in STEP_SECONDS.items():
        timeout = draft.steps[i].timeout(1.5)
        assert timeout is not None and high <= timeout <= nice(high * 1.5), (i, timeout)
    assert miner.duplicates > 0 and draft.instances == 3000
    assert draft.fitting == draft.instances  # every simulated instance is one the draft explains


def test_an_injected_variant_is_reported_with_its_count_and_does_not_fit() -> None:
    odd = ["OrderCreated", "InventoryReserved", "PaymentAuthorized", "ShipmentCreated"]  # payment after inventory
    _, _, draft = mined(variant=odd)
    assert (tuple(odd), 1) in draft.variants
    assert draft.fitting == draft.instances - 1
    assert not fits(tuple(odd), draft.steps)


def test_a_rare_type_is_left_out_with_why() -> None:
    _, miner, _ = mined(500)
    miner.add("o-00001", "OrderAudited", 9999.0)
    draft = mine(miner, "orders")
    assert "too rare to place" in draft.left_out["OrderAudited"]


def test_the_draft_is_a_valid_definition_with_the_evidence_in_comments() -> None:
    _, _, draft = mined()
    text = render([draft], 1.5, {"records": 100, "skipped": 3, "topics": ["orders", "payments"]})
    [definition] = parse_text(text, file="draft.yaml")
    assert definition.name == "orders" and definition.start == "OrderCreated"
    assert "# observed n=" in text and "p99" in text
    parsed = yaml.safe_load(text)
    assert parsed["sagas"][0]["correlation"] == {"saga_id": "data.order_id"}


def test_the_instance_cap_keeps_memory_bounded_and_says_so() -> None:
    miner = Miner("data.order_id", max_instances=10)
    for i in range(50):
        miner.add(f"o-{i}", "OrderCreated", float(i))
    assert len(miner.instances) == 10 and miner.dropped_events == 40
