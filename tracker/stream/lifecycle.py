"""The worker's lifecycle: rebalance handlers, the watchdogs, and the background service.

Each watchdog turns a silent hang into the one exit for a restart (``restart.exit_to_restart``):

* **alive** (every second): a worker whose event loop did not run for longer than its session
  timeout (SIGSTOP, a suspended VM) has lost its partitions; the state cache notices the gap and
  exits before it writes anything stale (``StateCache.alive``);
* **producer** (every 5 s): records wait for the producer and nothing was answered for
  ``stall_timeout`` seconds (a broker that stopped answering): commits and catch-up are blocked
  for good, so exit;
* the deadline punctuator exits when a partition of this worker's is wedged (``sweeper``).

Rebalances: on revocation the feed reads nothing more of what it had (``feed``); on revocation
and on assignment a worker starts a new catch-up (it fires no
timeout until it is done, ``catchup``) and its local indexes are checked against the partitions
it now owns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust

from tracker.generations.registry import Generations
from tracker.kafka import internals
from tracker.stream.backlog import Backlog
from tracker.stream.catchup import Progress
from tracker.stream.context import Context
from tracker.stream.feed import Feed
from tracker.stream.indexes import Indexes
from tracker.stream.restart import exit_to_restart
from tracker.stream.state_cache import StateCache
from tracker.stream.sweeper import Sweeper

log = logging.getLogger(__name__)


class Lifecycle:
    def __init__(
        self,
        app: faust.App,
        feed: Feed,
        progress: Progress,
        indexes: Indexes,
        sweeper: Sweeper,
        state: StateCache,
        generations: Generations,
        backlog: Backlog,
        *,
        stall_timeout: float,
        follow_generations: bool,
    ) -> None:
        self.feed = feed
        self.app, self.progress, self.indexes, self.sweeper, self.state = app, progress, indexes, sweeper, state
        self.generations, self.stall_timeout, self.follow_generations = generations, stall_timeout, follow_generations
        self.backlog = backlog
        self.tasks: set[asyncio.Task[None]] = set()

    def init(self, context: Context) -> None:
        context.schedule("index", 0.25, self.index)
        context.schedule("alive", 1.0, self.alive)
        context.schedule("producer_watchdog", 5.0, self.producer_watchdog)
        self.app.on_partitions_revoked.connect(self.on_revoked)
        self.app.on_partitions_assigned.connect(self.on_assigned)
        lifecycle = self

        @self.app.service
        class Background(faust.Service):  # type: ignore[misc]
            """The generations registry, and the lag clients closed on the way out."""

            async def on_start(self) -> None:
                await lifecycle.generations.start(follow=lifecycle.follow_generations)

            async def on_stop(self) -> None:
                await lifecycle.generations.stop()
                await lifecycle.progress.close()
                lifecycle.indexes.close()

    async def index(self) -> None:
        """Rebuild the local indexes of partitions that moved here, as soon as their saga state
        is recovered (readiness waits for it; the sweep may run only every hour)."""
        if not self.sweeper.recovering():
            await self.indexes.refresh(self.sweeper.active_partitions())

    async def alive(self) -> None:
        """Notice a freeze longer than the session timeout even while no state is written."""
        self.state.alive()

    async def producer_watchdog(self) -> None:
        """Fail loudly rather than hang: records wait and nothing left for ``stall_timeout``."""
        waiting = internals.producer_waiting(self.app) + self.state.unconfirmed
        if not waiting:
            internals.producer_idle(self.app)
            return
        moved = max(internals.producer_moved(self.app), self.state.moved)  # saga state goes to the producer directly
        if self.stall_timeout and time.monotonic() - moved > self.stall_timeout:
            exit_to_restart(f"producer stalled: {waiting} records waiting, none sent for {self.stall_timeout:.0f}s")

    async def backlog_committed(self) -> None:
        """Read the group's committed saga-log offsets (off the rebalance's path): a partition
        committed past its replayed backlog takes live events in place again at once."""
        try:
            own = await self.progress.own_log_partitions()
            self.backlog.committed(await self.progress.group_positions(own))
        except Exception as exc:  # the backlog check then waits for this worker's own progress
            log.info("committed saga-log offsets not read (%r): live events wait behind the saga log until applied", exc)

    async def on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await self.feed.revoked()  # it finished and committed in faust's wait for empty streams
        self.progress.revoked(args[0] if args else kwargs.get("revoked", ()))
        self.indexes.moved()
        self.sweeper.set_behind(True)  # timeout records wait until the new catch-up is done

    async def on_assigned(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        self.progress.restart()
        if self.generations.generation > 1:  # a replayed backlog may have been applied before a restart
            task = asyncio.ensure_future(self.backlog_committed())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        self.indexes.moved()  # kept where the partition stayed and its changelog did not move
        self.sweeper.set_behind(True)
