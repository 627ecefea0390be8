"""Generations: which state generation is promoted, and where each one's workers are.

A generation is a complete copy of the tracker's state (its own consumer group, saga log
and changelog topics) built from the same input. Replay builds a new one while the
promoted one keeps serving; ``promote`` switches. The shared, compacted, one-partition
``<app_id>-generations`` topic holds:

- ``active`` -> ``{"generation": N, "at": ...}``: the promoted generation (1 until a promotion);
- ``generation:<N>`` -> how generation N was built (replay window, definitions, shadow);
- ``worker:<N>:<url>`` -> ``{"generation": N, "url": ..., "at": ...}``: heartbeats, so a worker
  of any generation can forward read-model requests to a worker of the promoted one.

Only the promoted generation fires timeouts, emits to the services and records decisions;
the others follow (their would-be outputs go to their shadow topic).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka.structs import TopicPartition

from tracker.kafka import clients
from tracker.kafka.admin import ensure_topics

log = logging.getLogger(__name__)
HEARTBEAT = 5.0  # seconds between a worker's announcements
FOLLOW_EVERY = 2.0  # seconds between reads of what is new in the registry
FRESH = 15.0  # a worker not heard from for longer is not forwarded to
COMPACT = {"cleanup.policy": "compact", "retention.ms": str(7 * 24 * 3600 * 1000)}


@dataclass
class Registry:
    """What the generations topic says, folded record by record (no I/O: testable)."""

    active: int = 1
    builds: dict[int, dict[str, Any]] = field(default_factory=dict)
    workers: dict[int, dict[str, float]] = field(default_factory=dict)  # generation -> url -> last heard

    def fold(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        name = key.decode(errors="replace")
        try:
            body = orjson.loads(value) if value is not None else None
        except orjson.JSONDecodeError:
            log.warning("ignoring a malformed record %r on the generations topic", name)
            return
        if name == "active" and isinstance(body, dict) and isinstance(body.get("generation"), int):
            self.active = body["generation"]
        elif name.startswith("generation:") and isinstance(body, dict):
            with contextlib.suppress(ValueError):
                self.builds[int(name.split(":", 1)[1])] = body
        elif name.startswith("worker:") and isinstance(body, dict):
            gen, url = body.get("generation"), body.get("url")
            if isinstance(gen, int) and isinstance(url, str):
                self.workers.setdefault(gen, {})[url] = float(body.get("at", 0))

    def peer(self, generation: int, now: float, exclude: str = "") -> str | None:
        """The most recently heard worker of a generation, if it was heard lately."""
        heard = [(at, url) for url, at in self.workers.get(generation, {}).items() if url != exclude and now - at < FRESH]
        return max(heard)[1] if heard else None


class Generations:
    """This worker's view of the registry, kept current by a background task."""

    def __init__(
        self, bootstrap: str, topic: str, generation: int, shadow: bool, url: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.bootstrap, self.topic, self.generation, self.shadow, self.url = bootstrap, topic, generation, shadow, url
        self.registry = Registry()
        self.clock = clock
        self.loaded = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def active(self) -> bool:
        """Promoted: fires timeouts, emits to the services, records decisions."""
        return not self.shadow and self.registry.active == self.generation

    def build(self) -> dict[str, Any] | None:
        """How this worker's generation was built (None: no build record read, or none written)."""
        return self.registry.builds.get(self.generation)

    def active_peer(self) -> str | None:
        """A worker of the promoted generation to forward reads to, when this one is not it."""
        if self.active or self.shadow:
            return None
        return self.registry.peer(self.registry.active, self.clock(), exclude=self.url)

    async def start(self, follow: bool = True) -> None:
        if not (follow or self.generation > 1 or self.shadow):
            # A lone generation 1 needs no registry: it is the promoted one (no reader, no
            # heartbeats: SAGA_TRACKER_FOLLOW_GENERATIONS=false where no replay is ever run).
            self.loaded.set()
            return
        await ensure_topics(self.bootstrap, [self.topic], 1, config=COMPACT)
        self._tasks = [asyncio.create_task(self._follow()), asyncio.create_task(self._announce())]
        # Until the registry is read this worker must not act as the promoted one.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.loaded.wait(), timeout=30)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._tasks:  # say goodbye, so nobody forwards here and the generation can be retired
            with contextlib.suppress(Exception):
                await asyncio.wait_for(write(self.bootstrap, self.topic, self._key(), self._body(at=0.0)), timeout=5)

    def _key(self) -> str:
        return f"worker:{self.generation}:{self.url}"

    def _body(self, at: float) -> dict[str, Any]:
        return {"generation": self.generation, "url": self.url, "shadow": self.shadow, "at": at}

    async def _follow(self) -> None:
        """Read what is new every FOLLOW_EVERY seconds with a short-lived consumer (promotions
        are rare: a few seconds' delay is fine, and nothing is held open between reads)."""
        position = 0
        while True:
            try:
                position = await read_from(self.bootstrap, self.topic, position, self._fold)
                self.loaded.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the registry must survive a broker hiccup
                log.warning("reading %s failed, retrying: %r", self.topic, exc)
            await asyncio.sleep(FOLLOW_EVERY)

    def _fold(self, key: bytes | None, value: bytes | None) -> None:
        before = self.registry.active
        self.registry.fold(key, value)
        if self.registry.active != before and self.loaded.is_set():
            log.info("generation %d promoted (this worker: generation %d)", self.registry.active, self.generation)

    async def _announce(self) -> None:
        producer = clients.producer(self.bootstrap, purpose="generations", max_batch_size=1)
        await producer.start()
        try:
            while True:
                with contextlib.suppress(Exception):
                    body = orjson.dumps(self._body(at=self.clock()))
                    await producer.send_and_wait(self.topic, key=self._key().encode(), value=body)
                await asyncio.sleep(HEARTBEAT)
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()


async def read_from(bootstrap: str, topic: str, position: int, fold: Callable[[bytes | None, bytes | None], None]) -> int:
    """Fold every record of the one-partition ``topic`` from ``position`` to its end; returns
    the next position."""
    tp = TopicPartition(topic, 0)
    consumer = clients.consumer(bootstrap, purpose="generations", enable_auto_commit=False, request_timeout_ms=10_000)
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        if position >= end:
            return position
        consumer.seek(tp, position)
        deadline = time.monotonic() + 10
        while position < end and time.monotonic() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=500)
            for msg in batch.get(tp, []):
                fold(msg.key, msg.value)
                position = msg.offset + 1
        return position
    finally:
        await consumer.stop()


async def read_registry(bootstrap: str, topic: str) -> Registry:
    """The registry as it stands now (for the command line)."""
    await ensure_topics(bootstrap, [topic], 1, config=COMPACT)
    registry = Registry()
    await read_from(bootstrap, topic, 0, registry.fold)
    return registry


async def write(bootstrap: str, topic: str, key: str, body: dict[str, Any]) -> None:
    await ensure_topics(bootstrap, [topic], 1, config=COMPACT)
    producer = clients.producer(bootstrap, purpose="generations", max_batch_size=1)
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=key.encode(), value=orjson.dumps(body))
    finally:
        await producer.stop()
