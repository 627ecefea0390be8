"""Replay on the real broker: rebuild equals live, emits nothing, shadow runs, partial sagas, promotion."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from tests.integration.harness import DEFINITIONS, Scenario, Worker
from tests.integration.test_api import post

pytestmark = pytest.mark.integration
TOKEN = "replay-token"
FLOW = ("OrderCreated", "PaymentAuthorized", "InventoryReserved", "ShipmentCreated")


def ids(s: Scenario, name: str) -> list[str]:
    """Every id on an output topic, duplicates kept (sorted: partitions interleave freely)."""
    return sorted(orjson.loads(r["value"])["id"] for r in s.kafka.read(s.topic(name), timeout=3.0))


def run_ok(s: Scenario, *args: str, **env: str) -> str:
    done = s.cli(*args, **env)  # type: ignore[arg-type]  # env: only str values
    assert done.returncode == 0, f"saga-tracker {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def live_history(s: Scenario, w1: Worker) -> None:
    """Completions, a reordering, duplicates, a service failure, stalls (one confirmed, one
    late), an operator's forced compensation: every kind of decision the tracker takes."""
    events = []
    for n in range(3):
        events += [s.event(t, f"ok-{n}") for t in FLOW]
    events += [s.event(t, "reordered") for t in ("OrderCreated", "InventoryReserved", "PaymentAuthorized", "ShipmentCreated")]
    events += [s.event("PaymentAuthorized", "ok-1"), s.event("OrderCreated", "ok-2")]  # duplicates
    events += [s.event(t, "fail-0") for t in ("OrderCreated", "PaymentAuthorized", "OutOfStock")]
    events += [s.event(t, "fail-0") for t in ("PaymentRefunded", "OrderCancelled")]
    events += [s.event(t, f"stall-{n}") for n in range(2) for t in ("OrderCreated", "PaymentAuthorized")]
    # An approval waits without a deadline: an operator forces its compensation.
    events += [s.event("ApprovalRequested", "forced", field="request_id")]
    s.send(*events)
    w1.wait_saga("fail-0", lambda b: b["status"] == "compensated")
    for n in range(2):  # the inventory step stalls: 3 s later the tracker compensates
        w1.wait_saga(f"stall-{n}", lambda b: b["status"] == "compensating")
    s.send(s.event("PaymentRefunded", "stall-0"), s.event("OrderCancelled", "stall-0"), s.event("InventoryReserved", "stall-1"))
    status, body = post(
        w1, "/sagas/forced/actions", {"action": "force_compensation", "actor": "oncall", "reason": "customer phoned"}, TOKEN
    )
    assert status == 202, body
    w1.wait_saga("stall-0", lambda b: b["status"] == "compensated")
    w1.wait_saga("stall-1", lambda b: any(o["id"] == "stall-1:inventory:compensate:1" for o in b["outbox"]))
    w1.wait_saga("forced", lambda b: b["status"] == "compensating" and b["outbox"])
    for n in range(3):
        w1.wait_saga(f"ok-{n}", lambda b: b["status"] == "completed")
    w1.wait_saga("reordered", lambda b: b["status"] == "completed")


def test_rebuild_equals_live_emits_nothing_and_promotion_switches_reads(make_scenario: Callable[..., Scenario]) -> None:
    s = make_scenario(timeout="3s", confirm="300s")  # no retry while the test runs (about a minute)
    w1 = s.worker("w1", SAGA_TRACKER_ACTION_TOKEN=TOKEN).start()
    live_history(s, w1)
    # Every output the worker sent is on its topic (the state is written before the send).
    deadline = time.monotonic() + 30
    while len(compensations := ids(s, "compensations")) + len(outcomes := ids(s, "outcomes")) < sum(
        w1.metric("saga_tracker_emitted_total", kind=kind) for kind in ("compensation", "outcome")
    ):
        assert time.monotonic() < deadline, "the worker's outputs never reached their topics"
    assert {"stall-0:payment:compensate:1", "stall-1:inventory:compensate:1", "forced:request:compensate:1"} <= set(compensations)
    decisions = s.kafka.read(s.app_id + "-decisions", timeout=3.0)
    assert len(decisions) == 3  # two timeouts and one action took effect

    out = run_ok(s, "replay")
    assert "generation 2 fed" in out and "3 decisions" in out, out
    w2 = s.worker("w2", SAGA_TRACKER_GENERATION="2", SAGA_TRACKER_ACTION_TOKEN=TOKEN).start()
    verified = s.cli("replay", "--verify", "--generation", "2", "--json", "--wait", "90")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = orjson.loads(verified.stdout)
    assert report["equal"] and report["base_digest"] == report["other_digest"] and report["differing"] == []
    assert report["counts_before"] == report["counts_after"]
    assert report["counts_after"] == {"completed": 4, "compensated": 2, "compensating": 2}
    # Nothing was emitted to the services, and the generation decided the same ids.
    assert ids(s, "compensations") == compensations and ids(s, "outcomes") == outcomes
    assert set(report["would_emit"]) <= set(compensations) and report["new_compensations"] == []

    # Before promotion, a worker of generation 2 answers from generation 1.
    status, headers, body = w2.get_with_headers("/sagas/stall-1")
    assert status == 200 and headers["X-Saga-Generation"] == "1"
    samples: list[tuple[int, str]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            status, headers, _ = w1.get_with_headers("/sagas/stall-1")
            samples.append((status, headers.get("X-Saga-Generation", "")))
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        run_ok(s, "promote", "2")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not samples or samples[-1][1] != "2"):
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        poller.join()
    assert samples and all(status == 200 for status, _ in samples), samples
    assert samples[0][1] == "1" and samples[-1][1] == "2"  # served by generation 1, then by 2
    # Each worker reads the registry on its own (every 2 s): w2 may learn of it a read later.
    while time.monotonic() < deadline and w2.get_with_headers("/readyz")[2]["promoted"] != 2:
        time.sleep(0.2)
    assert w2.get_with_headers("/readyz")[2]["promoted"] == 2

    # Generation 2 now acts: a new stall is compensated once, by it.
    s.send(s.event("OrderCreated", "after"))
    body = w1.wait_saga("after", lambda b: b["status"] == "compensating", timeout=60)
    assert [o["id"] for o in body["outbox"] if o["kind"] == "compensation"] == ["after:order:compensate:1"]
    time.sleep(1)
    emitted = [i for i in ids(s, "compensations") if i.startswith("after:")]
    assert emitted and set(emitted) == {"after:order:compensate:1"}
    generations = run_ok(s, "generations")
    assert "generation 2: promoted" in generations
    busy = s.cli("retire", "1")
    assert busy.returncode == 2 and "workers" in busy.stderr  # w1 still runs generation 1
    w1.stop()
    retired = run_ok(s, "retire", "1")
    assert f"{s.app_id}-saga-log" in retired and f"{s.app_id}-decisions" not in retired
    refused = s.cli("retire", "2")
    assert refused.returncode == 2 and "promoted" in refused.stderr


