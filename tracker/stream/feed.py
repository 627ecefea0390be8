"""The feed: the services' topics read in fetched batches, straight into the ingest processor.

faust hands its agents one record at a time through its consumer thread, conductor, channel
queue, stream and acknowledgements: ~65 µs of CPU per record before any work (``make
bench-floor``), more than a fair peer spends on the whole of the tracker's work. The feed reads
the same partitions with a plain aiokafka consumer of its own (no group) and gives each fetched
record to ``Ingest.process`` directly; faust keeps everything else: group membership, the
assignment (which worker reads which source partition: co-partitioned with the saga state, as
before), table recovery, standbys, timers, the web server and the saga log's agent.

What keeps each guarantee (also in ``docs/architecture.md``: the path of a service event, the
checkpoint, one writer per saga):

* **Which partitions, from where.** The feed reads exactly the source partitions faust assigned
  to this worker as active (``Group.assigned``), only while the group is not rebalancing or
  recovering (``Group.ready``). After every rebalance, even one that gives back the same
  partitions, it starts again from the group's committed offsets (``Group.committed``): what it
  had read past them is read again. faust's own consumer never fetches these partitions
  (``tracker.kafka.internals.keep_paused``).
* **Offsets: the group's, fenced.** ``positions`` are the next offsets after records applied in
  full. The checkpoint takes them *before* it flushes the state cache and the producer, so every
  record they cover has its rows flushed and its outputs delivered, and only then commits them
  through faust's group member (``Group.commit``): a member whose generation is over (its
  partitions moved while it was frozen) is refused by the broker. Catch-up and the lag gauges
  read the same committed offsets as before.
* **Revocation and stop.** Where faust waits for its streams to be empty (``wait_empty``: a
  revocation begins, or the worker stops, while the partitions' stores are still open), the
  feed stops at the next record, waits for the one in hand and runs the checkpoint
  (``finish``, ``tracker.kafka.internals.after_wait_empty``), then faust's own checkpoint and
  commit follow. A record fetched and not applied is never committed: the next owner reads it
  again. Should rows of applied records be dropped anyway (a store closed first), the
  checkpoint commits none of the feed's offsets and the feed reads again from the group's.
* **One writer per saga, decisions without awaits.** Records reach the same ``Ingest.process`` as
  the agent gave them, one at a time in the event loop, in partition order.
* **Failures.** ``Ingest.process`` never raises (bad input is dead-lettered inside); if it does,
  that is a bug and the worker exits to be restarted with the record uncommitted. A broker error
  (a fetch, the group's offsets) is retried from the group's offsets (``run``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from aiokafka.structs import TopicPartition
from faust.types import TP

from tracker.core.correlation import Record
from tracker.kafka import clients, records
from tracker.stream.context import Context
from tracker.stream.restart import exit_to_restart

log = logging.getLogger(__name__)

IDLE_WAIT = 0.1  # seconds between looks at the group while it rebalances or nothing is assigned
RETRY_WAIT = 1.0  # seconds before reading again after a broker error
YIELD_EVERY = 200  # records applied between two turns of the event loop


class Group(Protocol):
    """What the feed needs of the group member (faust's, ``tracker.stream.group``)."""

    def ready(self) -> bool:
        """Not rebalancing, not recovering, flow not suspended: records may be applied."""
        ...

    def assigned(self) -> frozenset[TP]:
        """The source partitions assigned to this worker as active."""
        ...

    async def committed(self, tps: list[TP]) -> dict[TP, int | None]:
        """The group's committed offset per partition; None where nothing was ever committed."""
        ...

    async def commit(self, offsets: Mapping[TP, int]) -> bool:
        """Commit through the group member; False when the broker refused (generation over)."""
        ...

    async def checkpoint(self) -> None:
        """Run the checkpoint now (``tracker.stream.checkpoint``)."""
        ...


class Source(Protocol):
    async def process(self, record: Record) -> None: ...


class Outputs(Protocol):
    def waiting(self) -> int:
        """Outputs decided and waiting for a checkpoint to send them (``Outgoing``'s gate)."""
        ...


class Processed(Protocol):
    def processed(self, tp: TP, offset: int) -> None: ...


class Consumer(Protocol):
    """The slice of ``AIOKafkaConsumer`` the feed uses."""

    def assign(self, partitions: list[TopicPartition]) -> None: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    async def seek_to_beginning(self, *partitions: TopicPartition) -> Any: ...

    async def seek_to_end(self, *partitions: TopicPartition) -> Any: ...

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None) -> Any: ...


