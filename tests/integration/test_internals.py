"""The client fixes in ``tracker.kafka.internals`` against the real broker."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from tests.integration.harness import Kafka, run
from tracker.kafka import internals
from tracker.kafka.admin import ensure_topics

pytestmark = pytest.mark.integration


def test_a_producer_keeps_the_metadata_of_known_topics_when_it_sends_to_a_new_one(kafka: Kafka) -> None:
    """Without the fix the first send to a topic created after start leaves the client
    tracking only that topic, and the next refresh forgets every other one: their batches
    then have no leader and wait forever (the changelog stall seen in CI)."""
    internals.install_client_fixes()
    known, created_later = (f"pm-{uuid.uuid4().hex[:8]}-{n}" for n in ("known", "later"))

    async def go() -> None:
        await ensure_topics(kafka.bootstrap, [known], 4)
        p = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, max_batch_size=1)
        await p.start()  # fetches the metadata of every topic, ``known`` included
        try:
            await p.send_and_wait(known, b"1", key=b"k")
            await ensure_topics(kafka.bootstrap, [created_later], 4)
            await p.send_and_wait(created_later, b"2", key=b"k")
            await p.client.force_metadata_update()
            assert p.client.cluster.partitions_for_topic(known) == {0, 1, 2, 3}
            assert p.client.cluster.partitions_for_topic(created_later) == {0, 1, 2, 3}
            await asyncio.wait_for(p.send_and_wait(known, b"3", key=b"k"), timeout=10)
        finally:
            await p.stop()

    run(go())


def test_seeking_to_committed_rewinds_partitions_committed_at_zero_or_never(kafka: Kafka) -> None:
    """faust drops records it fetched but did not deliver during a rebalance and seeks back to
    the committed offsets; aiokafka skips partitions committed at 0 or never, which then stay
    past records nobody processed (lost completions in the SIGKILL fault scenario)."""
    topic, group = f"seek-{uuid.uuid4().hex[:8]}", f"seek-{uuid.uuid4().hex[:8]}"
    never, zero, later = (TopicPartition(topic, p) for p in range(3))

    async def go() -> None:
        await ensure_topics(kafka.bootstrap, [topic], 3)
        p = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, max_batch_size=1)
        await p.start()
        try:
            for tp in (never, zero, later):
                for n in range(3):
                    await p.send_and_wait(topic, f"{n}".encode(), partition=tp.partition)
        finally:
            await p.stop()
        c = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await c.start()
        try:
            c.assign([never, zero, later])
            await c.commit({zero: OffsetAndMetadata(0, ""), later: OffsetAndMetadata(2, "")})
            await c.seek_to_committed()
            fetched: dict[TopicPartition, int] = {}
            while sum(fetched.values()) < 3 + 3 + 1:  # fetched, never processed: the positions move on
                for tp, records in (await c.getmany(timeout_ms=1000)).items():
                    fetched[tp] = fetched.get(tp, 0) + len(records)
            assert [await c.position(tp) for tp in (never, zero, later)] == [3, 3, 3]
            committed = await internals.seek_all_to_committed(c)
            assert committed == {never: None, zero: 0, later: 2}
            assert [await c.position(tp) for tp in (never, zero, later)] == [0, 0, 2]
        finally:
            await c.stop()

    run(go())


def test_the_livelock_check_skips_a_partition_not_positioned_yet(kafka: Kafka) -> None:
    """Right after an assignment aiokafka has no position for a partition yet and asserts when
    asked for one; faust's livelock timer asked, and its exception ended the worker (exit 1)."""
    internals.install_client_fixes()
    topic = f"live-{uuid.uuid4().hex[:8]}"
    tp, elsewhere = TopicPartition(topic, 0), TopicPartition(topic, 1)

    class Thread:  # what the patched check reads of faust's consumer thread before faust's own code
        def __init__(self, consumer: AIOKafkaConsumer) -> None:
            self.consumer = consumer

        def _ensure_consumer(self) -> AIOKafkaConsumer:
            return self.consumer

    async def go() -> None:
        await ensure_topics(kafka.bootstrap, [topic], 2)
        c = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, enable_auto_commit=False)
        await c.start()
        try:
            c.assign([tp])  # no await since: the fetcher has not reset the position yet
            state = c._fetcher._subscriptions.subscription.assignment.state_value(tp)
            with pytest.raises(AssertionError):
                state.position  # noqa: B018 - what faust's check reads
            assert not internals.positioned(c, tp)
            assert not internals.positioned(c, elsewhere)  # not assigned here at all
            # The guard answers before faust's check, which would assert (and needs a real thread).
            assert AIOKafkaConsumerThread.verify_event_path(Thread(c), 0.0, tp) is None  # type: ignore[arg-type,func-returns-value]
            assert await c.position(tp) == 0
            assert internals.positioned(c, tp)
        finally:
            await c.stop()

    run(go())


def test_a_commit_waits_for_a_record_in_hand() -> None:
    """faust's ``ProducerBuffer.flush`` returns as soon as the buffer looks empty, while a record
    taken from it is still being handed to aiokafka: faust then commits the input offset of a
    changelog record a crash loses (found by the fault harness). The fixed flush waits for it."""
    from faust.transport.producer import ProducerBuffer

    internals.install_client_fixes()

    async def go() -> None:
        handed, release = asyncio.Event(), asyncio.Event()
        order: list[str] = []

        class Channel:
            async def publish_message(self, fut: Any, wait: bool = False) -> None:
                handed.set()
                await release.wait()  # aiokafka's send is slow to take it (a full batch, a metadata wait)
                order.append("handed to aiokafka")

        buffer = ProducerBuffer()
        buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))  # type: ignore[assignment]  # set by faust's Producer
        fut: Any = SimpleNamespace(message=SimpleNamespace(channel=Channel()))
        sending = asyncio.ensure_future(buffer._send_pending(fut))
        await handed.wait()
        assert buffer.size == 0  # taken from the buffer: faust's flush would see nothing to wait for

        async def commit() -> None:
            await buffer.flush()
            order.append("flushed: commit")

        committing = asyncio.ensure_future(commit())
        await asyncio.sleep(0)
        assert not committing.done()
        release.set()
        await asyncio.wait_for(asyncio.gather(sending, committing), timeout=5)
        assert order == ["handed to aiokafka", "flushed: commit"]

    run(go())
