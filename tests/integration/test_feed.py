"""The feed against the real broker: which partitions it reads, from where, what it commits, and
what a revocation stops. The group is a stand-in (faust's is exercised by every worker test and
by the fault harness); the consumer, topics and records are real."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from faust.types import TP
from prometheus_client import CollectorRegistry

from tests.agents.test_state_cache import cached_changelog
from tests.integration.harness import Kafka, Scenario, run
from tracker.core.correlation import Record
from tracker.kafka import internals
from tracker.kafka.admin import ensure_topics
from tracker.ops.metrics import Metrics
from tracker.stream.checkpoint import Checkpoint
from tracker.stream.feed import Feed

pytestmark = pytest.mark.integration


class Group:
    """faust's group member as the feed sees it, with offsets committed in memory."""

    def __init__(self, assigned: set[TP], committed: dict[TP, int | None]) -> None:
        self.is_ready, self.tps = True, frozenset(assigned)
        self.offsets = dict(committed)
        self.checkpoint_with: Checkpoint | None = None
        self.commits: list[dict[TP, int]] = []

    def ready(self) -> bool:
        return self.is_ready

    def assigned(self) -> frozenset[TP]:
        return self.tps

    async def committed(self, tps: list[TP]) -> dict[TP, int | None]:
        return {tp: self.offsets.get(tp) for tp in tps}

    async def commit(self, offsets: Mapping[TP, int]) -> bool:
        self.commits.append(dict(offsets))
        self.offsets.update(offsets)
        return True

    async def checkpoint(self) -> None:
        assert self.checkpoint_with is not None

        async def flush_producer() -> None:
            return None

        await self.checkpoint_with.commit(flush_producer)


class Source:
    def __init__(self) -> None:
        self.applied: list[tuple[int, int]] = []
        self.on_apply: Any = None

    async def process(self, record: Record) -> None:
        self.applied.append((record.partition, record.offset))
        if self.on_apply is not None:
            self.on_apply(len(self.applied))
        await asyncio.sleep(0)  # an await inside, as a forward to the saga log has


class Processed:
    def __init__(self) -> None:
        self.offsets: dict[TP, int] = {}

    def processed(self, tp: TP, offset: int) -> None:
        self.offsets[tp] = offset + 1


def topic_with(kafka: Kafka, per_partition: int, partitions: int = 2) -> str:
    """``per_partition`` records in each partition (offsets 0 to per_partition - 1)."""
    topic = f"feed-{uuid.uuid4().hex[:8]}"
    kafka.create([topic], partitions)

    async def go() -> None:
        # One record per batch: the embedded broker's end offsets are right only then.
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, max_batch_size=1, linger_ms=0)
        await producer.start()
        try:
            for p in range(partitions):
                for n in range(per_partition):
                    await producer.send_and_wait(topic, b"{}", key=f"k{n}".encode(), partition=p)
        finally:
            await producer.stop()

    run(go())
    return topic


