"""Conformance, live: an undeclared event type, steps completed out of their declared order, a
completion after its timeout and an undo nobody asked for show in /sagas/stats and the
metrics as soon as the worker applied them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from tests.integration.harness import Scenario
from tests.integration.test_api import wait_for

pytestmark = pytest.mark.integration


def test_drift_from_the_definition_is_counted_per_saga_type_as_it_happens(make_scenario: Callable[..., Scenario]) -> None:
    s = make_scenario(timeout="5s", confirm="300s")
    w = s.worker("w1").start()
    t0 = time.time()
    s.send(
        s.event("OrderCreated", "ok", at=t0),
        s.event("PaymentAuthorized", "ok", at=t0 + 1),
        # Inventory completed before payment, by the services' own clocks: the flow changed.
        s.event("OrderCreated", "swapped", at=t0),
        s.event("InventoryReserved", "swapped", at=t0 + 1),
        s.event("PaymentAuthorized", "swapped", at=t0 + 2),
        # Undone while running: nobody asked.
        s.event("OrderCreated", "undone", at=t0),
        s.event("OrderCancelled", "undone", at=t0 + 1),
        s.event("OrderCreated", "late"),
    )
    w.wait_saga("late", lambda b: b["status"] == "compensating", timeout=30)  # payment timed out
    audited: list[tuple[str, bytes, bytes, list[Any]]] = [
        (
            s.prefix + "orders",
            sid.encode(),
            orjson.dumps({**json.loads(s.event("OrderCreated", sid)[2]), "type": "OrderAudited", "id": f"audit-{sid}"}),
            [],
        )
        for sid in ("ok", "swapped")
    ]
    s.send(s.event("PaymentAuthorized", "late"), *audited)

    def drift() -> dict[str, int]:
        status, body = w.get("/sagas/stats")
        assert status == 200, body
        return body["conformance"].get("order", {})

    wait_for(lambda: drift().get("undeclared_event_type") == 2, timeout=20)
    found = drift()
    assert found == {
        "undeclared_event_type": 2,
        "steps_out_of_order": 1,
        "completed_after_timeout": 1,
        "unrequested_confirmation": 1,
        "undeclared_types": {"OrderAudited": 2},
    }
    for d, n in (("undeclared_event_type", 2), ("steps_out_of_order", 1), ("completed_after_timeout", 1)):
        assert w.metric("saga_tracker_drift_total", saga_type="order", drift=d) == n
    # Still dead-lettered as before, with its reason.
    dead = s.kafka.read_json(s.topic("dead-letter"), lambda m: len(m) >= 2)
    assert len(dead) == 2