class Feed:
    def __init__(
        self,
        source: Source,
        progress: Processed,
        group: Group,
        *,
        commit_interval: float,
        finish_within: float,
        reset: str = "earliest",
        max_records: int = 2000,
        outputs: Outputs | None = None,
    ) -> None:
        """``commit_interval``: seconds between checkpoints run for the feed (faust's own commit
        runs one only when its agents acknowledged something). ``finish_within``: seconds a
        revocation waits for the record in hand. ``reset``: where a partition the group never
        committed starts (faust's ``consumer_auto_offset_reset``). ``outputs``: decided outputs
        that wait for a checkpoint, whatever decided them (a timeout or an operator's action,
        applied by faust's agent, which may not have acknowledged its record yet)."""
        self.source, self.progress, self.group, self.outputs = source, progress, group, outputs
        self.commit_interval, self.finish_within = commit_interval, finish_within
        self.reset, self.max_records = reset, max_records
        self.epoch = 0  # bumped by every revocation: a batch begun under an older one stops
        self.reading: frozenset[TP] = frozenset()  # assigned to the consumer, for ``read_epoch``
        self.read_epoch = -1
        self.positions: dict[TP, int] = {}  # next offset after the records applied, this epoch
        self.committed: dict[TP, int] = {}  # what the group has, as far as this feed knows
        self.idle = asyncio.Event()  # no record in hand
        self.idle.set()

    def init(self, context: Context) -> None:
        context.schedule("commit", self.commit_interval, self.punctuate)

    async def punctuate(self) -> None:
        """The checkpoint, on the commit interval, when records were applied since the last or
        outputs wait for one: an output leaves within a commit interval of its decision."""
        if self.uncommitted() or (self.outputs is not None and self.outputs.waiting()):
            await self.group.checkpoint()

    async def run(self, consumer: Consumer) -> None:
        """Read and apply until cancelled (the worker's stop). A broker error (a fetch, the
        group's offsets) is retried: what was applied stays applied, what was not is read
        again; one that lasts leaves records waiting, and the stall watch exits the worker
        (``catchup``, ``sweeper``)."""
        while True:
            try:
                progressed = await self.step(consumer)
            except Exception as exc:
                log.warning("feed: %r; trying again in %gs", exc, RETRY_WAIT)
                self.read_epoch = -1  # from the group's offsets again, as after a rebalance
                await asyncio.sleep(RETRY_WAIT)
                continue
            if not progressed:
                await asyncio.sleep(IDLE_WAIT)

    async def step(self, consumer: Consumer) -> bool:
        """One fetch, applied. False when there was nothing to read (rebalancing, nothing
        assigned): the caller waits a little."""
        if not self.group.ready():
            return False
        epoch, wanted = self.epoch, self.group.assigned()
        if self.read_epoch != epoch or wanted != self.reading:
            await self.assign(consumer, wanted, epoch)
            if self.read_epoch != epoch:
                return False
        if not self.reading:
            return False
        batches = await consumer.getmany(timeout_ms=int(IDLE_WAIT * 1000), max_records=self.max_records)
        applied = 0
        for tp, messages in batches.items():
            faust_tp = TP(tp.topic, tp.partition)
            for m in messages:
                applied += 1
                if applied % YIELD_EVERY == 0:
                    # Applying a record rarely awaits anything that suspends (its outputs are held in
                    # batches, ``Outgoing``): let the loop run what waits (held batches leaving, timers,
                    # the API) between records, as a fetch that has records at hand does not.
                    await asyncio.sleep(0)
                # Checked per record: once a revocation or stop begins (``finish``), what this batch
                # holds past that point belongs to whoever owns the partition next.
                if self.epoch != epoch:
                    return True
                self.idle.clear()
                try:
                    await self.source.process(records.from_consumer_record(m))
                except Exception as exc:  # ingest dead-letters what it cannot use: this is a bug
                    exit_to_restart(f"ingest failed on {m.topic}/{m.partition}/{m.offset}: {exc!r}")
                finally:
                    self.idle.set()
                self.positions[faust_tp] = m.offset + 1
                self.progress.processed(faust_tp, m.offset)
        return True

    async def assign(self, consumer: Consumer, wanted: frozenset[TP], epoch: int) -> None:
        """Read ``wanted`` from the group's committed offsets (those never committed: ``reset``)."""
        committed = await self.group.committed(sorted(wanted))
        if self.epoch != epoch or not self.group.ready():
            return  # a rebalance began meanwhile: its assignment is read next time
        parts = {tp: TopicPartition(tp.topic, tp.partition) for tp in wanted}
        consumer.assign(list(parts.values()))
        self.positions, self.committed = {}, {}
        for tp, offset in committed.items():
            if offset is not None:
                consumer.seek(parts[tp], offset)
                self.committed[tp] = offset
        await clients.seek_to_reset(consumer, (parts[tp] for tp, offset in committed.items() if offset is None), self.reset)
        self.reading, self.read_epoch = wanted, epoch
        # Where each partition starts, for the post-mortem of a record applied twice or never.
        starts = ", ".join(f"{tp.topic}/{tp.partition}@{self.reset if o is None else o}" for tp, o in sorted(committed.items()))
        log.info("feed reads %d source partitions: %s", len(wanted), starts or "none")

    # --- the checkpoint's input offsets ----------------------------------------------------------

    def uncommitted(self) -> dict[TP, int]:
        """Positions applied and not yet committed: taken before the checkpoint flushes."""
        return {tp: offset for tp, offset in self.positions.items() if self.committed.get(tp) != offset}

    async def commit(self, offsets: Mapping[TP, int]) -> None:
        """The checkpoint's step 5 for the feed's partitions, after everything was flushed."""
        if not offsets:
            return
        if await self.group.commit(offsets):
            self.committed.update(offsets)
        else:  # the group rebalanced: the next owner reads these records again
            log.info("input offsets of %d partitions not committed: the group has rebalanced", len(offsets))

    def discard(self) -> None:
        """Rows of applied records were lost (their store closed before the checkpoint wrote
        them): commit nothing of what was applied, and read again from the group's offsets."""
        self.epoch += 1
        self.positions = {}

    async def finish(self) -> None:
        """faust waits for its streams to be empty (a revocation begins, or the worker stops),
        its tables still open: stop at the next record, finish the one in hand, and run the
        checkpoint while the generation is still this worker's."""
        self.epoch += 1  # the batch in hand stops at its next record
        try:
            await asyncio.wait_for(self.idle.wait(), self.finish_within)
        except TimeoutError:
            # Its writes could land after the partition moved: never let them.
            exit_to_restart(f"a record in hand did not finish within {self.finish_within:.0f}s of a revocation or stop")
        await self.group.checkpoint()

    async def revoked(self) -> None:
        """A revocation (faust's signal, after its checkpoint): what is assigned next is read
        from the group's offsets, as after ``discard``."""
        self.discard()