def by_partition(applied: list[tuple[int, int]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for partition, offset in applied:
        out.setdefault(partition, []).append(offset)
    return out


class Waiting:
    """Outputs decided and waiting for a checkpoint (``Outgoing``'s gate), as many as ``n``."""

    def __init__(self) -> None:
        self.n = 0

    def waiting(self) -> int:
        return self.n


async def feed_with(kafka: Kafka, group: Group, source: Source, outputs: Waiting | None = None) -> tuple[Feed, AIOKafkaConsumer]:
    feed = Feed(source, Processed(), group, commit_interval=1.0, finish_within=5.0, outputs=outputs)
    group.checkpoint_with = Checkpoint(cached_changelog()[0], Metrics(CollectorRegistry()), inputs=[feed])
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, enable_auto_commit=False)
    await consumer.start()
    return feed, consumer


async def until(feed: Feed, consumer: AIOKafkaConsumer, done: Any, timeout: float = 20.0) -> None:
    async def go() -> None:
        while not done():
            await feed.step(consumer)

    try:
        await asyncio.wait_for(go(), timeout)
    except TimeoutError:
        raise AssertionError(f"positions {feed.positions}, reading {sorted(feed.reading)} from {feed.committed}") from None


def test_the_feed_reads_its_partitions_from_the_committed_offsets(kafka: Kafka) -> None:
    """Where the group committed, from there; never committed, from the reset policy (earliest);
    a partition assigned to another worker, not at all."""

    topic = topic_with(kafka, 5, partitions=3)
    p0, p1, p2 = (TP(topic, p) for p in range(3))
    group, source, outputs = Group({p0, p1}, {p0: 2, p1: None, p2: 0}), Source(), Waiting()

    async def go() -> None:
        feed, consumer = await feed_with(kafka, group, source, outputs)
        try:
            await until(feed, consumer, lambda: len(source.applied) >= 8)
            await asyncio.sleep(0.3)
            await feed.step(consumer)  # nothing more arrives
        finally:
            await consumer.stop()
        assert by_partition(source.applied) == {0: [2, 3, 4], 1: [0, 1, 2, 3, 4]}
        assert feed.uncommitted() == {p0: 5, p1: 5}
        await feed.punctuate()  # the commit interval: a checkpoint, as faust's would run one
        assert group.commits == [{p0: 5, p1: 5}] and feed.uncommitted() == {}
        await feed.punctuate()  # nothing applied since: no checkpoint, no commit
        assert len(group.commits) == 1
        checkpoint = group.checkpoint_with
        assert checkpoint is not None and checkpoint.commits == 1
        outputs.n = 1  # a timeout's compensation, decided by faust's agent, waits for a checkpoint
        await feed.punctuate()
        assert checkpoint.commits == 2 and len(group.commits) == 1  # sent: nothing of the feed's to commit

    run(go())


def test_a_revocation_stops_the_batch_and_the_next_assignment_starts_at_the_commit(kafka: Kafka) -> None:
    """A revocation begins while a record is in hand: the feed finishes that record, applies
    nothing more of the batch, commits what it applied while the generation is still its own,
    and after the rebalance (the same partition back) reads on from that commit."""
    topic = topic_with(kafka, 6, partitions=1)
    tp = TP(topic, 0)
    group, source = Group({tp}, {}), Source()
    revoking: list[asyncio.Future[None]] = []
    feeds: list[Feed] = []

    async def revocation() -> None:  # faust's: wait for empty streams (the feed finishes), the signal
        await feeds[0].finish()
        await feeds[0].revoked()

    def third(applied: int) -> None:
        if applied == 3 and not revoking:  # the rebalance starts while the third record is in hand
            group.is_ready = False
            revoking.append(asyncio.ensure_future(revocation()))

    source.on_apply = third

    async def go() -> None:
        feed, consumer = await feed_with(kafka, group, source)
        feeds.append(feed)
        try:
            await until(feed, consumer, lambda: bool(revoking))
            await asyncio.wait_for(revoking[0], 5)
            assert by_partition(source.applied) == {0: [0, 1, 2]}  # the batch held all six
            assert group.commits == [{tp: 3}] and feed.positions == {}
            assert not await feed.step(consumer)  # still rebalancing: nothing read
            group.is_ready = True
            await until(feed, consumer, lambda: len(source.applied) >= 6)
        finally:
            await consumer.stop()
        assert by_partition(source.applied) == {0: [0, 1, 2, 3, 4, 5]}

    run(go())


def test_faust_s_wait_for_empty_streams_finishes_the_feed(kafka: Kafka) -> None:
    """faust waits for its streams to be empty as a revocation begins and as the worker stops,
    stores still open, before its checkpoint and commit: the feed's record in hand finishes there,
    nothing more of its batch is applied, and what it applied is committed."""
    topic = topic_with(kafka, 5, partitions=1)
    tp = TP(topic, 0)
    group, source = Group({tp}, {}), Source()
    order: list[str] = []

    class FaustConsumer:
        async def wait_empty(self) -> None:  # faust's: its own streams' records acknowledged
            order.append("faust's streams empty")

    app: Any = type("App", (), {"consumer": FaustConsumer()})()
    waiting: list[asyncio.Future[None]] = []

    async def go() -> None:
        feed, consumer = await feed_with(kafka, group, source)
        internals.after_wait_empty(app, feed.finish)

        def second(applied: int) -> None:
            if applied == 2 and not waiting:  # faust stops while the second record is in hand
                group.is_ready = False
                waiting.append(asyncio.ensure_future(app.consumer.wait_empty()))

        source.on_apply = second
        try:
            await until(feed, consumer, lambda: bool(waiting))
            await asyncio.wait_for(waiting[0], 5)
            order.append(f"committed {group.commits}")
            assert not await feed.step(consumer)
        finally:
            await consumer.stop()
        assert source.applied == [(0, 0), (0, 1)]
        assert order == ["faust's streams empty", f"committed {[{tp: 2}]}"]

    run(go())


def test_records_past_the_commit_are_read_again_after_a_rebalance(kafka: Kafka) -> None:
    """What was applied and not committed when the partitions moved (a crash, a commit the broker
    refused) is read again from the group's offset: at least once."""
    topic = topic_with(kafka, 4, partitions=1)
    tp = TP(topic, 0)
    group, source = Group({tp}, {tp: 1}), Source()

    async def go() -> None:
        feed, consumer = await feed_with(kafka, group, source)
        try:
            await until(feed, consumer, lambda: len(source.applied) >= 3)
            feed.epoch += 1  # a rebalance whose commit did not reach the group
            feed.positions = {}
            await until(feed, consumer, lambda: len(source.applied) >= 6)
        finally:
            await consumer.stop()
        assert source.applied == [(0, 1), (0, 2), (0, 3), (0, 1), (0, 2), (0, 3)]

    run(go())


def test_faust_never_fetches_the_feed_s_partitions(kafka: Kafka) -> None:
    """faust pauses a new assignment and resumes its active partitions after recovery; with the
    feed's partitions kept paused its consumer neither hands them out nor prefetches them."""
    feed_topic, other = f"kp-{uuid.uuid4().hex[:8]}", f"kp-{uuid.uuid4().hex[:8]}"

    class FaustConsumer:  # faust's consumer: its own paused set, and the aiokafka client in its thread
        def __init__(self, client: AIOKafkaConsumer) -> None:
            self._thread = type("Thread", (), {"_consumer": client})()
            self.paused: set[TP] = set()

        def pause_partitions(self, tps: Any) -> None:
            self.paused |= set(tps)

        def resume_partitions(self, tps: Any) -> None:
            self.paused -= set(tps)

    async def go() -> None:
        await ensure_topics(kafka.bootstrap, [feed_topic, other], 1)
        kafka.produce([(feed_topic, b"k", b"1", []), (other, b"k", b"2", [])])
        client = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, enable_auto_commit=False)
        await client.start()
        try:
            tps = [TopicPartition(feed_topic, 0), TopicPartition(other, 0)]
            client.assign(tps)
            await client.seek_to_beginning(*tps)
            consumer = FaustConsumer(client)
            app: Any = type("App", (), {"consumer": consumer})()
            internals.keep_paused(app, [feed_topic])
            assigned = {TP(feed_topic, 0), TP(other, 0)}
            consumer.pause_partitions(assigned)  # a new assignment
            consumer.resume_partitions(assigned)  # its tables recovered
            assert consumer.paused == {TP(feed_topic, 0)}
            assert not internals.fetching(app, TP(feed_topic, 0)) and internals.fetching(app, TP(other, 0))
            fetched: dict[TopicPartition, int] = {}
            for _ in range(10):
                for tp, records in (await client.getmany(timeout_ms=200)).items():
                    fetched[tp] = fetched.get(tp, 0) + len(records)
            assert fetched == {TopicPartition(other, 0): 1}
        finally:
            await client.stop()

    run(go())


