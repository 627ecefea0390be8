"""Handoff: records go from faust's consumer straight to the tracker's handlers.

faust delivers each record through a channel queue, a stream, an event and an agent before
any code of ours runs; ``python -m bench.floor`` measures that part at ~30 µs of CPU per
record, on top of ~33 µs for faust's consumer itself. The tracker has one handler per topic
and applies one record at a time, so none of it buys anything: this installs, for the
partitions of the ingest and track agents' topics, the per-partition callback faust's
consumer calls with each record (the conductor's, through the single place faust builds
it), which applies the record there and acknowledges it.

What faust's own path gives and this keeps:
- **At-least-once.** A record is tracked as in progress before it is applied and acknowledged
  only once applied, so faust's commit never passes it; one that raises is not acknowledged
  and stops the consumer (the handlers dead-letter what they cannot apply, so that is a bug).
- **One record at a time, in order.** faust's consumer awaits each callback, but gives up on it
  when flow control suspends (a rebalance) and moves on; the record's work is shielded from
  that cancellation so it completes, faust's rebalance waits for its acknowledgement, and the
  next record waits for it too: a saga never has two records in flight.
- **Flow control and producer back-pressure**, as the conductor's callback waits for them, and
  a record fetched before a rebalance is skipped, as faust's stream skips it.

The agents stay declared: they subscribe faust's consumer to their topics, and the agent tests
drive them through faust's ``test_context()``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from tracker.correlation import Record
from tracker.ingest import record_of

log = logging.getLogger(__name__)

Handler = Callable[[Record], Awaitable[Any]]
Processed = Callable[[Any, int], None]  # (tp, offset): the record at offset is done


class Handoff:
    def __init__(self, app: faust.App, processed: Processed) -> None:
        self.app, self.processed = app, processed
        self.handlers: dict[str, Handler] = {}
        self.busy: asyncio.Future[None] | None = None  # the record being applied

    def route(self, topic: faust.TopicT, handler: Handler) -> None:
        """Hand the records of ``topic``'s topics to ``handler`` (never raises: it dead-letters)."""
        for name in topic.topics:
            self.handlers[name] = handler

    def install(self) -> None:
        conductor: Any = self.app.topics
        build = conductor._build_handler

        def build_handler(tp: Any, channels: Any) -> Any:
            handler = self.handlers.get(tp.topic)
            return build(tp, channels) if handler is None else self.callback(handler)

        conductor._build_handler = build_handler

    def callback(self, handler: Handler) -> Callable[[Any], Awaitable[None]]:
        app: Any = self.app
        flow_control = app.flow_control
        acquire_flow_control = flow_control.acquire
        wait_until_producer_ebb = app.producer.buffer.wait_until_ebb
        consumer = app.consumer
        inbound = app.monitor.stream_inbound_time if app.monitor is not None else None

        async def on_message(message: Any) -> None:
            await acquire_flow_control()
            await wait_until_producer_ebb()
            if self.busy is not None and not self.busy.done():
                # The previous record, cut off from faust's wait by a rebalance, is still being
                # applied; this one waits (a cancel here drops it unread, as faust's callback
                # would, and the seek after the rebalance reads it again).
                await asyncio.shield(self.busy)
            if not flow_control.is_active() or message.generation_id != app.consumer_generation_id:
                return  # fetched before a rebalance, as faust's stream skips it: read again after
            message.tracked = True
            consumer.track_message(message)
            self.busy = work = asyncio.ensure_future(apply(message))
            await asyncio.shield(work)

        async def apply(message: Any) -> None:
            if inbound is not None:  # faust's livelock check reads when each partition's stream last took a record
                inbound[message.tp] = time.monotonic()
            record = record_of(message)
            try:
                await handler(record)
            except Exception:
                # A handler dead-letters what it cannot apply: this is a bug. The record stays
                # unacknowledged (faust's rebalance would wait for it forever): exit, and a
                # restart reads it again from the last commit.
                log.critical("handler failed on %s; exiting to restart", record.source, exc_info=True)
                os._exit(70)
            self.processed(message.tp, record.offset)
            consumer.ack(message)

        return on_message
