"""Stalled steps against the real broker: timeouts, compensation, retries, crashes, backlogs, parking."""

from __future__ import annotations

import itertools
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tables import rows as saga_rows
from tests.integration.harness import Scenario
from topics.names import changelog

pytestmark = pytest.mark.integration

SWEEP = 0.5
TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def compensations(s: Scenario, n: int, timeout: float = 20.0) -> list[dict]:
    return s.kafka.read(s.topic("compensations"), lambda m: len(m) >= n, timeout=timeout)


def ids(records: list[dict]) -> list[str]:
    return [orjson.loads(r["value"])["id"] for r in records]


def test_stalled_step_emits_the_compensations_newest_first_once_within_the_deadline(scenario: Scenario) -> None:
    s = scenario
    w = s.worker().start()
    t0 = time.time()
    s.send(
        s.event(
            "OrderCreated", "s-1", at=t0, headers=[("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
        ),
        s.event("PaymentAuthorized", "s-1", at=t0 + 0.5),
    )
    due = t0 + 0.5 + 4  # inventory: started by the payment event, 4 s timeout
    records = compensations(s, 2)
    assert ids(records) == ["s-1:payment:compensate:1", "s-1:order:compensate:1"]
    first = orjson.loads(records[0]["value"])
    assert first["type"] == "RefundPayment" and first["saga_type"] == "order" and first["step"] == "payment"
    assert first["reason"].startswith("timeout of step inventory at ") and first["causation_id"].startswith("timeout:")
    assert first["correlation_id"] == "s-1" and first["attempt"] == 1
    assert records[0]["headers"]["traceparent"] == TRACEPARENT
    assert records[0]["key"] == b"s-1" and records[0]["partition"] == records[1]["partition"]
    for r in records:  # not before the deadline, and within deadline + sweep interval (+ processing)
        assert due <= r["timestamp"] / 1000 <= due + SWEEP + 2.0, r["timestamp"] / 1000 - due
    saga = w.wait_saga("s-1", lambda b: b["status"] == "compensating")
    assert [x["state"] for x in saga["steps"]] == ["compensating", "compensating", "timed_out", "waiting"]
    s.send(s.event("PaymentRefunded", "s-1"), s.event("OrderCancelled", "s-1"))
    done = w.wait_saga("s-1", lambda b: b["status"] == "compensated")
    # No deadline is left, so no sweep can emit anything more: the sweeps after it say so.
    assert done["deadline"] is None
    w.wait_sweeps(2)
    assert ids(s.kafka.read(s.topic("compensations"), timeout=2)) == ids(records)


@pytest.mark.parametrize("point", ["before_send", "after_send"])
def test_crash_around_the_send_never_mints_a_new_compensation_id(
    make_scenario: Callable[..., Scenario], tmp_path: Path, point: str
) -> None:
    # Confirmations get 30 s: a second attempt would blur what the crash did.
    s = make_scenario(timeout="3s", confirm="30s")
    marker = tmp_path / "crashed"
    w = s.worker(CRASH_POINT=point, CRASH_MARKER=str(marker)).start()
    s.send(s.event("OrderCreated", "k-1"), s.event("PaymentAuthorized", "k-1"))
    assert w.wait_exit(timeout=30) == 137 and marker.read_text() == point  # died exactly there
    w.start()
    records = compensations(s, 2, timeout=30)
    counts = Counter(ids(records))
    assert set(counts) == {"k-1:payment:compensate:1", "k-1:order:compensate:1"}
    if point == "before_send":
        assert all(n == 1 for n in counts.values()), counts
    else:  # sent, then the record was redelivered: the same ids once more at most
        assert all(n <= 2 for n in counts.values()), counts
    s.send(s.event("PaymentRefunded", "k-1"), s.event("OrderCancelled", "k-1"))
    w.wait_saga("k-1", lambda b: b["status"] == "compensated")
    assert set(ids(s.kafka.read(s.topic("compensations"), timeout=2))) == set(counts)


def test_a_row_stored_before_a_crash_reaches_the_changelog_after_the_restart(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    """A crash between storing a decision and its changelog record's delivery left the row in the
    local store only. The restarted worker trusted its store, took the re-read input for a
    duplicate and wrote nothing: the changelog never got the decision, and a worker that took the
    partition over later (restoring from the changelog) had lost it (issue #20: a saga lost under
    SIGKILL). After a stop that was not clean, the local store is restored from the changelog."""
    s = make_scenario(timeout="3s", confirm="600s")  # no second attempt: nothing else writes the saga
    marker = tmp_path / "crashed"
    w = s.worker(CRASH_POINT="before_send", CRASH_MARKER=str(marker)).start()
    s.send(s.event("OrderCreated", "p-1"), s.event("PaymentAuthorized", "p-1"))
    assert w.wait_exit(timeout=30) == 137  # the decision stored, its changelog record with the producer
    w.start()
    assert set(ids(compensations(s, 2, timeout=30))) == {"p-1:payment:compensate:1", "p-1:order:compensate:1"}

    def decided() -> bool:
        rows = s.kafka.read(changelog(s.app_id, "sagas"), timeout=2)
        return any(r["key"] == b"p-1" and saga_rows.data(r["value"])["status"] == "compensating" for r in rows)

    wait_until(decided)


def test_unconfirmed_compensation_is_retried_with_growing_delays_then_needs_manual(scenario: Scenario) -> None:
    s = scenario  # confirm_timeout 2 s, backoff 2, 3 attempts: emits at T, T+2, T+6, gives up at T+14
    w = s.worker().start()
    s.send(s.event("OrderCreated", "u-1"))
    records = compensations(s, 3, timeout=40)
    assert ids(records) == [f"u-1:order:compensate:{n}" for n in (1, 2, 3)]
    times = [r["timestamp"] / 1000 for r in records]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 1.5 <= gaps[0] <= 3.5 and 3.5 <= gaps[1] <= 5.5, gaps
    saga = w.wait_saga("u-1", lambda b: b["status"] == "failed_needs_manual", timeout=30)
    assert saga["steps"][0]["state"] == "compensation_failed" and saga["steps"][0]["comp_attempts"] == 3
    outcomes = s.kafka.read_json(s.topic("outcomes"), lambda m: any(o["type"] == "SagaFailed" for o in m))
    failed = [o for o in outcomes if o["type"] == "SagaFailed"]
    assert len(failed) == 1 and failed[0]["id"] == "u-1:saga:SagaFailed" and failed[0]["steps_not_undone"] == ["order"]
    _, metrics = w.get("/metrics")
    assert 'saga_tracker_sagas_total{outcome="failed_needs_manual",saga_type="order"} 1.0' in metrics
    # What SagaNeedsManualIntervention pages on (once the sweep that found its last deadline is past).
    wait_until(lambda: w.metric("saga_tracker_sagas_stuck") == 1)
    # The service undoes the order after all, after the tracker gave up: the saga is compensated,
    # its outcome sent once, and the stuck gauge (and the alert on it) goes back to nothing.
    s.send(s.event("OrderCancelled", "u-1"))
    done = w.wait_saga("u-1", lambda b: b["status"] == "compensated")
    assert done["history"][-1]["outcome"] == "compensation_confirmed_late"
    outcomes = s.kafka.read_json(s.topic("outcomes"), lambda m: any(o["type"] == "SagaCompensated" for o in m))
    assert [o["id"] for o in outcomes if o["type"] == "SagaCompensated"] == ["u-1:saga:SagaCompensated"]
    wait_until(lambda: w.metric("saga_tracker_sagas_stuck") == 0)


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "never true"
        time.sleep(0.2)


def test_the_same_timeout_record_twice_changes_nothing_the_second_time(make_scenario: Callable[..., Scenario]) -> None:
    s = make_scenario(confirm="60s")  # no legitimate second attempt while we look
    w = s.worker().start()
    s.send(s.event("OrderCreated", "d-1"), s.event("PaymentAuthorized", "d-1"))
    first = compensations(s, 2)
    before = w.wait_saga("d-1", lambda b: b["status"] == "compensating")
    log = s.kafka.read(s.topic("saga-log"), lambda m: any(orjson.loads(r["value"])["kind"] == "timeout" for r in m))
    timeout = next(r for r in log if orjson.loads(r["value"])["kind"] == "timeout")
    s.kafka.produce([(s.topic("saga-log"), timeout["key"], timeout["value"], [])] * 2)
    # The worker applied both copies, as duplicates (before the first confirmation deadline).
    w.wait_metric("saga_tracker_transitions_total", 2, outcome="duplicate", saga_type="order")
    after = w.saga("d-1")
    assert after is not None and after["history"] == before["history"] and after["status"] == "compensating"
    assert ids(s.kafka.read(s.topic("compensations"), timeout=1)) == ids(first)
    _, metrics = w.get("/metrics")
    assert 'saga_tracker_transitions_total{outcome="duplicate",saga_type="order"} 2.0' in metrics
    # The sweeps that fired it spent CPU of their own, never more than their wall time.
    sample = {
        line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.splitlines() if line.startswith("saga_tracker_sweep")
    }
    assert 0 < sample["saga_tracker_sweep_cpu_seconds_total"] <= sample["saga_tracker_sweep_duration_seconds_sum"]


def test_a_backlog_of_completions_does_not_time_out_after_a_restart(scenario: Scenario) -> None:
    s = scenario
    w = s.worker().start()
    t0 = time.time()
    s.send(s.event("OrderCreated", "b-1", at=t0))
    w.wait_saga("b-1", lambda b: b["visible_status"] == "PENDING_PAYMENT")
    w.stop()
    # The services did their work on time while the tracker was down...
    s.send(
        s.event("PaymentAuthorized", "b-1", at=t0 + 1),
        s.event("InventoryReserved", "b-1", at=t0 + 2),
        s.event("ShipmentCreated", "b-1", at=t0 + 3),
    )
    time.sleep(max(0.0, t0 + 9 - time.time()))  # ...and every deadline has passed by the wall clock
    w.start()
    w.wait_saga("b-1", lambda b: b["status"] == "completed", timeout=30)
    w.wait_sweeps(2)  # sweeps ran with every deadline in the past, and fired nothing
    assert s.kafka.read(s.topic("compensations"), timeout=1) == []
    assert all(h["outcome"] != "timeout" for h in w.saga("b-1")["history"])  # type: ignore[index]


def test_a_parked_manual_approval_survives_restarting_every_worker(scenario: Scenario) -> None:
    s = scenario
    w1, w2 = s.worker("w1").start(), s.worker("w2").start()
    s.send(s.event("ApprovalRequested", "p-1", field="request_id"))
    parked = w1.wait_saga("p-1", lambda b: b["visible_status"] == "PENDING_APPROVAL")
    assert parked["deadline"] is None
    w1.stop()
    w2.stop()
    for w in (w1, w2):  # every worker gone, local state too: only the changelog remembers
        shutil.rmtree(w.data, ignore_errors=True)
    time.sleep(3)  # parked for a while, no consumer in the group
    w1.start()
    again = w1.wait_saga("p-1", lambda b: b["visible_status"] == "PENDING_APPROVAL")
    assert again["history"] == parked["history"]
    s.send(s.event("Approved", "p-1", field="request_id"))
    resumed = w1.wait_saga("p-1", lambda b: b["visible_status"] == "PENDING_PROVISIONING")
    assert resumed["deadline"] is not None
    s.send(s.event("Provisioned", "p-1", field="request_id"))
    w1.wait_saga("p-1", lambda b: b["status"] == "completed")
    assert s.kafka.read(s.topic("compensations"), timeout=1) == []
