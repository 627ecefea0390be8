"""The processor context: what a processor may use, handed to it once (Kafka Streams'
``Processor.init(context)``).

A processor (ingest, track, the deadline punctuator, dead letters) never holds the faust app:
it reads the wall clock, sends to a named sink, asks which state partitions are active here
and schedules punctuators through its context. The worker's context is ``FaustContext``;
tests drive the same processors with a fake one whose clock they advance
(``tests/stream/fake_context.py``), so nothing is proven by sleeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import faust
from faust.types import TP

from tracker.kafka.outgoing import Outgoing
from tracker.ops.metrics import Metrics
from tracker.stream.checkpoint import Checkpoint

# Where processors send: the saga log, the outputs by emit kind, dead letters, the shadow topic.
SINKS = ("saga_log", "compensation", "outcome", "decision", "shadow", "dead_letter")

Punctuator = Callable[[], Awaitable[None]]
log = logging.getLogger(__name__)


class Context(Protocol):
    def wall_clock(self) -> float:
        """Epoch seconds now (decisions get time passed in; this is where it comes from)."""
        ...

    async def send(
        self,
        sink: str,
        key: bytes | None,
        value: bytes | None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        after_rows_of: int | None = None,
    ) -> Awaitable[Any] | None:
        """Hand a record to the producer; returns its delivery (awaitable), None if dropped.
        ``after_rows_of``: an output decided for a saga of that state partition, which leaves
        after the rows cached before it (``Outgoing``'s gate, released by the checkpoint)."""
        ...

    def owns(self, partition: int) -> bool:
        """The saga state's ``partition`` is active here (not a standby)."""
        ...

    def active_partitions(self) -> list[int]:
        """The saga state partitions active here, in order."""
        ...

    def recovering(self) -> bool:
        """Rebalancing or recovering tables: state may be partial."""
        ...

    def schedule(self, name: str, interval: float, punctuator: Punctuator) -> None:
        """Run ``punctuator`` every ``interval`` seconds of wall-clock time."""
        ...


class FaustContext:
    """The worker's context: faust's topics as sinks, its assignment, its timers."""

    def __init__(
        self,
        app: faust.App,
        sinks: Mapping[str, faust.TopicT],
        state_changelog: str,
        metrics: Metrics,
        outgoing: Outgoing,
        checkpoint: Checkpoint,
    ) -> None:
        """``outgoing``: where records for faust topics go (whole batches to the producer)."""
        unknown = set(sinks) - set(SINKS)
        if unknown:
            raise ValueError(f"unknown sinks {sorted(unknown)}")
        self.app, self.sinks, self.state_changelog, self.metrics = app, dict(sinks), state_changelog, metrics
        self.outgoing, self.checkpoint = outgoing, checkpoint

    def wall_clock(self) -> float:
        return time.time()

    async def send(
        self,
        sink: str,
        key: bytes | None,
        value: bytes | None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        after_rows_of: int | None = None,
    ) -> Awaitable[Any] | None:
        channel = self.sinks[sink]
        delivery: Awaitable[Any]
        if isinstance(channel, faust.Topic):
            # Straight to the producer in whole batches (``Outgoing``), not through faust's topic,
            # which makes its own message, future and sensor objects per record. The agent tests'
            # sinks are in-memory channels: they go through the channel (their memory store writes
            # every row at once, so an output needs no gate there).
            delivery = await self.outgoing.send(
                channel.get_topic_name(), key, value, partition, None, headers, after_rows_of=after_rows_of
            )
        else:
            delivery = await channel.send(key=key, value=value, headers=headers, partition=partition)
        self.checkpoint.sent(delivery, f"{sink} record")  # the checkpoint fails on anything undelivered
        return delivery

    def owns(self, partition: int) -> bool:
        return bool(self.app.assignor.is_active(TP(self.state_changelog, partition)))

    def active_partitions(self) -> list[int]:
        return sorted(tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == self.state_changelog)

    def recovering(self) -> bool:
        app: Any = self.app
        return bool(app.rebalancing or app.in_recovery or not app.tables.recovery.completed.is_set())

    def in_recovery(self) -> bool:
        """faust is restoring tables from their changelogs (a narrower state than ``recovering``)."""
        return bool(self.app.in_recovery)

    def recovery_remaining(self) -> int:
        """Changelog records left to restore on this worker's active partitions."""
        app: Any = self.app
        return int(app.tables.recovery.active_remaining_total()) if app.in_recovery else 0

    def schedule(self, name: str, interval: float, punctuator: Punctuator) -> None:
        async def punctuate() -> None:
            try:
                await punctuator()
            except Exception:  # a faust timer that raises stops for good: log, count, go on next time
                log.exception("punctuator %s failed", name)
                self.metrics.processing_errors.labels(name).inc()

        punctuate.__name__ = punctuate.__qualname__ = f"punctuate_{name}"  # faust names the timer after it
        self.app.timer(interval)(punctuate)


def state_changelog(table: Any) -> str:
    """The changelog topic of a table: its partitions are the state partitions."""
    return str(table.changelog_topic.get_topic_name())
