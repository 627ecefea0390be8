"""Outgoing: the records on their way to the producer, held per topic partition and handed over
as whole batches (aiokafka's public batch API: ``create_batch``, ``send_batch``).

aiokafka's ``send`` costs a coroutine, a metadata check, a partitioner call, an accumulator append
and a future per record, and its sender answers every record's future one by one: measured on
this machine, 26-31 µs of CPU per 1.8 KB record and 9-10 per 300-byte record, against 10-11 and
2.6 when the same records go as batches (bench/README.md, session 18). A worker sends a changelog
record for most sagas it changes and an outcome for each that ends.

``send`` appends the record to its partition's open batch at once (no await once the topic's
partitions are known) and returns the record's own delivery future, answered as aiokafka's would
be (its ``RecordMetadata``, the offset its own). Every held batch, full or still open, is handed
over at the end of the event loop's current step (``ship``, scheduled once per step) and before
every producer flush (the checkpoint's second step, ``tracker.stream.checkpoint``).
A partition's batches are handed over in the order they were started, one hand-over at a time,
so its records reach the broker in the order they were sent, as with ``send``; partitions go side
by side.

A sender waits only when ``FULL_BYTES`` of closed batches are held (the producer is behind), as
aiokafka's own ``send`` waits for a partition's full batch to leave.

**Outputs wait for their sagas' rows** (``after_rows_of``): a decision's output is held apart,
not even in a batch, until the checkpoint has handed over the changelog records of the rows
cached before it (``mark``, then ``release`` once the state cache's flush returns:
``tracker.stream.checkpoint``). So an output never leaves before the state that decided it, and
the row need not be written through, one encode, store write and changelog record per decision
that sends, to keep that order: the saga's row is written once per checkpoint however many of its
decisions sent something. An output whose row was dropped (its partition closed here before the
flush) is not sent: its input is read again by the partition's owner, which decides it again.

Batch sizes are the producer's (``SAGA_TRACKER_PRODUCER_MAX_BATCH_SIZE``). With the embedded
broker's 1 byte (Tansu's end offsets are wrong for batched records; Apache Kafka is not affected)
no two records share a batch, and each goes to aiokafka's ``send`` as before: held, a batch of one
would wait for the hand-over of every other instead of only for its partition's last.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Collection
from functools import partial
from typing import Any

import faust
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import RecordMetadata, TopicPartition

from tracker.kafka import internals

log = logging.getLogger(__name__)

Held = tuple[BatchBuilder, list["asyncio.Future[RecordMetadata]"]]
# An output waiting for its saga's row: the saga's state partition, then ``send``'s arguments.
Headers = list[tuple[str, bytes]] | None
Gated = tuple[int, str, bytes | None, bytes | None, int | None, float | None, Headers, "asyncio.Future[Any]"]


class Outgoing:
    FULL_BYTES = 16 << 20  # closed batches held before a send waits for their hand-over

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self.open: dict[tuple[str, int], Held] = {}  # each partition's batch still taking records
        self.full: list[tuple[tuple[str, int], Held]] = []  # batches closed, in the order they were started
        # Each topic's partitions as the producer's metadata has them, read again after every hand-over.
        self.partitions: dict[str, list[int]] = {}
        conf: Any = app.conf  # faust types its partitioner setting as a method of its settings
        self.partitioner: Any = conf.producer_partitioner or DefaultPartitioner()
        self.max_request_size = int(conf.producer_max_request_size)
        self.handing = asyncio.Lock()  # one hand-over at a time: batches leave in order
        self.scheduled = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.producer: Any = None  # faust's, once started (its start check awaits: not per record)
        self.one_by_one = int(conf.producer_max_batch_size) <= 1  # batches of one record: nothing to hold
        self.full_batches = max(2, self.FULL_BYTES // int(conf.producer_max_batch_size))
        self.gated: deque[Gated] = deque()  # outputs waiting for their sagas' rows, oldest first
        self.gated_ever = 0  # outputs ever gated: what a ``mark`` counts

    async def _producer(self) -> Any:
        if self.producer is None:
            self.producer = await self.app.maybe_start_producer()  # as faust's topic does: started once
        return self.producer

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: list[tuple[str, bytes]] | None,
        *,
        after_rows_of: int | None = None,
    ) -> Awaitable[RecordMetadata]:
        """Hold one record for its partition's batch (faust's ``Producer.send`` signature; batches
        of one record: aiokafka's ``send``); returns its delivery. ``partition`` None: by key, as
        the producer's partitioner places it. Raises as aiokafka's ``send`` does for a record
        larger than a request may be. ``after_rows_of``: an output decided for a saga of that
        state partition, held until its row is with the producer (``release``)."""
        if after_rows_of is not None:
            self._fits(key, value, headers or [])  # refused now, in the decision, as an output sent at once is
            gate: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            # Stamped when decided, not when released: consumers see when the tracker decided it.
            at = time.time() if timestamp is None else timestamp
            self.gated.append((after_rows_of, topic, key, value, partition, at, headers, gate))
            self.gated_ever += 1
            return gate
        return await self._send(topic, key, value, partition, timestamp, headers, None)

    def waiting(self) -> int:
        """Outputs gated and not yet released."""
        return len(self.gated)

    def mark(self) -> int:
        """Where the outputs gated so far end: taken when the state cache's flush takes its rows,
        with no await in between, so every output before it has its row in that flush or an
        earlier one."""
        return self.gated_ever

    async def release(self, mark: int, dropped: Collection[int] = ()) -> int:
        """Send the outputs gated before ``mark`` (their rows' changelog records are with the
        producer), in the order they were decided; those of a ``dropped`` state partition are
        answered without being sent. Returns how many were not sent."""
        unsent = 0
        for _ in range(len(self.gated) - (self.gated_ever - mark)):
            of, topic, key, value, partition, timestamp, headers, gate = self.gated.popleft()
            if of in dropped:
                unsent += 1
                gate.set_result(None)  # not refused: its input is read again and decided again
                continue
            try:
                await self._send(topic, key, value, partition, timestamp, headers, gate)
            except Exception as exc:  # the producer's metadata not to be had: answered as refused (a restart)
                if not gate.done():
                    gate.set_exception(exc)
        if unsent:
            log.info("%d output(s) not sent: their rows were dropped with their partitions", unsent)
        return unsent

    async def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: list[tuple[str, bytes]] | None,
        delivery: asyncio.Future[Any] | None,
    ) -> Awaitable[RecordMetadata]:
        """``send``, its delivery answered through ``delivery`` when given (a gated output's)."""
        producer = self.producer if self.producer is not None else await self._producer()
        batches = internals.aiokafka_producer(producer)
        millis = None if timestamp is None else int(timestamp * 1000)
        if self.one_by_one:
            sent = await batches.send(topic, value, key=key, partition=partition, timestamp_ms=millis, headers=headers)
            if delivery is None:
                return sent  # type: ignore[no-any-return]
            sent.add_done_callback(partial(_pass_on, delivery))
            return delivery
        if partition is None:  # as aiokafka's ``send`` places it: the producer's partitioner
            parts = self.partitions.get(topic)
            if parts is None:
                parts = self.partitions[topic] = list(await batches.partitions_for(topic))
            partition = self.partitioner(key, parts, parts)
        headers = headers or []
        self._fits(key, value, headers)
        at = (topic, partition)
        held = self.open.get(at)
        if held is None or held[0].append(timestamp=millis, key=key, value=value, headers=headers) is None:
            if held is not None:  # full: it leaves before the batch this record starts
                self.full.append((at, self.open.pop(at)))
            held = self.open[at] = (batches.create_batch(), [])
            held[0].append(timestamp=millis, key=key, value=value, headers=headers)  # a batch takes its first record
        if delivery is None:
            delivery = asyncio.get_running_loop().create_future()
        held[1].append(delivery)
        if len(self.full) >= self.full_batches:
            # The producer is behind (aiokafka takes a partition's next batch once the one before
            # has left): the sender waits, as aiokafka's ``send`` would, instead of piling up batches.
            await self.ship()
        elif not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._ship_soon)
        return delivery

    def _fits(self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
        if size > self.max_request_size:
            raise MessageSizeTooLargeError(f"a record of {size} bytes, more than a request may hold")

    def _ship_soon(self) -> None:
        self.scheduled = False
        task = asyncio.ensure_future(self.ship())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def ship(self) -> None:
        """Hand every held batch to the producer; returns once they are with it. A partition's
        batches go in the order they were started; the partitions side by side (aiokafka takes a
        partition's next batch once the one before has left for the broker)."""
        async with self.handing:
            leaving: dict[tuple[str, int], list[Held]] = {}
            for at, held in [*self.full, *self.open.items()]:
                leaving.setdefault(at, []).append(held)
            self.full, self.open = [], {}
            self.partitions = {}  # metadata may have changed: read again on the next send
            if leaving:
                batches = internals.aiokafka_producer(await self._producer())
                await asyncio.gather(
                    *(_hand_over(batches, topic, partition, held) for (topic, partition), held in leaving.items())
                )


async def _hand_over(batches: Any, topic: str, partition: int, held: list[Held]) -> None:
    """One partition's batches to the producer, in order. One the producer refuses is answered as a
    refused record (the checkpoint or the state cache exits the worker), and so is every batch
    after it: none leaves behind a gap."""
    for n, (batch, deliveries) in enumerate(held):
        batch.close()
        try:
            sent = await batches.send_batch(batch, topic, partition=partition)
        except Exception as exc:
            refused = [d for _, later in held[n:] for d in later]
            log.error("%d record(s) for %s/%d not handed over: %r", len(refused), topic, partition, exc)
            for delivery in refused:
                if not delivery.done():
                    delivery.set_exception(exc)
            return
        sent.add_done_callback(partial(_answer, topic, partition, deliveries))


def _answer(topic: str, partition: int, deliveries: list[asyncio.Future[RecordMetadata]], sent: asyncio.Future[Any]) -> None:
    """Answer each record of a batch as the broker answered the batch: its offset is the batch's
    first plus its place in it."""
    if sent.cancelled() or sent.exception() is not None:
        for delivery in deliveries:
            if not delivery.done():
                if sent.cancelled():
                    delivery.cancel()
                else:
                    delivery.set_exception(sent.exception())  # type: ignore[arg-type]
        return
    first: RecordMetadata = sent.result()
    tp = TopicPartition(topic, partition)
    for n, delivery in enumerate(deliveries):
        if not delivery.done():
            delivery.set_result(
                RecordMetadata(
                    topic, partition, tp, first.offset + n, first.timestamp, first.timestamp_type, first.log_start_offset
                )
            )


def _pass_on(gate: asyncio.Future[Any], sent: asyncio.Future[Any]) -> None:
    """A gated output sent one by one: aiokafka's answer, passed on to the delivery it was given."""
    if gate.done():
        return
    if sent.cancelled():
        gate.cancel()
    elif sent.exception() is not None:
        gate.set_exception(sent.exception())  # type: ignore[arg-type]
    else:
        gate.set_result(sent.result())
