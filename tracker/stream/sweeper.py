"""Sweeper: find due deadlines and send timeout records into the saga log.

Runs on every worker and reads only the deadline index partitions that worker owns as
active. A deadline index partition is a RocksDB ordered by due time, so a sweep reads
only due rows. The sweeper never writes state: the track agent applies the timeout
record through the machine, which ignores stale or duplicate tokens. While the worker
is behind (see ``progress``), it sends nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import faust
import orjson

from tables import Tables
from tracker.core.events import timeout_event
from tracker.ops.metrics import Metrics
from tracker.stream.catchup import Progress
from tracker.stream.indexes import Indexes, due_bound

log = logging.getLogger(__name__)
LAG_TIMEOUT = 5.0  # seconds a lag measurement may take before the sweep gives up on it


class Sweeper:
    def __init__(
        self,
        app: faust.App,
        tables: Tables,
        saga_log: faust.TopicT,
        progress: Progress,
        metrics: Metrics,
        indexes: Indexes,
        *,
        resend_after: float,
        clock: Callable[[], float] = time.time,
        may_fire: Callable[[], bool] = lambda: True,
    ) -> None:
        self.app, self.tables, self.saga_log, self.progress = app, tables, saga_log, progress
        self.metrics, self.indexes, self.resend_after, self.clock = metrics, indexes, resend_after, clock
        self.may_fire = may_fire
        # (saga id, token) -> when this worker sent its timeout record. Tokens are per saga:
        # two sagas with the same deadline sequence and due millisecond share one.
        self.sent: dict[tuple[str, str], float] = {}
        self.behind = True
        self.behind_logged = 0.0  # monotonic time "still suppressed" was last logged
        self.due: Counter[tuple[str, str]] = Counter()  # deadlines past due at the last sweep, by type and step

    def recovering(self) -> bool:
        app: Any = self.app
        return bool(app.rebalancing or app.in_recovery or not app.tables.recovery.completed.is_set())

    def ready(self) -> bool:
        """Recovered, and every active partition indexed: lists are whole and deadlines swept."""
        return not self.recovering() and all(self.indexes.cached(p) is not None for p in self.active_partitions())

    def active_partitions(self) -> list[int]:
        changelog = self.tables.sagas.changelog_topic.get_topic_name()
        return sorted(tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == changelog)

    async def sweep(self) -> int:
        """One pass; returns how many timeout records were sent."""
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
            log.critical("consumer wedged on %s: exiting to restart", ", ".join(map(str, self.progress.wedged)))
            os._exit(70)
        self.set_behind(behind)
        # The scan and the decisions are this sweep's own CPU; the clock pauses across each
        # send, while other tasks may run on this thread.
        cpu, mark = 0.0, time.thread_time()
        # A rebalance while measuring (a zombie waking up is revoked mid-sweep) voids the answer.
        fire = not behind and self.may_fire() and self.progress.epoch == epoch and not self.recovering()
        now = self.clock()
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
                await self.saga_log.send(key=key, value=value, partition=partition)
                mark = time.thread_time()
                self.sent[sent_key] = now
                sent += 1
        self.sent = {k: at for k, at in self.sent.items() if k in live}
        self.due = due
        if sent:
            self.metrics.timeouts_sent.inc(sent)
        self.metrics.sweep_cpu.inc(cpu + time.thread_time() - mark)
        return sent

    def forget(self, saga_id: str, token: str) -> None:
        """The agent set this timeout aside: send it again as soon as it is still due."""
        self.sent.pop((saga_id, token), None)

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
