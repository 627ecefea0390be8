"""Batch operator actions on two real workers: dry run, cap, tokens, idempotency, rejections,
and a batch whose queueing worker died half-way (nothing lost: the owners queue the rest)."""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.harness import Scenario, Worker
from tests.integration.test_api import TOKEN, check, post, wait_for
from tracker.generations.registry import write
from tracker.kafka.partitioner import partition_of
from tracker.web.batches import batch_id, control_id

pytestmark = pytest.mark.integration
CAP = 6


def batch(w: Worker, params: dict[str, str], body: dict[str, Any], **kw: Any) -> tuple[int, Any]:
    return post(w, "/sagas/actions?" + urllib.parse.urlencode(params), body, **kw)


def history_of(w: Worker, saga_id: str, entry_id: str) -> list[dict[str, Any]]:
    found = w.saga(saga_id)
    assert found is not None
    return [h for h in found["history"] if h["id"] == entry_id]


def settled_report(w: Worker, batch: str, timeout: float = 45.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = w.get(f"/batches/{batch}")
        assert status == 200, body
        assert body["applied"] + body["rejected"] + body["pending"] == body["matched"]  # never one unaccounted
        if body["pending"] == 0 or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


@pytest.fixture
def fleet(make_scenario: Callable[..., Scenario]) -> tuple[Scenario, Worker, Worker]:
    # Deadlines are never swept (one-hour sweep): the orders waiting for payment become stuck.
    s = make_scenario(timeout="1s", confirm="300s")
    env = {"SAGA_TRACKER_ACTION_TOKEN": TOKEN, "SAGA_TRACKER_SWEEP_INTERVAL": "3600", "SAGA_TRACKER_BATCH_MAX_SAGAS": str(CAP)}
    w1, w2 = s.worker("w1", **env).start(), s.worker("w2", **env).start()
    wait_for(lambda: all(w.get("/readyz")[1].get("active_partitions") for w in (w1, w2)), timeout=40)
    events = [s.event("OrderCreated", f"stuck-{n}") for n in range(5)]
    for n in range(2):
        events += [s.event(t, f"done-{n}") for t in ("OrderCreated", "PaymentAuthorized", "InventoryReserved", "ShipmentCreated")]
    s.send(*events)
    w1.wait_listed(5, "stuck=true")
    w1.wait_listed(2, "status=completed")
    return s, w1, w2


def test_a_batch_counts_refuses_above_the_cap_and_applies_once_to_every_matching_saga(
    fleet: tuple[Scenario, Worker, Worker],
) -> None:
    s, w1, w2 = fleet
    retry = {"action": "retry_timeout", "actor": "oncall-bob", "reason": "payments are back"}
    stuck = {"saga_type": "order", "stuck": "true"}

    assert batch(w1, stuck, retry, token=None)[0] == 401
    assert batch(w1, stuck, retry, token="wrong")[0] == 401
    status, body = batch(w1, {"saga_type": "nope"}, retry)
    assert status == 400 and body["parameter"] == "saga_type"
    spec = w1.get("/openapi.json")[1]
    status, body = batch(w1, stuck, {**retry, "dry_run": True})
    assert status == 200 and check(spec, "BatchCount", body)["matched"] == 5 and body["cap"] == CAP
    status, body = batch(w2, {"saga_type": "order"}, {**retry, "dry_run": True})  # 7: above the cap, still counted
    assert status == 200 and body["matched"] == 7
    status, body = batch(w2, {"saga_type": "order"}, retry)
    assert status == 400 and check(spec, "Error", body)["error"] == "too_many"
    assert "7" in body["message"] and str(CAP) in body["message"]
    status, body = batch(w1, {"saga_type": "order", "status": "compensated"}, retry)
    assert status == 400 and body["error"] == "nothing_matches"

    status, body = batch(w1, stuck, retry, headers={"Idempotency-Key": "incident-42"})
    assert status == 202 and check(spec, "BatchAccepted", body)["matched"] == 5, body
    bid = body["batch_id"]
    assert bid == batch_id("incident-42")
    # The same request again (a client retry): the same batch, nothing queued twice.
    again = batch(w2, stuck, retry, headers={"Idempotency-Key": "incident-42"})
    assert again == (202, body)

    report = check(spec, "BatchReport", settled_report(w2, bid))
    assert (report["applied"], report["rejected"], report["pending"]) == (5, 0, 0), report
    assert report["action"] == "retry_timeout" and report["actor"] == "oncall-bob" and report["filter"] == stuck
    for n in range(5):
        saga = w1.wait_saga(f"stuck-{n}", lambda b: b["status"] == "compensating")
        entry, *effects = history_of(w1, f"stuck-{n}", control_id(bid, f"stuck-{n}"))
        assert entry["outcome"] == "timeout_retried" and entry["detail"] == "by oncall-bob: payments are back"
        assert [e["outcome"] for e in effects] == ["timeout"]  # what the retried timeout did, same record
        assert [o["id"] for o in saga["outbox"] if o["kind"] == "compensation"] == [f"stuck-{n}:order:compensate:1"]

    # Rejected where the action does not apply, with the saga's own reason.
    resolve = {"action": "resolve", "actor": "oncall-bob", "reason": "closing"}
    status, body = batch(w1, {"saga_type": "order", "status": "completed"}, resolve)
    assert status == 202
    report = settled_report(w1, body["batch_id"])
    assert (report["applied"], report["rejected"], report["pending"]) == (0, 2, 0)
    assert [r["saga_id"] for r in report["rejections"]] == ["done-0", "done-1"]
    assert all("only a failed_needs_manual saga can be resolved" in r["reason"] for r in report["rejections"])
    assert w1.get("/batches/b-0000000000000000")[0] == 404
    # Every compensation the batch caused reached the services once.
    emitted = s.kafka.read_json(s.topic("compensations"), lambda m: len(m) >= 5)
    assert sorted(c["id"] for c in emitted) == sorted(f"stuck-{n}:order:compensate:1" for n in range(5))


def test_a_batch_whose_queueing_worker_died_is_finished_by_the_owners_and_a_dead_worker_shows_as_pending(
    fleet: tuple[Scenario, Worker, Worker],
) -> None:
    s, w1, w2 = fleet
    # The worst case: the manifest was written and the worker died before queueing anything.
    bid = batch_id("died-half-way")
    sagas = [[f"stuck-{n}", "order", "1"] for n in range(5)]
    manifest = {
        "batch_id": bid,
        "action": {"action": "extend_deadline", "actor": "oncall-eve", "reason": "waiting for the bank", "seconds": 600},
        "filter": {"saga_type": "order", "stuck": "true"},
        "created_at": time.time() - 40,  # past the resume delay
        "matched": 5,
        "sagas": sagas,
    }
    asyncio.run(write(s.kafka.bootstrap, f"{s.app_id}-batches", bid, manifest))
    report = settled_report(w1, bid, timeout=60)  # each owner queues its sagas' records (every 10 s)
    assert (report["applied"], report["pending"]) == (5, 0), report
    for n in range(5):
        [entry] = history_of(w1, f"stuck-{n}", control_id(bid, f"stuck-{n}"))
        assert entry["outcome"] == "deadline_extended" and "oncall-eve" in entry["detail"]

    # A worker down: its sagas are pending in the report (it cannot say), never missing from it.
    mine = set(w1.get("/readyz")[1]["active_partitions"])
    on_w2 = sorted(f"stuck-{n}" for n in range(5) if partition_of(f"stuck-{n}", 4) not in mine)
    w2.send_signal(signal.SIGKILL)
    status, body = w1.get(f"/batches/{bid}")
    assert status == 200 and body["matched"] == 5 and body["applied"] + body["pending"] == 5, body
    if body["partial"]:  # w2 still holds its partitions (until its session times out)
        assert body["pending_sagas"] == on_w2 and body["missing_workers"], body
    else:  # w1 took them over meanwhile
        assert body["pending"] == 0
