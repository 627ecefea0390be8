"""The checkpoint: the one commit protocol, in one place (Quix Streams' ``Checkpoint.commit``,
Kafka Streams' task commit).

Before any input offset is committed, in this order:

1. **Flush the state cache**: every cached saga row goes to its partition's store, then its
   changelog record to the producer (``StateCache.flush``).
2. **Send the outputs, then hand every held record to the producer**: the outputs decided
   before step 1 took its rows waited for them (``Outgoing.release``: decide, record, then send;
   those of rows step 1 dropped are not sent, their input is read again), and go after their
   rows' changelog records; then ``Outgoing.ship`` (records wait in batches per partition until
   the event loop's step ends, ``tracker.kafka.outgoing``) hands over everything held. The
   context reported every output's delivery here (``sent``).
3. **Flush the producer**: faust's producer buffer is drained (bounded, see
   ``tracker.kafka.internals.make_commits_durable``) and aiokafka's flush waits until every record
   handed over is answered by the broker.
4. **Fail on anything undelivered**: an output the broker refused exits the worker to be
   restarted (``exit_to_restart``) before the offset that caused it is committed; the record is
   read again and re-sends the same id. A changelog record the broker refused exits at once,
   when its delivery fails (``StateCache``).
5. **Commit the input offsets**: the feed's (the services' topics, ``tracker.stream.feed``)
   here, through faust's group member, as far as was applied *before* step 1 began, so every
   record they cover has its rows flushed and its outputs delivered; faust's own (the saga
   log's) once this returns (``Consumer._commit_offsets``). Revoked partitions' offsets are never
   committed: the broker refuses a member whose generation is over, and faust drops them.
6. **Record the stores' offsets**: how far each store has its changelog, kept as the broker
   answered each record (only a record that directly follows what the store has counts), is
   written to the store (``StateCache.record_offsets``), where faust's recovery reads it.

The counters tallied since the last checkpoint are added to their Prometheus children first
(``Metrics.flush``; a scrape also adds them before it reads).

faust has no commit hook: ``tracker.kafka.internals.before_commit`` runs ``commit`` where faust's
commit (and its revocation) flushes the producer, before the offsets are written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, Protocol

from tracker.stream.restart import exit_to_restart

log = logging.getLogger(__name__)


class Cache(Protocol):
    async def flush(self) -> set[int]:
        """Write the cached rows; the partitions whose rows were dropped (store closed)."""
        ...

    def record_offsets(self) -> None:
        """Write how far each store has its changelog, as the broker answered."""
        ...


class Held(Protocol):
    def mark(self) -> int:
        """Where the outputs waiting for their rows end now."""
        ...

    async def release(self, mark: int, dropped: Collection[int] = ()) -> int:
        """Send the outputs before ``mark``, but those of ``dropped`` partitions."""
        ...

    async def ship(self) -> None:
        """Hand every held record to the producer."""
        ...


class Tallies(Protocol):
    def flush(self) -> None: ...


class Inputs(Protocol):
    """Input offsets committed here (the feed): taken before the flush, committed after it."""

    def uncommitted(self) -> dict[Any, int]: ...

    async def commit(self, offsets: dict[Any, int]) -> None: ...

    def discard(self) -> None:
        """Rows of applied records were dropped: commit none of them, read them again."""
        ...


class Checkpoint:
    def __init__(self, cache: Cache, tallies: Tallies, inputs: Sequence[Inputs] = (), outgoing: Held | None = None) -> None:
        """``inputs``: whose offsets this checkpoint commits (step 5: the feed); ``outgoing``: the
        records held on their way to the producer (step 2; none: every send hands over at once)."""
        self.cache, self.tallies, self.inputs, self.outgoing = cache, tallies, tuple(inputs), outgoing
        # One checkpoint at a time (faust's commit timer, the feed's, a revocation, catch-up):
        # an older one finishing last would commit offsets behind a newer one's.
        self.running = asyncio.Lock()
        self.pending = 0  # outputs handed to the producer and not yet answered
        self.undelivered: list[str] = []  # outputs the broker refused since the last checkpoint
        self.commits = 0

    def sent(self, delivery: Any, what: str) -> None:
        """An output was handed to the producer; ``delivery`` resolves when the broker answers."""
        add = getattr(delivery, "add_done_callback", None)
        if add is None:  # already answered (a channel in tests, a dropped send)
            return
        self.pending += 1
        add(lambda d: self._answered(d, what))

    def _answered(self, delivery: Any, what: str) -> None:
        self.pending -= 1
        if delivery.cancelled():
            self.undelivered.append(f"{what} (cancelled)")
        elif delivery.exception() is not None:
            self.undelivered.append(f"{what} ({delivery.exception()!r})")

    async def commit(self, flush_producer: Callable[[], Awaitable[None]]) -> None:
        """Steps 1 to 6; faust commits its own input offsets (5) after this returns."""
        async with self.running:
            self.tallies.flush()
            applied = [(inputs, inputs.uncommitted()) for inputs in self.inputs]  # before anything is flushed
            # No await between the mark and the flush taking its rows: an output before the mark has
            # its row in this flush or an earlier one.
            mark = self.outgoing.mark() if self.outgoing is not None else 0
            dropped = await self.cache.flush()  # 1. rows to stores, changelog records to the producer
            if self.outgoing is not None:
                await self.outgoing.release(mark, dropped)  # 2. the outputs those rows decided, after them
                await self.outgoing.ship()  # changelog records and outputs, all with the producer
            await flush_producer()  # 3. buffer drained, every record answered
            if self.undelivered:  # 4. never commit past an output the broker did not take
                exit_to_restart(
                    f"{len(self.undelivered)} output record(s) not delivered, first: {self.undelivered[0]}; "
                    "their input is read again after the restart and re-sends the same ids"
                )
            if dropped:  # rows of applied records never reached a store: their input is read again
                log.warning("rows of partitions %s dropped: the feed's input offsets are not committed", sorted(dropped))
                for inputs, _ in applied:
                    inputs.discard()
            else:
                for inputs, offsets in applied:  # 5. the feed's input offsets
                    await inputs.commit(offsets)
            self.cache.record_offsets()  # 6. how far each store has its changelog
            self.commits += 1
