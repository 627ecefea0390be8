"""Demo services: small choreographed services for the shipped sagas.

One service per step (order, payment, inventory, shipping; task, user, notification,
reminder), driven by the saga definitions. Each reacts to the previous step's completion
event by completing its own step, failing it, or stalling (publishing nothing); on a
failure event of a later step it undoes its own work (choreography), and it answers the
tracker's compensation events. Everything is idempotent: a service acts once per saga
and step, and its confirmation of an undo always carries the same event id.

Knobs (``Behaviour``) fail, stall, delay, duplicate and reorder events, and make a
service ignore compensation requests, so every path of the tracker is exercised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tracker.core.definitions import Catalog, SagaDefinition
from tracker.core.machine import iso
from tracker.kafka import clients

log = logging.getLogger("demo.services")


@dataclass(frozen=True)
class Behaviour:
    fail_rate: float = 0.1  # a step's service reports failure
    stall_rate: float = 0.08  # a step's service publishes nothing (the tracker must notice)
    duplicate_rate: float = 0.1  # an event is published twice with the same id
    reorder_rate: float = 0.15  # an event is published late, after the next step's event
    ignore_compensation_rate: float = 0.2  # a compensation request is ignored (tracker re-emits)
    delay: tuple[float, float] = (0.05, 0.6)  # seconds a service takes to act
    reorder_delay: float = 1.5
    # Key records by the saga id (the tracker's partition count: applied where read), or by
    # the event id, as a service keying by its own entity would: a saga's events then land on
    # any partition, each applied where read if its saga's state is here, else forwarded.
    key_by_saga: bool = True
    # Several records per produced batch, as librdkafka and aiokafka send by default. Off by
    # default: the embedded broker then reports end offsets that count batches, not records
    # (shared/BROKER.md), which is what a replay must not trust.
    batching: bool = False


def _nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return out


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            _merge(a[k], v)
        else:
            a[k] = v
    return a


@dataclass
class Services:
    bootstrap: str
    catalog: Catalog
    compensation_topic: str
    behaviour: Behaviour = Behaviour()
    seed: int = 7
    group: str = ""
    acted: set[tuple[str, int]] = field(default_factory=set)  # (saga id, step) a service acted on
    done: dict[str, set[int]] = field(default_factory=dict)  # saga id -> steps completed
    undone: set[tuple[str, int]] = field(default_factory=set)
    sagas: dict[str, str] = field(default_factory=dict)  # saga id -> saga type
    stats: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.group = self.group or f"demo-services-{uuid.uuid4().hex[:8]}"

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        # One record per batch unless asked: the embedded broker's end offsets are only right that way.
        batches = {"linger_ms": 20} if self.behaviour.batching else {"max_batch_size": 1, "linger_ms": 0}
        self.producer = clients.producer(self.bootstrap, purpose="demo-services", **batches)
        await self.producer.start()
        self.consumer = clients.consumer(
            self.bootstrap,
            *self.catalog.topics,
            self.compensation_topic,
            purpose="demo-services",
            enable_auto_commit=True,  # a service like any other: the group's offsets follow it
            group_id=self.group,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        await self.consumer.start()
        self.spawn(self._consume())

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(BaseException):
                await task
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def rng(self, *parts: Any) -> random.Random:
        return random.Random(":".join(map(str, (self.seed, *parts))))

    # --- publishing ------------------------------------------------------------------------

    def event(self, d: SagaDefinition, saga_id: str, event_type: str, event_id: str, step: int) -> dict[str, Any]:
        ref = d.correlation.saga_id[0]
        data = _nested(ref.path[1:] if ref.path[0] == "data" else ref.path, saga_id)
        rng = self.rng(saga_id, "data")
        if d.name.startswith("order"):
            data.update(customer_id=f"c-{rng.randint(1, 50):03d}", amount=round(rng.uniform(5, 500), 2))
        else:
            data.update(user_id=f"u-{rng.randint(1, 20):02d}")
        body = {
            "specversion": "1.0",
            "id": event_id,
            "type": event_type,
            "source": f"/demo/{d.steps[step].name}",
            "time": iso(time.time()),
            "data": data,
        }
        if ref.path[0] != "data":
            body = _merge(body, _nested(ref.path, saga_id))
        return body

    async def publish(self, topic: str, saga_id: str, body: dict[str, Any]) -> None:
        assert self.producer is not None
        value = orjson.dumps(body)
        headers = [("traceparent", f"00-{uuid.uuid5(uuid.NAMESPACE_URL, saga_id).hex}-{uuid.uuid4().hex[:16]}-01".encode())]
        key = saga_id if self.behaviour.key_by_saga else str(body["id"])
        await self.producer.send_and_wait(topic, value, key=key.encode(), headers=headers)
        self.stats[f"published:{body['type']}"] += 1

    def topic_of(self, d: SagaDefinition, step: int) -> str:
        return d.topics[step % len(d.topics)]

    # --- the saga traffic ------------------------------------------------------------------

    async def start_saga(self, d: SagaDefinition, saga_id: str) -> None:
        self.sagas[saga_id] = d.name
        self.acted.add((saga_id, 0))
        self.done.setdefault(saga_id, set()).add(0)
        body = self.event(d, saga_id, d.start, str(uuid.uuid4()), 0)
        await self.publish(self.topic_of(d, 0), saga_id, body)
        self.stats["started"] += 1

    async def act(self, d: SagaDefinition, saga_id: str, step: int) -> None:
        """The service owning ``step`` does its work for this saga (at most once)."""
        if (saga_id, step) in self.acted or step >= len(d.steps):
            return
        self.acted.add((saga_id, step))
        b, rng, spec = self.behaviour, self.rng(saga_id, step), d.steps[step]
        await asyncio.sleep(rng.uniform(*b.delay))
        roll = rng.random()
        if roll < b.stall_rate:
            self.stats[f"stalled:{spec.name}"] += 1
            log.info("%s: %s service stalls (publishes nothing)", saga_id, spec.name)
            return
        if roll < b.stall_rate + b.fail_rate and spec.failed_by:
            body = self.event(d, saga_id, spec.failed_by[0], str(uuid.uuid4()), step)
            log.info("%s: %s service fails (%s)", saga_id, spec.name, body["type"])
            await self.publish(self.topic_of(d, step), saga_id, body)
            return
        self.done.setdefault(saga_id, set()).add(step)
        body = self.event(d, saga_id, spec.completed_by[0], str(uuid.uuid4()), step)
        if rng.random() < b.reorder_rate and step + 1 < len(d.steps):
            # The next service hears of it first: the tracker sees the later event earlier.
            self.stats["reordered"] += 1
            self.spawn(self.act(d, saga_id, step + 1))
            await asyncio.sleep(b.reorder_delay)
        await self.publish(self.topic_of(d, step), saga_id, body)
        if rng.random() < b.duplicate_rate:
            self.stats["duplicated"] += 1
            await self.publish(self.topic_of(d, step), saga_id, body)

    async def on_failure(self, d: SagaDefinition, saga_id: str, failed_step: int) -> None:
        """Choreography: every service that did its part undoes it when a later step fails."""
        for step in sorted(self.done.get(saga_id, ()), reverse=True):
            if step < failed_step:
                self.spawn(self.undo(d, saga_id, step, None))

    async def undo(self, d: SagaDefinition, saga_id: str, step: int, request: dict[str, Any] | None) -> None:
        spec = d.steps[step]
        if spec.compensation is None:
            return
        if (
            request is not None
            and self.rng(saga_id, step, "ignore", request.get("attempt")).random() < self.behaviour.ignore_compensation_rate
        ):
            self.stats["compensation_ignored"] += 1
            log.info("%s: %s service ignores compensation attempt %s", saga_id, spec.name, request.get("attempt"))
            return
        await asyncio.sleep(self.rng(saga_id, step, "undo").uniform(*self.behaviour.delay))
        self.undone.add((saga_id, step))
        # Same id every time: the undo happened once, however often it is confirmed.
        body = self.event(d, saga_id, spec.compensation.confirmed_by[0], f"{saga_id}:{spec.name}:undone", step)
        await self.publish(self.topic_of(d, step), saga_id, body)
        self.stats[f"undone:{spec.name}"] += 1

    async def _consume(self) -> None:
        assert self.consumer is not None
        async for msg in self.consumer:
            try:
                body = orjson.loads(msg.value)
                if msg.topic == self.compensation_topic:
                    self.on_compensation(body)
                else:
                    self.on_event(msg.topic, body)
            except Exception:  # a demo service must not die on one odd message
                log.exception("demo service failed on %s/%s/%s", msg.topic, msg.partition, msg.offset)

    def on_event(self, topic: str, body: dict[str, Any]) -> None:
        d = self.catalog.by_topic_type.get((topic, str(body.get("type"))))
        if d is None:
            return
        ref = d.correlation.saga_id[0]
        node: Any = body
        for part in ref.path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, str):
            return
        role = d.role(body["type"])
        if role and role[0] == "complete" and role[1] + 1 < len(d.steps):
            self.spawn(self.act(d, node, role[1] + 1))
        elif role and role[0] == "fail":
            self.spawn(self.on_failure(d, node, role[1]))

    def on_compensation(self, body: dict[str, Any]) -> None:
        d = self.catalog.current.get(str(body.get("saga_type")))
        if d is None or "step" not in body:
            return
        self.stats["compensation_requests"] += 1
        self.spawn(self.undo(d, str(body["saga_id"]), d.step_index(str(body["step"])), body))


async def generate(services: Services, sagas: int, rate: float, types: list[SagaDefinition], start: int = 0) -> list[str]:
    """Start ``sagas`` sagas, alternating types, ``rate`` per second; return their ids."""
    ids = []
    for n in range(start, start + sagas):
        d = types[n % len(types)]
        saga_id = f"{'order' if d.name.startswith('order') else 'task'}-{services.seed}-{n:04d}"
        await services.start_saga(d, saga_id)
        ids.append(saga_id)
        await asyncio.sleep(1.0 / rate)
    return ids
