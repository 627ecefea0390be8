"""The batch restore of a partition's saga store from its changelog, against the real broker."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import rocksdict
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from faust.types import TP
from prometheus_client import CollectorRegistry

from tests.integration.harness import Kafka, Scenario, run
from tracker.ops.metrics import Metrics
from tracker.stream.restore import STORE_OFFSET_KEY, Restore

pytestmark = pytest.mark.integration


def store(tmp_path: Path, changelog: str, partitions: list[int]) -> SimpleNamespace:
    """What Restore touches of a faust table: its changelog's name and its partitions' RocksDBs."""
    dbs = {p: rocksdict.Rdict(str(tmp_path / f"p{p}"), options=rocksdict.Options(raw_mode=True)) for p in partitions}
    return SimpleNamespace(
        changelog_topic=SimpleNamespace(get_topic_name=lambda: changelog),
        data=SimpleNamespace(_dbs=dbs),
    )


def produce(kafka: Kafka, topic: str, records: list[tuple[int, bytes, bytes | None]]) -> None:
    async def go() -> None:
        p = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, max_batch_size=1, linger_ms=0)
        await p.start()
        try:
            for partition, key, value in records:
                await p.send_and_wait(topic, value, key=key, partition=partition)
        finally:
            await p.stop()

    run(go())


def test_restore_writes_each_partition_up_to_the_end_faust_measured_and_its_offset(kafka: Kafka, tmp_path: Path) -> None:
    changelog = f"rs-{uuid.uuid4().hex[:8]}-sagas-changelog"
    kafka.create([changelog], partitions=2)
    # Partition 0: a, b, a again, then b deleted (a tombstone), then one record written after
    # faust measured the end. Partition 1: already restored up to offset 1 by an earlier run.
    produce(
        kafka,
        changelog,
        [
            *[(0, b"a", b"a1"), (0, b"b", b"b1"), (0, b"a", b"a2"), (0, b"b", None), (0, b"c", b"late")],
            *[(1, b"x", b"x1"), (1, b"y", b"y1"), (1, b"z", b"z1")],
        ],
    )
    table = store(tmp_path, changelog, [0, 1])
    table.data._dbs[1][b"x"] = b"x1"
    table.data._dbs[1][b"y"] = b"y1"
    changed: list[set[int]] = []
    metrics = Metrics(CollectorRegistry())
    restore = Restore(table, kafka.bootstrap, 1 << 20, metrics, changed.append)  # type: ignore[arg-type]
    tp0, tp1 = TP(changelog, 0), TP(changelog, 1)
    offsets = {tp0: -1, tp1: 1}
    highwaters = {tp0: 3, tp1: 2}  # faust's convention: the last offset, inclusive
    restored = run(restore.run({tp0, tp1}, offsets, highwaters, budget=30))
    assert restored == {0: 4, 1: 1}
    assert offsets == {tp0: 3, tp1: 2}
    p0, p1 = table.data._dbs[0], table.data._dbs[1]
    assert (p0.get(b"a"), p0.get(b"b"), p0.get(b"c")) == (b"a2", None, None)  # never past faust's end
    assert p0.get(STORE_OFFSET_KEY) == b"3" and p1.get(STORE_OFFSET_KEY) == b"2" and p1.get(b"z") == b"z1"
    assert changed == [{0, 1}]
    assert metrics.registry.get_sample_value("saga_tracker_changelog_restored_records_total") == 5.0
    # Up to date: nothing to read, nothing reported changed.
    assert run(restore.run({tp0, tp1}, offsets, highwaters, budget=30)) == {} and changed == [{0, 1}]


def test_a_store_ahead_of_its_changelog_is_wiped_and_restored_from_the_changelog_as_it_is(kafka: Kafka, tmp_path: Path) -> None:
    """The changelog topic was deleted and recreated under a kept volume: the store says it has
    offset 40, the changelog ends at 0. faust would raise ConsistencyError at every restart."""
    changelog = f"rs-{uuid.uuid4().hex[:8]}-sagas-changelog"
    kafka.create([changelog], partitions=2)
    produce(kafka, changelog, [(0, b"kept", b"from-the-changelog")])
    table = store(tmp_path, changelog, [0, 1])
    for p in (0, 1):
        table.data._dbs[p][b"stale"] = b"only-in-the-old-changelog"
        table.data._dbs[p][STORE_OFFSET_KEY] = b"40"
    changed: list[set[int]] = []
    metrics = Metrics(CollectorRegistry())
    restore = Restore(table, kafka.bootstrap, 1 << 20, metrics, changed.append)  # type: ignore[arg-type]
    tp0, tp1 = TP(changelog, 0), TP(changelog, 1)
    offsets = {tp0: 40, tp1: 40}
    highwaters = {tp0: 0, tp1: 40}  # partition 1's changelog still has what its store has
    assert restore.heal({tp0, tp1}, offsets, highwaters) == [0]
    assert offsets == {tp0: -1, tp1: 40} and changed == [{0}]
    assert list(table.data._dbs[0].keys()) == [] and table.data._dbs[1][b"stale"] == b"only-in-the-old-changelog"
    assert metrics.registry.get_sample_value("saga_tracker_store_resets_total") == 1.0
    assert run(restore.run({tp0, tp1}, offsets, highwaters, budget=30)) == {0: 1}
    p0 = table.data._dbs[0]
    assert p0.get(b"kept") == b"from-the-changelog" and p0.get(b"stale") is None and p0.get(STORE_OFFSET_KEY) == b"0"


def test_a_worker_whose_changelog_was_recreated_under_its_volume_comes_back_ready(scenario: Scenario) -> None:
    """An operations mistake that happens on Apache Kafka too: the changelog topic is deleted and
    recreated (here: with one saga's latest row put back) while a worker's volume keeps its
    RocksDB. faust's consistency check would stop the worker at every restart."""
    s = scenario
    w = s.worker(SAGA_TRACKER_STATE_CACHE_ROWS="0").start()  # every state change a changelog record
    s.send(s.event("OrderCreated", "a-1"))
    w.wait_saga("a-1", lambda b: b["visible_status"] == "PENDING_PAYMENT")
    s.send(s.event("PaymentAuthorized", "a-1"))
    w.wait_saga("a-1", lambda b: b["visible_status"] == "PENDING_INVENTORY")
    s.send(s.event("InventoryReserved", "a-1"))
    last = w.wait_saga("a-1", lambda b: b["visible_status"] == "PENDING_SHIPPING")
    w.stop()
    changelog = f"{s.app_id}-sagas-changelog"
    rows = [r for r in s.kafka.read(changelog, timeout=3.0) if r["key"] == b"a-1"]
    assert len(rows) >= 3  # the store has the changelog up to an offset past where the new one ends
    recreate(s.kafka, changelog)
    # Put back from an older backup: the first two rows. The changelog now ends at offset 1, the
    # store has offset 2 or more and a later state of the saga.
    produce(s.kafka, changelog, [(r["partition"], b"a-1", r["value"]) for r in rows[:2]])
    w.start()  # ready: not crash-looping on ConsistencyError
    back = w.wait_saga("a-1", lambda b: True)
    assert back["visible_status"] == "PENDING_INVENTORY"  # the changelog's state, not the wiped store's
    assert back["history"] == last["history"][: len(back["history"])]
    assert w.metric("saga_tracker_store_resets_total") >= 1
    s.send(s.event("InventoryReserved", "a-1", event_id="a-1:again"), s.event("ShipmentCreated", "a-1"))
    w.wait_saga("a-1", lambda b: b["status"] == "completed")


def recreate(kafka: Kafka, topic: str) -> None:
    async def go() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()

    run(go())
    kafka.create([topic])


def test_a_worker_stopped_cleanly_starts_on_its_stores_and_one_killed_restores_them(scenario: Scenario) -> None:
    """The clean stop (``tracker/stream/clean_stop.py``): after SIGTERM the stores are kept, after a
    kill they may hold rows the changelog lacks, so they are restored from it."""
    s = scenario
    w = s.worker().start()
    s.send(s.event("OrderCreated", "c-1"), s.event("PaymentAuthorized", "c-1"))
    w.wait_saga("c-1", lambda b: b["visible_status"] == "PENDING_INVENTORY")
    w.stop()
    w.start()
    assert w.wait_saga("c-1", lambda b: True)["visible_status"] == "PENDING_INVENTORY"
    assert w.metric("saga_tracker_store_resets_total") == 0
    assert w.metric("saga_tracker_changelog_restored_records_total") == 0  # nothing read back
    w.kill()
    w.start()
    assert w.wait_saga("c-1", lambda b: True)["visible_status"] == "PENDING_INVENTORY"
    assert w.metric("saga_tracker_store_resets_total") >= 1
    assert w.metric("saga_tracker_changelog_restored_records_total") >= 1  # the changelog's rows, again
