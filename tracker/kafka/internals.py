"""The places where the tracker reaches into faust and aiokafka, each fixing a loss or a hang.

Both were found by the tests and hold on Apache Kafka too: they are client-side behaviour.
``apply()`` installs them once per process, before the faust app is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.producer import ProducerBuffer

log = logging.getLogger(__name__)
FLUSH_BOUND = 10.0  # seconds a commit waits for faust's producer buffer to drain


def apply() -> None:
    make_commits_durable()
    keep_producer_metadata()
    rewind_uncommitted_partitions()
    guard_livelock_check()


def make_commits_durable() -> None:
    """Commit an input offset only once every record produced before it is delivered.

    faust commits after flushing its producer buffer, but ``ProducerBuffer.flush`` gives up
    as soon as no message went out for 0.1 s, and does not see the message being handed to
    aiokafka at that moment. A changelog record still in the buffer is then lost by a crash
    although the input offset that produced it is committed, and the saga's state regresses
    on recovery (found by the fault harness: SIGKILL, os._exit, SIGSTOP). This flush waits
    until the buffer is empty and nothing is in hand (bounded, see below); aiokafka's own
    flush, which faust awaits next, then waits for delivery.
    """
    if getattr(ProducerBuffer, "_saga_tracker_durable", False):
        return
    send = ProducerBuffer._send_pending

    async def _send_pending(self: Any, fut: Any) -> None:
        self._saga_tracker_in_hand = getattr(self, "_saga_tracker_in_hand", 0) + 1
        try:
            await send(self, fut)
        finally:
            self._saga_tracker_in_hand -= 1
            self._saga_tracker_moved = time.monotonic()

    async def flush(self: Any) -> None:
        # Bounded: while a rebalance waits on this commit, faust may not hand the buffer to
        # aiokafka at all, so waiting forever would deadlock it. After FLUSH_BOUND the commit
        # goes ahead as faust's would (logged); a broker that takes nothing for longer is
        # handled by the producer watchdog, which exits the worker.
        deadline = time.monotonic() + FLUSH_BOUND
        while self.size or getattr(self, "_saga_tracker_in_hand", 0):
            if time.monotonic() > deadline:
                log.warning("producer buffer not drained after %gs (%d waiting): committing", FLUSH_BOUND, self.size)
                return
            self.message_sent.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.message_sent.wait(), timeout=0.5)

    ProducerBuffer._send_pending = _send_pending  # type: ignore[method-assign]
    ProducerBuffer.flush = flush  # type: ignore[method-assign]
    ProducerBuffer._saga_tracker_durable = True  # type: ignore[attr-defined]


def keep_producer_metadata() -> None:
    """Keep every topic's metadata when a producer starts tracking one more topic.

    An aiokafka client whose set of tracked topics is empty fetches metadata for *all*
    topics. A producer's first send to a topic missing from that snapshot (one created after
    it started: an output topic, a changelog) calls ``add_topic``, which turns "all" into just
    that topic; the next refresh drops every other topic's partitions, their queued batches
    have no leader and wait forever, and faust's producer buffer, sending one record at a
    time, stalls behind them: no changelog write, no commit (seen in CI as a changelog stuck
    behind the table for minutes). Seeding the set with the topics already known keeps "all
    known + the new one". Producers only: a pattern-subscribed consumer relies on "all" to
    see new topics, and its coordinator manages the set itself.
    """
    if getattr(AIOKafkaProducer, "_saga_tracker_keeps_topics", False):
        return
    init = AIOKafkaProducer.__init__

    def producer_init(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        client, add_topic = self.client, self.client.add_topic

        def add(topic: str) -> Any:
            if not client._topics:
                client._topics.update(client.cluster.topics())
            return add_topic(topic)

        client.add_topic = add

    AIOKafkaProducer.__init__ = producer_init  # type: ignore[method-assign]
    AIOKafkaProducer._saga_tracker_keeps_topics = True  # type: ignore[attr-defined]


def rewind_uncommitted_partitions() -> None:
    """Seek *every* input partition back to where the group stands after a rebalance.

    faust drops records it fetched but did not deliver while partitions are reassigned or
    recovered (records of a paused partition, queues cleared, a getmany cut short by a new
    generation) and relies on seeking to the committed offsets afterwards. aiokafka's
    ``seek_to_committed`` skips a partition whose committed offset is 0 or missing, so
    such a partition stays past records nobody processed: never forwarded, never tracked
    (found by the fault harness, SIGKILL every 4 s: completions lost, their steps timed out
    and compensated). Those partitions now go to offset 0, or to the reset policy's end
    when nothing was ever committed. Changelog partitions are left to faust's recovery.
    """
    if getattr(AIOKafkaConsumerThread, "_saga_tracker_rewinds", False):
        return

    async def seek_to_committed(self: Any) -> Mapping[TopicPartition, int | None]:
        consumer = self._ensure_consumer()
        changelogs = set(self.app.tables.changelog_topics)
        reset = str(self.app.conf.consumer_auto_offset_reset)
        return await self.call_thread(seek_all_to_committed, consumer, changelogs, reset)  # type: ignore[no-any-return]

    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed  # type: ignore[method-assign,assignment]
    AIOKafkaConsumerThread._saga_tracker_rewinds = True  # type: ignore[attr-defined]


async def seek_all_to_committed(
    consumer: AIOKafkaConsumer, skip_topics: Collection[str] = (), reset: str = "earliest"
) -> dict[TopicPartition, int | None]:
    """``consumer.seek_to_committed()``, and also seek the partitions it leaves alone: those
    committed at 0 to 0, those never committed by the reset policy."""
    committed: dict[TopicPartition, int | None] = await consumer.seek_to_committed()
    never = []
    for tp, offset in committed.items():
        if tp.topic in skip_topics:
            continue
        if offset == 0:
            consumer.seek(tp, 0)
        elif offset is None or offset < 0:
            never.append(tp)
    if never:
        await (consumer.seek_to_end(*never) if reset == "latest" else consumer.seek_to_beginning(*never))
    return committed


def guard_livelock_check() -> None:
    """Let faust's livelock detector skip a partition aiokafka has not positioned yet.

    Every few seconds faust checks that each assigned partition is still fetched and
    processed, reading its position from aiokafka; right after a rebalance a partition is
    assigned but still being seeked (no position yet), aiokafka's ``position`` asserts, and
    the exception ends faust's timer and the worker with it (exit 1, seen once in a SIGKILL
    fault run). Such a partition has nothing to verify yet; the next check covers it.
    """
    if getattr(AIOKafkaConsumerThread, "_saga_tracker_guards_livelock", False):
        return
    verify = AIOKafkaConsumerThread.verify_event_path

    def verify_event_path(self: Any, now: float, tp: Any) -> None:
        if not positioned(self._ensure_consumer(), TopicPartition(tp.topic, tp.partition)):
            return None
        return verify(self, now, tp)

    AIOKafkaConsumerThread.verify_event_path = verify_event_path  # type: ignore[method-assign]
    AIOKafkaConsumerThread._saga_tracker_guards_livelock = True  # type: ignore[attr-defined]


def positioned(consumer: AIOKafkaConsumer, tp: TopicPartition) -> bool:
    """The consumer has ``tp`` assigned and knows where it reads next."""
    subscription = consumer._fetcher._subscriptions.subscription
    assignment = subscription.assignment if subscription is not None else None
    state = assignment.state_value(tp) if assignment is not None else None
    return state is not None and bool(state.has_valid_position)
