"""Stream time against the real broker: what a peek at a waiting partition may conclude."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.consumer.fetcher import PartitionRecords
from faust.types import TP

from tests.integration.harness import Kafka, run
from tracker.stream.catchup import Progress

pytestmark = pytest.mark.integration


def test_a_peek_tells_a_record_from_an_empty_offset_from_no_answer(kafka: Kafka) -> None:
    topic = f"peek-{uuid.uuid4().hex[:8]}"
    kafka.create([topic])
    kafka.produce([(topic, b"k", b"v", [])])
    record = next(r for r in kafka.read(topic, lambda rs: bool(rs)))
    p = Progress(SimpleNamespace(conf=SimpleNamespace()), [topic], "log", kafka.bootstrap, lag_threshold=0)
    there, empty, unanswered = TP(topic, record["partition"]), TP(topic, (record["partition"] + 1) % 4), TP(topic, 7)

    async def go() -> tuple[dict[TP, float | None], dict[TP, float | None]]:
        try:
            first = await p.first_timestamps({there: 0, empty: 0, unanswered: 0})
            again = await p.first_timestamps({there: 0, empty: 0, unanswered: 0})
            return first, again
        finally:
            await p.close()

    first, again = run(go())
    assert first[there] == record["timestamp"] / 1000
    # The broker answered "nothing there" (a phantom lag): remembered, it holds nothing back.
    assert first[empty] is None and p.peeked[empty] == (0, None)
    # No answer (here: a partition that does not exist) may hide a completion: nothing fires
    # past it this sweep, and the next sweep asks again.
    assert first[unanswered] == 0.0 and unanswered not in p.peeked
    assert again == first


def test_catch_up_counts_source_partitions_with_the_broker_not_the_consumers_snapshot(kafka: Kafka) -> None:
    """faust's ``consumer.topic_partitions`` is empty on every worker but the group's leader;
    catch-up took it for "no partitions" and ignored every service topic there."""
    topic, missing = f"pc-{uuid.uuid4().hex[:8]}", f"pc-{uuid.uuid4().hex[:8]}-never-created"
    kafka.create([topic], partitions=3)
    app = SimpleNamespace(conf=SimpleNamespace(), consumer=SimpleNamespace(topic_partitions=lambda topic: None))
    p = Progress(app, [topic, missing], "log", kafka.bootstrap, lag_threshold=0)

    async def go() -> list[TP]:
        try:
            return await p.source_partitions()
        finally:
            await p.close()

    assert p.partitions(topic) is None  # not measured yet
    assert run(go()) == [TP(topic, 0), TP(topic, 1), TP(topic, 2)]
    assert (p.partitions(topic), p.partitions(missing)) == (3, 0)
    p.restart()  # a rebalance: partitions may have been added, counted again
    assert p.partitions(topic) is None


def test_a_peek_decodes_one_record_per_partition_not_the_whole_fetch(kafka: Kafka, monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy worker's sweep peeks at every lagging partition: decoding each 64 KiB fetch whole
    cost a tenth of its CPU while it caught up (bench/README.md)."""
    topic = f"peek-{uuid.uuid4().hex[:8]}"
    kafka.create([topic], partitions=1)
    kafka.produce([(topic, b"k", b"v%d" % n, []) for n in range(50)])
    decoded: list[int] = []
    make = PartitionRecords._consumer_record

    def counted(self: Any, tp: Any, record: Any) -> Any:
        decoded.append(record.offset)
        return make(self, tp, record)

    monkeypatch.setattr(PartitionRecords, "_consumer_record", counted)
    p = Progress(SimpleNamespace(conf=SimpleNamespace()), [topic], "log", kafka.bootstrap, lag_threshold=0)

    async def go() -> dict[TP, float | None]:
        try:
            return await p.first_timestamps({TP(topic, 0): 10})
        finally:
            await p.close()

    assert run(go())[TP(topic, 0)] is not None
    assert decoded == [10]