def test_shadow_run_with_a_shorter_timeout_reports_the_sagas_that_would_have_timed_out(
    make_scenario: Callable[..., Scenario],
) -> None:
    s = make_scenario(timeout="60s", confirm="300s")
    w1 = s.worker("w1").start()
    t0 = time.time() - 30  # live deadlines (60 s) stay in the future while the test runs
    events: list[Any] = []
    for n in range(3):  # steps a second apart
        events += [s.event(t, f"fast-{n}", at=t0 + i) for i, t in enumerate(FLOW)]
    for n in range(2):  # payment took 20 s (event time): fine with 60 s, not with 10 s
        events += [s.event(t, f"slow-{n}", at=t0 + (0, 20, 21, 22)[i]) for i, t in enumerate(FLOW)]
    s.send(*events)
    for saga_id in ("fast-0", "fast-1", "fast-2", "slow-0", "slow-1"):
        w1.wait_saga(saga_id, lambda b: b["status"] == "completed")
    shorter = s.tmp / "shorter.yaml"
    shorter.write_text(DEFINITIONS.format(p=s.prefix, timeout="10s", confirm="300s"))
    out = run_ok(s, "replay", "--definitions", str(shorter))
    assert "shadow generation 2" in out, out
    s.worker("w2", SAGA_TRACKER_GENERATION="2", SAGA_TRACKER_SHADOW="true", SAGA_TRACKER_DEFINITIONS=str(shorter)).start()
    done = s.cli("replay", "--verify", "--generation", "2", "--json", "--wait", "90")
    assert done.returncode == 0, done.stdout + done.stderr
    report = orjson.loads(done.stdout)
    assert not report["equal"]
    assert {d["saga_id"] for d in report["differing"]} == {"slow-0", "slow-1"}
    for d in report["differing"]:
        assert d["base"]["status"] == "completed" and d["other"]["status"] == "compensating"
    assert report["counts_before"] == {"completed": 5}
    assert report["counts_after"] == {"completed": 3, "compensating": 2}
    # Timed out at payment; the steps that then completed late must be undone too.
    steps = ("order", "payment", "inventory", "shipping")
    assert report["would_emit"] == sorted(f"slow-{n}:{step}:compensate:1" for n in range(2) for step in steps)
    assert report["new_compensations"] == report["would_emit"]
    assert ids(s, "compensations") == []  # the shadow emitted nothing to the services
    human = s.cli("replay", "--verify", "--generation", "2", "--wait", "30").stdout
    assert "slow-0: completed/None -> compensating/None" in human and "completed 5 -> 3" in human
    refused = s.cli("promote", "2")
    assert refused.returncode == 2 and "shadow" in refused.stderr


def test_replay_from_a_time_marks_sagas_that_started_before_it_as_partial(make_scenario: Callable[..., Scenario]) -> None:
    s = make_scenario(timeout="60s", confirm="300s")
    w1 = s.worker("w1").start()
    s.send(s.event("OrderCreated", "early"))
    time.sleep(1.5)
    since = time.time()
    time.sleep(0.5)
    s.send(s.event("PaymentAuthorized", "early"), *[s.event(t, "inside") for t in FLOW])
    w1.wait_saga("inside", lambda b: b["status"] == "completed")
    w1.wait_saga("early", lambda b: b["visible_status"] == "PENDING_INVENTORY")
    out = run_ok(s, "replay", "--from-time", f"{since:.3f}")
    assert "partial sagas (their start is before the window): 1" in out, out
    w2 = s.worker("w2", SAGA_TRACKER_GENERATION="2").start()
    local = {"X-Saga-Tracker-Forwarded": "1"}  # this generation's own state, not the promoted one's

    def partial_row() -> dict[str, Any] | None:
        status, _, body = w2.get_with_headers("/sagas?saga_type=order", local)
        rows = {r["saga_id"]: r for r in body["items"]} if status == 200 else {}
        return rows if {"early", "inside"} <= set(rows) else None

    deadline = time.monotonic() + 60
    rows = partial_row()
    while rows is None and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = partial_row()
    assert rows is not None
    assert rows["early"]["partial"] is True and rows["inside"]["partial"] is False
    assert rows["inside"]["status"] == "completed"
    status, _, saga = w2.get_with_headers("/sagas/early", local)
    assert status == 200 and saga["partial"] and saga["history"][-1]["outcome"] in ("partial", "early")