def test_a_worker_commits_what_its_feed_applied(scenario: Scenario) -> None:
    """The worker's feed commits through faust's group member: the group's offsets on the
    services' topics reach the end once everything is applied (catch-up and the lag gauges read
    them; a restart starts there)."""
    w = scenario.worker().start()
    scenario.send(*(scenario.event("OrderCreated", f"o-{n}") for n in range(8)))
    scenario.send(*(scenario.event("PaymentAuthorized", f"o-{n}") for n in range(8)))
    w.wait_metric("saga_tracker_events_total", 16, kind="service")

    async def offsets() -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=scenario.kafka.bootstrap)
        probe = AIOKafkaConsumer(bootstrap_servers=scenario.kafka.bootstrap)
        await admin.start()
        await probe.start()
        try:
            tps = [TopicPartition(scenario.topic(t), p) for t in ("orders", "payments") for p in range(4)]
            found = await admin.list_consumer_group_offsets(scenario.app_id, partitions=tps)
            ends = await probe.end_offsets(tps)
            return {tp: found[tp].offset for tp in tps if tp in found and found[tp].offset >= 0}, {
                tp: int(end) for tp, end in ends.items() if end
            }
        finally:
            await admin.close()
            await probe.stop()

    deadline = time.monotonic() + 30
    while True:
        committed, ends = run(offsets())
        if committed == ends or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert ends and committed == ends, (committed, ends, w.tail())


def test_a_broker_error_is_retried_from_the_group_s_offsets(kafka: Kafka, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fetch that fails (the broker away for a moment) neither ends the feed nor skips a
    record: it reads again from the group's offsets."""
    from tracker.stream import feed as feed_module

    monkeypatch.setattr(feed_module, "RETRY_WAIT", 0.01)
    topic = topic_with(kafka, 4, partitions=1)
    tp = TP(topic, 0)
    group, source = Group({tp}, {tp: 1}), Source()

    class Flaky:
        def __init__(self, consumer: AIOKafkaConsumer) -> None:
            self.consumer, self.failed = consumer, False

        def __getattr__(self, name: str) -> Any:
            return getattr(self.consumer, name)

        async def getmany(self, *tps: TopicPartition, timeout_ms: int = 0, max_records: int | None = None) -> Any:
            if len(source.applied) == 2 and not self.failed:
                self.failed = True
                raise ConnectionError("the broker went away")
            return await self.consumer.getmany(*tps, timeout_ms=timeout_ms, max_records=max_records)

    async def go() -> None:
        feed, consumer = await feed_with(kafka, group, source)
        feed.max_records = 2
        flaky = Flaky(consumer)
        running = asyncio.ensure_future(feed.run(flaky))
        try:
            for _ in range(200):
                if len(source.applied) >= 5:
                    break
                await asyncio.sleep(0.05)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await consumer.stop()
        assert flaky.failed
        assert source.applied == [(0, 1), (0, 2), (0, 1), (0, 2), (0, 3)]

    run(go())
