"""Sweeper: find due deadlines and send timeout records into the saga log.

Runs on every worker and reads only the deadline index partitions that worker owns as
active. A deadline index partition is a RocksDB ordered by due time, so a sweep reads
only due rows. The sweeper never writes state: the track agent applies the timeout
record through the machine, which ignores stale or duplicate tokens. While the worker
is behind (see ``progress``), it sends nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import faust
import orjson
from faust.types import TP

from tables import Tables, due_bound
from tracker.events import timeout_event
from tracker.metrics import Metrics
from tracker.progress import Progress

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(self, app: faust.App, tables: Tables, saga_log: faust.TopicT, source_names: tuple[str, ...],
                 progress: Progress, metrics: Metrics, *, lag_threshold: int, resend_after: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.app, self.tables, self.saga_log, self.progress = app, tables, saga_log, progress
        self.source_names = frozenset(source_names)
        self.metrics, self.lag_threshold, self.resend_after, self.clock = metrics, lag_threshold, resend_after, clock
        self.sent: dict[str, float] = {}  # token -> when this worker sent its timeout record
        self.behind = True
        self.lags: dict[TP, int] = {}

    def recovering(self) -> bool:
        app: Any = self.app
        return bool(app.rebalancing or app.in_recovery or not app.tables.recovery.completed.is_set())

    async def measure_lag(self) -> dict[TP, int]:
        """Lag of every input partition (service topics and saga log) this worker owns."""
        log_name = self.saga_log.get_topic_name()
        tps = [tp for tp in self.app.consumer.assignment() if tp.topic in self.source_names or tp.topic == log_name]
        if not tps:
            return {}
        highwaters = await self.app.consumer.highwaters(*tps)  # type: ignore[attr-defined]
        lags: dict[TP, int] = {}
        for tp in tps:
            nxt = self.progress.next_offset.get(tp)
            if nxt is None:
                nxt = await self.app.consumer.position(tp)
            lags[tp] = Progress.lag(highwaters.get(tp, 0), nxt)
        return lags

    def active_partitions(self) -> list[int]:
        changelog = self.tables.deadlines.changelog_topic.get_topic_name()
        return sorted(tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == changelog)

    async def sweep(self) -> int:
        """One pass; returns how many timeout records were sent."""
        if self.recovering():
            self.set_behind(True)
            return 0
        try:
            self.lags = await self.measure_lag()
        except Exception as exc:  # a broker hiccup: keep quiet this round rather than guess
            log.warning("cannot measure lag, firing no timeouts this sweep: %r", exc)
            self.set_behind(True)
            return 0
        for tp, lag in self.lags.items():
            self.metrics.input_lag.labels(tp.topic, str(tp.partition)).set(lag)
        if any(lag > self.lag_threshold for lag in self.lags.values()):
            self.set_behind(True)
            return 0
        self.set_behind(False)
        now = self.clock()
        bound = due_bound(now)
        store: Any = self.tables.deadlines.data
        sent = due = 0
        live: set[str] = set()
        for partition in self.active_partitions():
            db = store._dbs.get(partition)  # one RocksDB per partition, keys ordered by due time
            if db is None:
                continue
            for key, value in db.items(from_key=b"0"):
                if key >= bound:
                    break
                row = orjson.loads(value)
                due += 1
                token = row["token"]
                live.add(token)
                if now - self.sent.get(token, -1e18) < self.resend_after:
                    continue  # already sent; the agent has not applied it yet
                record = timeout_event(row["saga_id"], row["saga_type"], token, row["due"])
                await self.saga_log.send(key=row["saga_id"].encode(), value=orjson.dumps(record.to_dict()),
                                         partition=partition)
                self.sent[token] = now
                sent += 1
        self.sent = {t: at for t, at in self.sent.items() if t in live}
        self.metrics.deadlines_due.set(due)
        if sent:
            self.metrics.timeouts_sent.inc(sent)
        return sent

    def set_behind(self, behind: bool) -> None:
        if behind != self.behind:
            log.info("timeouts %s", "suppressed: worker is behind on its input" if behind else "enabled: caught up")
        self.behind = behind
        self.metrics.timeouts_suppressed.set(1 if behind else 0)
