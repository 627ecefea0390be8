"""The batch restore of a partition's saga store from its changelog, against the real broker."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import rocksdict
from aiokafka import AIOKafkaProducer
from faust.types import TP
from prometheus_client import CollectorRegistry

from tests.integration.harness import Kafka, run
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
