"""Replay reads each input partition to its real end, not to the end offset the broker reports,
and leaves what was written after it began to the generation's workers."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from tests.integration.harness import Kafka, run
from tracker.generations.replay import merged
from tracker.kafka import clients

pytestmark = pytest.mark.integration


async def produce_batched(bootstrap: str, topic: str, values: list[bytes], partition: int = 0) -> None:
    """Several records per batch, as a service's librdkafka producer sends them."""
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
    await p.start()
    try:
        await asyncio.gather(*[await p.send(topic, v, partition=partition) for v in values])
    finally:
        await p.stop()


def test_replay_reads_a_batched_partition_to_its_real_end_and_no_further_than_its_start(kafka: Kafka) -> None:
    topic = f"rw-{uuid.uuid4().hex[:8]}"
    kafka.create([topic], partitions=1)
    tp = TopicPartition(topic, 0)

    async def go() -> tuple[list[bytes], dict[TopicPartition, int], int, list[bytes]]:
        await produce_batched(kafka.bootstrap, topic, [f"old-{n}".encode() for n in range(60)])
        consumer = clients.consumer(kafka.bootstrap, purpose="test")
        await consumer.start()
        try:
            consumer.assign([tp])
            reported = (await consumer.end_offsets([tp]))[tp]
            consumer.seek(tp, 0)
            began = time.time()
            await asyncio.sleep(0.05)
            await produce_batched(kafka.bootstrap, topic, [f"live-{n}".encode() for n in range(5)])  # during the replay
            fed: dict[TopicPartition, int] = {}
            got = [r.value async for r in merged(consumer, {tp: (0, reported)}, fed, cutoff=began)]
            consumer.seek(tp, fed[tp])
            rest: list[Any] = []
            while len(rest) < 5:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                rest += [m.value for m in batch.get(tp, [])]
            return got, fed, reported, rest
        finally:
            await consumer.stop()

    got, fed, _reported, rest = run(go())
    assert got == [f"old-{n}".encode() for n in range(60)]  # every record written before it began...
    assert fed == {tp: 60}  # ...and the generation goes on live right after them
    assert rest == [f"live-{n}".encode() for n in range(5)]  # the live ones are left for its workers
    # Tansu reports 1 here (the first offset of the last batch + 1); Apache Kafka reports 60.
    # Either way the replay fed exactly the 60 records written before it began.
