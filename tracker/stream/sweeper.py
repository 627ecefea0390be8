"""Sweeper: the deadline punctuator. Finds due deadlines and sends timeout records into the saga log.

Runs on every worker and reads only the deadline index partitions that worker owns as
active. A deadline index partition is a RocksDB ordered by due time, so a sweep reads
only due rows. The sweeper never writes state: the track agent applies the timeout
record through the machine, which ignores stale or duplicate tokens. While the worker
is behind (see ``progress``), it sends nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

import orjson

from tracker.core.events import timeout_event
from tracker.ops.metrics import Metrics
from tracker.stream.catchup import Progress
from tracker.stream.context import Context
from tracker.stream.indexes import Indexes, due_bound
from tracker.stream.restart import exit_to_restart

log = logging.getLogger(__name__)
LAG_TIMEOUT = 5.0  # seconds a lag measurement may take before the sweep gives up on it


class Sweeper:
    def __init__(
        self,
        progress: Progress,
        metrics: Metrics,
        indexes: Indexes,
        *,
        interval: float,
        resend_after: float,
        may_fire: Callable[[], bool] = lambda: True,
    ) -> None:
        self.progress, self.metrics, self.indexes = progress, metrics, indexes
        self.interval, self.resend_after, self.may_fire = interval, resend_after, may_fire
        self.context: Context | None = None
        # (saga id, token) -> when this worker sent its timeout record. Tokens are per saga:
        # two sagas with the same deadline sequence and due millisecond share one.
        self.sent: dict[tuple[str, str], float] = {}
        self.behind = True
        self.behind_logged = 0.0  # monotonic time "still suppressed" was last logged
        self.due: Counter[tuple[str, str]] = Counter()  # deadlines past due at the last sweep, by type and step

    def init(self, context: Context) -> None:
        """Schedule the sweep on the wall clock (Kafka Streams' ``schedule(WALL_CLOCK_TIME)``)."""
        self.context = context
        context.schedule("sweep", self.interval, self.punctuate)

    async def punctuate(self) -> None:
        with self.metrics.sweep_duration.time():
            await self.sweep()

    def caught_up(self) -> bool:
        return not self.behind

    def resend(self, saga_id: str, token: str) -> None:
        """The track processor set this timeout aside: send it again as soon as it is still due."""
        self.sent.pop((saga_id, token), None)

    def recovering(self) -> bool:
        assert self.context is not None, "init(context) first"
        return self.context.recovering()

    def active_partitions(self) -> list[int]:
        assert self.context is not None, "init(context) first"
        return self.context.active_partitions()

    async def sweep(self) -> int:
        """One pass; returns how many timeout records were sent."""
        assert self.context is not None, "init(context) first"
        if self.recovering():
            self.set_behind(True)
            return 0
        await self.indexes.refresh(self.active_partitions())
        epoch = self.progress.epoch
        try:
            # Bounded: a slow broker request must not stall sweeping (the next sweep retries).
            behind = await asyncio.wait_for(self.progress.behind(), timeout=LAG_TIMEOUT)
        except Exception as exc:  # a broker hiccup: fire nothing this round rather than guess
            log.warning("cannot measure lag, firing no timeouts this sweep: %r", exc)
            behind = True
            await self.progress.close()  # next time from fresh connections
        for tp, lag in self.progress.lags.items():
            self.metrics.input_lag.labels(tp.topic, str(tp.partition)).set(lag)
        if self.progress.wedged:
            # Records wait in partitions this worker owns and it has not moved for a long
            # while: its consumer is wedged (a fetch the broker never answered). Fail loudly;
            # a restart resumes from the committed offsets.
            exit_to_restart(f"consumer wedged on {', '.join(map(str, self.progress.wedged))}")
        self.set_behind(behind)
        # The scan and the decisions are this sweep's own CPU; the clock pauses across each
        # send, while other tasks may run on this thread.
        cpu, mark = 0.0, time.thread_time()
        # A rebalance while measuring (a zombie waking up is revoked mid-sweep) voids the answer.
        fire = not behind and self.may_fire() and self.progress.epoch == epoch and not self.recovering()
        now = self.context.wall_clock()
        bound = due_bound(now)
        if self.progress.watermark is not None:
            # A deadline due after the oldest record still waiting may yet be met by it.
            bound = min(bound, due_bound(self.progress.watermark))
        sent = 0
        due: Counter[tuple[str, str]] = Counter()
        live: set[tuple[str, str]] = set()
        for partition in self.active_partitions():
            index = self.indexes.cached(partition)
            if index is None:  # partitions moved since the refresh: not ours to sweep now
                fire = False
                continue
            for _, row in list(index.due(bound)):  # read before sending: the sends await
                due[(row["saga_type"], row.get("step", ""))] += 1
                if fire and self.progress.epoch != epoch:
                    fire = False  # revoked while sending: these partitions may no longer be ours
                if not fire:
                    continue  # counted as stuck; its completion may be in the backlog, or not ours to decide
                token = row["token"]
                sent_key = (row["saga_id"], token)
                live.add(sent_key)
                if now - self.sent.get(sent_key, -1e18) < self.resend_after:
                    continue  # already sent; the agent has not applied it yet
                record = timeout_event(row["saga_id"], row["saga_type"], token, row["due"])
                key, value = row["saga_id"].encode(), orjson.dumps(record.to_dict())
                cpu += time.thread_time() - mark
                await self.context.send("saga_log", key, value, partition=partition)
                mark = time.thread_time()
                self.sent[sent_key] = now
                sent += 1
        self.sent = {k: at for k, at in self.sent.items() if k in live}
        self.due = due
        if sent:
            self.metrics.timeouts_sent.inc(sent)
        self.metrics.sweep_cpu.inc(cpu + time.thread_time() - mark)
        return sent

    def set_behind(self, behind: bool) -> None:
        now = time.monotonic()
        if behind != self.behind:
            log.info("timeouts %s", "suppressed: worker is behind on its input" if behind else "enabled: caught up")
            self.behind_logged = now
        elif behind and self.progress.why and now - self.behind_logged > 30:
            log.info("timeouts still suppressed, behind on %s", self.progress.why)  # an operator's first question
            self.behind_logged = now
        self.behind = behind
        self.metrics.timeouts_suppressed.set(1 if behind else 0)
