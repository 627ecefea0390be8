"""Core tracker against the real broker: events in -> state in the table, dead letters, recovery, two workers."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

import orjson
import pytest
from rocksdict import AccessType, Options, Rdict

from tables import rows as saga_rows
from tests.integration.harness import Scenario
from tracker.core.state import logical

pytestmark = pytest.mark.integration
FAUST_OFFSET = b"__faust\0offset__"  # faust's row in each partition store: the changelog offset it holds


def latest_table_rows(s: Scenario, table: str, until: Callable[[dict[bytes, dict]], bool]) -> dict[bytes, dict]:
    """The table as its changelog topic has it (writes reach it when faust flushes, on commit)."""

    def latest(records: list[dict]) -> dict[bytes, dict]:
        rows: dict[bytes, dict] = {}
        for r in records:
            if r["value"] is None:
                rows.pop(r["key"], None)
            else:
                rows[r["key"]] = saga_rows.data(r["value"]) if table == "sagas" else orjson.loads(r["value"])
        return rows

    # 60 s: on the embedded broker a producer can lose a topic's metadata and wait out
    # aiokafka's 40 s request timeout before the changelog record goes out (seen once in CI).
    return latest(s.kafka.read(f"{s.app_id}-{table}-changelog", lambda records: until(latest(records)), timeout=60))


def test_events_in_state_in_the_changelog_backed_table(scenario: Scenario) -> None:
    s = scenario
    w = s.worker().start()
    s.send(s.event("OrderCreated", "a-1"), s.event("InventoryReserved", "a-1"))
    # Inventory is recorded before the payment it depends on has arrived.
    w.wait_saga("a-1", lambda b: bool(b["steps"]) and b["steps"][2]["state"] == "done")
    s.send(
        s.event("PaymentAuthorized", "a-1"),
        s.event("PaymentAuthorized", "a-1"),  # duplicate (same id)
        s.event("ShipmentCreated", "a-1"),
        s.event("OrderCreated", "b-1"),
        s.event("PaymentDeclined", "b-1"),
        s.event("OrderCancelled", "b-1"),
    )
    a = w.wait_saga("a-1", lambda b: b["status"] == "completed")
    assert a["visible_status"] == "COMPLETED" and [x["state"] for x in a["steps"]] == ["done"] * 4
    # Four topics are read in no fixed order: shipping may have come early too.
    assert a["counts"]["reordered"] >= 1 and a["steps"][2]["out_of_order"] and not a["steps"][1]["out_of_order"]
    assert a["keys"] == {"order_id": "a-1"}
    history = a["history"]
    # Events may even arrive before the start (then they wait: "early"); the duplicate leaves no trace.
    assert {h["id"] for h in history} == {
        f"a-1:{t}" for t in ("OrderCreated", "InventoryReserved", "PaymentAuthorized", "ShipmentCreated")
    }
    assert [h["outcome"] for h in history].count("started") == 1
    applied = [h for h in history if h["outcome"] in ("completed", "reordered")]
    assert sorted(h["step"] for h in applied) == ["inventory", "payment", "shipping"]
    b = w.wait_saga("b-1", lambda b: b["status"] == "compensated")
    assert [x["state"] for x in b["steps"]] == ["compensated", "failed", "waiting", "waiting"]
    rows = latest_table_rows(
        s,
        "sagas",
        lambda r: b"a-1" in r and b"b-1" in r and r[b"a-1"]["status"] == "completed" and r[b"b-1"]["status"] == "compensated",
    )
    assert rows[b"a-1"]["status"] == "completed" and rows[b"b-1"]["status"] == "compensated"
    outcomes = s.kafka.read_json(s.topic("outcomes"), lambda m: len(m) >= 2)
    assert sorted(o["id"] for o in outcomes) == ["a-1:saga:SagaCompleted", "b-1:saga:SagaCompensated"]
    assert s.kafka.read(s.topic("compensations"), timeout=1) == []  # services compensated b-1 themselves
    status, metrics = w.get("/metrics")
    assert status == 200 and 'saga_tracker_transitions_total{outcome="duplicate",saga_type="order"} 1.0' in metrics
    # The topics are keyed by saga id with the tracker's partition count: applied where read.
    assert 'saga_tracker_routed_events_total{route="here"} 8.0' in metrics
    w.stop()
    # Each partition's store records the offset of its last changelog record, as faust's own
    # table writes do: recovery reads the changelog only after it.
    last: dict[int, int] = {}
    for r in s.kafka.read(f"{s.app_id}-sagas-changelog", timeout=3):
        last[r["partition"]] = max(last.get(r["partition"], -1), r["offset"])
    assert last
    for partition, offset in last.items():
        store = w.data / "v1" / "tables" / f"sagas-{partition}.db"
        db = Rdict(str(store), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            assert db.get(FAUST_OFFSET) == str(offset).encode(), partition
        finally:
            db.close()


def test_unusable_input_goes_to_the_dead_letter_topic_with_its_reason(scenario: Scenario) -> None:
    s = scenario
    w = s.worker(SAGA_TRACKER_MAX_EVENT_BYTES="2000").start()
    orders = s.topic("orders")
    bad = [
        (orders, b"k1", b"\xff\xfenot json", [("h", b"v")]),
        (orders, b"k2", b"[1,2,3]", []),
        (orders, b"k3", orjson.dumps({"id": "x", "type": "OrderCreated", "data": {}}), []),
        (orders, b"k4", orjson.dumps({"id": "y", "type": "OrderTeleported", "data": {"order_id": "z"}}), []),
        (orders, b"k5", orjson.dumps({"type": "OrderCreated", "pad": "x" * 3000, "data": {"order_id": "big"}}), []),
        (orders, b"k6", orjson.dumps({"id": "n", "data": {"order_id": "q"}}), []),
    ]
    s.send(*bad, s.event("OrderCreated", "good-1"))
    w.wait_saga("good-1", lambda b: b["status"] == "running")  # the rest of the traffic is unaffected
    dead = s.kafka.read(s.topic("dead-letter"), lambda m: len(m) >= len(bad))
    by_key = {r["key"]: r for r in dead}
    expected = {
        b"k1": "bad_encoding",
        b"k2": "not_object",
        b"k3": "no_saga_id",
        b"k4": "unknown_event_type",
        b"k5": "oversized",
        b"k6": "no_event_type",
    }
    assert {k: r["headers"]["x-dead-letter-reason"].decode() for k, r in by_key.items()} == expected
    first = by_key[b"k1"]
    assert first["value"] == b"\xff\xfenot json" and first["headers"]["h"] == b"v"  # original bytes and headers
    assert first["headers"]["x-source-topic"].decode() == orders
    assert int(first["headers"]["x-source-offset"]) >= 0 and "x-source-partition" in first["headers"]
    _, metrics = w.get("/metrics")
    for reason in expected.values():
        assert f'saga_tracker_dead_letters_total{{reason="{reason}"}} 1.0' in metrics
    assert w.alive()


def test_restart_with_local_state_deleted_recovers_every_saga_from_the_changelog(scenario: Scenario) -> None:
    s = scenario
    w = s.worker().start()
    events = []
    for n in range(12):
        saga_id = f"r-{n}"
        events.append(s.event("OrderCreated", saga_id))
        if n % 3 >= 1:
            events.append(s.event("PaymentAuthorized", saga_id))
        if n % 3 == 2:
            events += [s.event("InventoryReserved", saga_id), s.event("ShipmentCreated", saga_id)]
    s.send(*events)
    for n in range(12):
        w.wait_saga(
            f"r-{n}",
            lambda b, n=n: (  # type: ignore[misc]
                b["status"] == ("completed" if n % 3 == 2 else "running") and len(b["seen"]) == (4 if n % 3 == 2 else 1 + n % 3)
            ),
        )
    before = {f"r-{n}": w.saga(f"r-{n}") for n in range(12)}
    w.stop()
    changelog = s.kafka.read(f"{s.app_id}-sagas-changelog", timeout=3)
    shutil.rmtree(w.data)
    w.start()
    for saga_id, old in before.items():
        new = w.saga(saga_id)
        assert new is not None, saga_id
        assert old is not None and logical(new) == logical(old)
    # Restored in batches before faust's recovery, which found nothing left to read.
    _, metrics = w.get("/metrics")
    assert f"saga_tracker_changelog_restored_records_total {float(len(changelog))}" in metrics, len(changelog)


def test_two_workers_split_partitions_and_survive_one_stopping(scenario: Scenario) -> None:
    s = scenario
    w1 = s.worker("w1").start()
    w2 = s.worker("w2").start()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        p1, p2 = w1.get("/readyz")[1], w2.get("/readyz")[1]
        if p1.get("active_partitions") and p2.get("active_partitions"):
            break
        time.sleep(0.5)
    assert p1["active_partitions"] and p2["active_partitions"]
    assert sorted(p1["active_partitions"] + p2["active_partitions"]) == [0, 1, 2, 3]
    ids = [f"m-{n}" for n in range(16)]
    s.send(*[s.event("OrderCreated", i) for i in ids], *[s.event("PaymentAuthorized", i) for i in ids])
    for i in ids:  # each worker answers for every saga: the other's are routed to their owner
        w1.wait_saga(i, lambda b: b["visible_status"] == "PENDING_INVENTORY")
        w2.wait_saga(i, lambda b: b["visible_status"] == "PENDING_INVENTORY")
    w2.stop()
    s.send(*[s.event("InventoryReserved", i) for i in ids], *[s.event("ShipmentCreated", i) for i in ids])
    for i in ids:
        b = w1.wait_saga(i, lambda b: b["status"] == "completed", timeout=60)
        assert len(b["seen"]) == 4 and b["counts"].get("late", 0) == 0
