"""``Outgoing`` against the real broker: records handed to faust's producer as whole batches."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.structs import TopicPartition

from tests.integration.harness import Kafka, run
from tracker.kafka.admin import ensure_topics
from tracker.kafka.outgoing import Outgoing
from tracker.kafka.partitioner import Partitioner

pytestmark = pytest.mark.integration


@asynccontextmanager
async def started(kafka: Kafka, tmp_path: Path, batch_size: int, partitions: int) -> AsyncIterator[tuple[faust.App, str]]:
    """A faust app with its producer started, and a fresh topic of ``partitions``."""
    topic = f"outgoing-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka.bootstrap, [topic], partitions)
    app = faust.App(
        topic,
        broker=f"kafka://{kafka.bootstrap}",
        datadir=str(tmp_path / "faust"),
        producer_max_batch_size=batch_size,
        producer_partitioner=Partitioner(),
    )
    producer = await app.maybe_start_producer()
    try:
        yield app, topic
    finally:
        await producer.stop()


async def _read(kafka: Kafka, topic: str, partitions: int, total: int) -> dict[int, list[tuple[int, bytes, bytes]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        out: dict[int, list[tuple[int, bytes, bytes]]] = {p: [] for p in range(partitions)}
        while sum(map(len, out.values())) < total:
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                out[tp.partition].extend((r.offset, r.key, r.value) for r in records)
        return out
    finally:
        await consumer.stop()


@pytest.mark.parametrize("batch_size", [16384, 1])
def test_records_reach_the_broker_in_the_order_sent_each_answered_with_its_own_offset(
    kafka: Kafka, tmp_path: Path, batch_size: int
) -> None:
    """Explicit partitions and keyed records, batches filled past their size, several event-loop
    steps: each partition holds what was sent to it in order, every delivery names the record's
    offset, and a keyed record is where faust's producer would have put it. With batches of one
    byte (the embedded broker's setting) every record is a batch of its own."""
    value = b"v" * 1500  # ten to a 16 KiB batch: most batches fill up and leave on their own

    async def go() -> None:
        async with started(kafka, tmp_path, batch_size, 3) as (app, topic):
            outgoing = Outgoing(app)
            sent: list[tuple[int | None, bytes, Any]] = []
            for n in range(300):
                key = f"k-{n % 17}".encode()
                partition = n % 3 if n % 2 else None
                delivery = await outgoing.send(topic, key, value + str(n).encode(), partition, None, [("n", str(n).encode())])
                sent.append((partition, key, delivery))
                if n % 50 == 49:
                    await asyncio.sleep(0)  # the step ends: what is held leaves
            await outgoing.ship()
            answered = await asyncio.wait_for(asyncio.gather(*(d for _, _, d in sent)), timeout=30)
        stored = await _read(kafka, topic, 3, len(sent))
        for n, ((partition, key, _), meta) in enumerate(zip(sent, answered, strict=True)):
            expected = partition if partition is not None else Partitioner()(key, [0, 1, 2], [0, 1, 2])
            assert (meta.topic, meta.partition) == (topic, expected)
            assert (meta.offset, key, value + str(n).encode()) in stored[expected]
        for partition, records in stored.items():  # in the order sent
            order = [int(v[len(value) :]) for _, _, v in sorted(records)]
            assert order == sorted(order) and len(order) == sum(1 for meta in answered if meta.partition == partition)

    run(go())


@pytest.mark.parametrize("batch_size", [16384, 1])
def test_an_output_waits_for_its_release_and_one_of_a_dropped_partition_is_never_sent(
    kafka: Kafka, tmp_path: Path, batch_size: int
) -> None:
    """A gated output (``after_rows_of``) is in no batch: the producer's flush does not send it.
    ``release`` sends those gated before the mark, in order, but those of a dropped state
    partition, which are answered without leaving; one gated after the mark stays."""

    async def go() -> None:
        async with started(kafka, tmp_path, batch_size, 1) as (app, topic):
            outgoing = Outgoing(app)
            first = await outgoing.send(topic, b"a", b"first", 0, None, None, after_rows_of=0)
            dropped = await outgoing.send(topic, b"b", b"dropped", 0, None, None, after_rows_of=1)
            mark = outgoing.mark()
            later = await outgoing.send(topic, b"c", b"later", 0, None, None, after_rows_of=0)
            plain = await outgoing.send(topic, b"d", b"plain", 0, None, None)  # not an output: held as before
            await outgoing.ship()
            await app.producer.flush()
            assert (await asyncio.wait_for(plain, timeout=30)).offset >= 0
            assert not any(d.done() for d in (first, dropped, later))  # type: ignore[attr-defined]
            assert await outgoing.release(mark, dropped={1}) == 1
            await outgoing.ship()
            assert (await asyncio.wait_for(dropped, timeout=30)) is None
            first_at = (await asyncio.wait_for(first, timeout=30)).offset
            assert not later.done()  # type: ignore[attr-defined]
            assert await outgoing.release(outgoing.mark()) == 0
            await outgoing.ship()
            assert (await asyncio.wait_for(later, timeout=30)).offset == first_at + 1
            stored = await _read(kafka, topic, 1, 3)
            assert [v for _, _, v in sorted(stored[0])] == [b"plain", b"first", b"later"]

    run(go())


def test_a_record_too_large_for_a_request_is_refused_at_once(kafka: Kafka, tmp_path: Path) -> None:
    async def go() -> None:
        async with started(kafka, tmp_path, 16384, 1) as (app, topic):
            too_large = b"x" * (int(app.conf.producer_max_request_size) + 1)
            with pytest.raises(MessageSizeTooLargeError):
                await Outgoing(app).send(topic, b"k", too_large, 0, None, None)
            with pytest.raises(MessageSizeTooLargeError):  # an output too: in its decision, not at its release
                await Outgoing(app).send(topic, b"k", too_large, 0, None, None, after_rows_of=0)

    run(go())


def test_a_sender_waits_while_the_producer_is_behind(kafka: Kafka, tmp_path: Path) -> None:
    """With ``FULL_BYTES`` of closed batches held, the next send hands them over before it returns."""

    async def go() -> None:
        async with started(kafka, tmp_path, 16384, 1) as (app, topic):
            outgoing = Outgoing(app)
            assert outgoing.full_batches == Outgoing.FULL_BYTES // 16384
            outgoing.full_batches = 3
            deliveries = [await outgoing.send(topic, b"k", b"x" * 9000, 0, None, None) for _ in range(3)]
            assert len(outgoing.full) == 2 and outgoing.scheduled  # two full, the third open: all held
            deliveries.append(await outgoing.send(topic, b"k", b"x" * 9000, 0, None, None))  # a third full one
            assert outgoing.full == [] and outgoing.open == {}  # handed over before the send returned
            offsets = [m.offset for m in await asyncio.wait_for(asyncio.gather(*deliveries), timeout=30)]
            assert offsets == list(range(offsets[0], offsets[0] + 4))

    run(go())


def test_a_batch_the_producer_refuses_refuses_every_batch_after_it_in_its_partition() -> None:
    """No record leaves behind one that could not: the records after a refused batch of the
    partition are answered as refused too (the checkpoint or the state cache then exits)."""
    from types import SimpleNamespace

    from aiokafka.errors import KafkaTimeoutError
    from aiokafka.producer.message_accumulator import BatchBuilder

    handed: list[int] = []
    refusals = [KafkaTimeoutError("no room")]  # the first batch of partition 0 only: the next would go

    async def send_batch(batch: Any, topic: str, *, partition: int) -> Any:
        if partition == 0 and refusals:
            raise refusals.pop()
        handed.append(partition)
        done = asyncio.get_running_loop().create_future()
        done.set_result(SimpleNamespace(offset=7, timestamp=-1, timestamp_type=0, log_start_offset=0))
        return done

    aiokafka: Any = SimpleNamespace(create_batch=lambda: BatchBuilder(16384, 0), send_batch=send_batch)
    producer: Any = SimpleNamespace(_ensure_producer=lambda: aiokafka)
    conf = SimpleNamespace(producer_partitioner=Partitioner(), producer_max_request_size=1 << 20, producer_max_batch_size=16384)

    async def go() -> None:
        async def start() -> Any:
            return producer

        app: Any = SimpleNamespace(conf=conf, maybe_start_producer=start)
        outgoing = Outgoing(app)
        first = [await outgoing.send("t", b"k", b"x" * 9000, 0, None, None) for _ in range(3)]  # three batches
        other = await outgoing.send("t", b"k", b"y", 1, None, None)
        await outgoing.ship()
        await asyncio.sleep(0)
        assert all(isinstance(d.exception(), KafkaTimeoutError) for d in first)  # type: ignore[attr-defined]
        assert handed == [1] and (await other).offset == 7

    run(go())
