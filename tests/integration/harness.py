"""Real broker, real workers: helpers for the integration tests (no mocks)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from tracker.demo.runner import get_json, wait_ready
from tracker.kafka.admin import ensure_topics
from tracker.kafka.broker import free_port

ROOT = Path(__file__).resolve().parents[2]

DEFINITIONS = """
sagas:
  - name: order
    topics: [{p}orders, {p}payments, {p}inventory, {p}shipping]
    start: OrderCreated
    correlation: {{saga_id: data.order_id}}
    business_keys: {{order_id: data.order_id}}
    compensation_policy: {{confirm_timeout: {confirm}, max_attempts: 3, backoff: 2}}
    steps:
      - {{name: order, completed_by: OrderCreated, compensation: {{emit: CancelOrder, confirmed_by: OrderCancelled}}}}
      - {{name: payment, completed_by: PaymentAuthorized, failed_by: PaymentDeclined, timeout: {timeout},
         compensation: {{emit: RefundPayment, confirmed_by: PaymentRefunded}}}}
      - {{name: inventory, completed_by: InventoryReserved, failed_by: OutOfStock, timeout: {timeout},
         compensation: {{emit: ReleaseStock, confirmed_by: StockReleased}}}}
      - {{name: shipping, completed_by: ShipmentCreated, failed_by: ShipmentFailed, timeout: {timeout},
         compensation: {{emit: CancelShipment, confirmed_by: ShipmentCancelled}}}}
  - name: approval
    topics: [{p}approvals]
    start: ApprovalRequested
    correlation: {{saga_id: data.request_id}}
    compensation_policy: {{confirm_timeout: {confirm}, max_attempts: 3, backoff: 2}}
    steps:
      - {{name: request, completed_by: ApprovalRequested,
         compensation: {{emit: WithdrawRequest, confirmed_by: RequestWithdrawn}}}}
      - {{name: approval, completed_by: Approved, failed_by: Rejected, timeout: none,
         compensation: {{emit: RevokeApproval, confirmed_by: ApprovalRevoked}}}}
      - {{name: provisioning, completed_by: Provisioned, timeout: {timeout}, compensation: none}}
"""

TOPIC_OF = {
    "OrderCreated": "orders",
    "OrderCancelled": "orders",
    "PaymentAuthorized": "payments",
    "PaymentDeclined": "payments",
    "PaymentRefunded": "payments",
    "InventoryReserved": "inventory",
    "OutOfStock": "inventory",
    "StockReleased": "inventory",
    "ShipmentCreated": "shipping",
    "ShipmentFailed": "shipping",
    "ShipmentCancelled": "shipping",
    "ApprovalRequested": "approvals",
    "Approved": "approvals",
    "Rejected": "approvals",
    "Provisioned": "approvals",
}


def run(coro: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # A loop already runs in this thread (Playwright's sync API): use a thread of our own.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Kafka:
    """Plain aiokafka clients against the session's broker."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def create(self, names: list[str], partitions: int = 4) -> None:
        run(ensure_topics(self.bootstrap, names, partitions))

    def produce(
        self,
        records: Sequence[tuple[str, bytes | None, bytes | None, Sequence[tuple[str, bytes]]]],
        max_request_size: int = 1_048_576,
    ) -> None:
        """``max_request_size``: raised, as a service producing large records would (aiokafka's default otherwise)."""

        async def go() -> None:
            # One record per batch: the embedded broker's end offsets are right only then.
            p = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, max_batch_size=1, linger_ms=0, max_request_size=max_request_size
            )
            await p.start()
            try:
                for topic, key, value, headers in records:
                    await p.send_and_wait(topic, value, key=key, headers=headers)
            finally:
                await p.stop()

        run(go())

    def read(
        self,
        topic: str,
        until: Callable[[list[dict[str, Any]]], bool] = lambda m: False,
        timeout: float = 5.0,
        partitions: int = 4,
    ) -> list[dict[str, Any]]:
        """Every record of ``topic`` from the beginning, until ``until(records)`` or ``timeout``.

        Waits of more than 10 s start over with a fresh consumer every 10 s: a fetch session
        to the embedded broker can stop returning a partition's new records.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            records = self._read(topic, until, min(left, 10.0), partitions)
            if until(records) or left <= 10.0:
                return records

    def _read(
        self, topic: str, until: Callable[[list[dict[str, Any]]], bool], timeout: float, partitions: int
    ) -> list[dict[str, Any]]:
        async def go() -> list[dict[str, Any]]:
            c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
            await c.start()
            out: list[dict[str, Any]] = []
            try:
                # Every topic here has a known partition count: no need to trust broker metadata.
                tps = [TopicPartition(topic, p) for p in range(partitions)]
                c.assign(tps)
                await c.seek_to_beginning(*tps)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    batch = await c.getmany(timeout_ms=200)
                    for msgs in batch.values():
                        for m in msgs:
                            out.append(
                                {
                                    "key": m.key,
                                    "value": m.value,
                                    "headers": dict(m.headers or []),
                                    "partition": m.partition,
                                    "offset": m.offset,
                                    "timestamp": m.timestamp,
                                }
                            )
                    if until(out):
                        break
            finally:
                await c.stop()
            return out

        return run(go())

    def read_json(
        self, topic: str, until: Callable[[list[dict[str, Any]]], bool] = lambda m: False, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        return [
            orjson.loads(r["value"]) for r in self.read(topic, lambda rs: until([orjson.loads(r["value"]) for r in rs]), timeout)
        ]


class Scenario:
    """One test's world: its own app id, topics, definitions and data directories."""

    def __init__(self, kafka: Kafka, tmp: Path, broker_url: str, *, timeout: str = "4s", confirm: str = "2s") -> None:
        self.kafka, self.tmp, self.broker_url = kafka, tmp, broker_url
        self.id = uuid.uuid4().hex[:8]
        self.prefix = f"t{self.id}-"
        self.app_id = f"it-{self.id}"
        self.definitions = tmp / "sagas.yaml"
        self.definitions.write_text(DEFINITIONS.format(p=self.prefix, timeout=timeout, confirm=confirm))
        self.topics = [self.prefix + t for t in ("orders", "payments", "inventory", "shipping", "approvals")]
        kafka.create(self.topics)
        self.workers: list[Worker] = []

    def topic(self, name: str) -> str:
        return f"{self.app_id}-{name}" if name in ("compensations", "outcomes", "dead-letter", "saga-log") else self.prefix + name

    def worker(self, name: str = "w1", **env: str) -> Worker:
        w = Worker(self, name, env)
        self.workers.append(w)
        return w

    def event(
        self,
        event_type: str,
        saga_id: str,
        *,
        event_id: str | None = None,
        at: float | None = None,
        field: str = "order_id",
        headers: list[tuple[str, bytes]] | None = None,
    ) -> tuple[str, bytes, bytes, list]:
        body = {
            "id": event_id or f"{saga_id}:{event_type}",
            "type": event_type,
            "time": at if at is not None else time.time(),
            "data": {field: saga_id},
        }
        return (self.prefix + TOPIC_OF[event_type], saga_id.encode(), orjson.dumps(body), headers or [])

    def send(self, *events: tuple[str, bytes, bytes, list]) -> None:
        self.kafka.produce(list(events))

    def cli(self, *args: str, timeout: float = 180.0, **env: str) -> subprocess.CompletedProcess[str]:
        """Run ``saga-tracker ARGS`` against this scenario's broker and app id."""
        full = {
            **os.environ,
            "SAGA_TRACKER_BROKER": self.broker_url,
            "SAGA_TRACKER_APP_ID": self.app_id,
            "SAGA_TRACKER_DEFINITIONS": str(self.definitions),
            "SAGA_TRACKER_PRODUCER_MAX_BATCH_SIZE": "1",
            **env,
        }
        return subprocess.run(
            [sys.executable, "-m", "tracker", *args],
            env=full,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def close(self) -> None:
        for w in self.workers:
            w.kill()


class Worker:
    def __init__(self, scenario: Scenario, name: str, env: dict[str, str]) -> None:
        self.scenario, self.name = scenario, name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data = scenario.tmp / f"data-{name}"
        self.log = scenario.tmp / f"{name}.log"
        self.env = {
            **os.environ,
            "SAGA_TRACKER_BROKER": scenario.broker_url,
            "SAGA_TRACKER_APP_ID": scenario.app_id,
            "SAGA_TRACKER_DEFINITIONS": str(scenario.definitions),
            "SAGA_TRACKER_DATA_DIR": str(self.data),
            "SAGA_TRACKER_WEB_PORT": str(self.port),
            "SAGA_TRACKER_SWEEP_INTERVAL": "0.5",
            "SAGA_TRACKER_PRODUCER_MAX_BATCH_SIZE": "1",
            "SAGA_TRACKER_SESSION_TIMEOUT": "6",
            "SAGA_TRACKER_HEARTBEAT_INTERVAL": "1",
            "SAGA_TRACKER_REBALANCE_TIMEOUT": "10",
            "SAGA_TRACKER_LOG_LEVEL": "info",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.wrapper: list[str] = []  # e.g. faketime: the worker runs under it
        # The crash tests' worker carries the crash hook (tests/crash_worker.py); others are the CLI's.
        self.command = ["tests.crash_worker"] if "CRASH_POINT" in env else ["tracker", "worker"]

    def start(self, wait: bool = True) -> Worker:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [*self.wrapper, sys.executable, "-m", *self.command],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # A group of its own: a wrapper (faketime) forks the worker, and signals must
                # reach the worker too, or it outlives the test.
                start_new_session=True,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        try:
            wait_ready(self.base, timeout, self.process)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"worker {self.name}: {exc}\n{self.tail()}") from None

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:]) if self.log.exists() else ""

    def get(self, path: str) -> tuple[int, Any]:
        return get_json(self.base + path)

    def get_with_headers(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        req = urllib.request.Request(self.base + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, dict(resp.headers), orjson.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), orjson.loads(exc.read())

    def metric(self, sample: str, **labels: str) -> float:
        """The sum of a sample's values on this worker's ``/metrics`` over the label sets that
        have ``labels``."""
        with urllib.request.urlopen(self.base + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == sample and labels.items() <= s.labels.items()
        )

    def wait_metric(self, sample: str, value: float, timeout: float = 30.0, **labels: str) -> None:
        deadline = time.monotonic() + timeout
        while (now := self.metric(sample, **labels)) < value:
            if time.monotonic() > deadline:
                raise AssertionError(f"{sample}{labels} stayed at {now}, not {value}\n{self.tail()}")
            time.sleep(0.1)

    def wait_sweeps(self, passes: int = 2, timeout: float = 30.0) -> None:
        """Wait until the deadline punctuator has completed ``passes`` more sweeps: a check that
        nothing was swept waits for the sweeps themselves, not for time to pass."""
        start = self.metric("saga_tracker_sweep_duration_seconds_count")
        deadline = time.monotonic() + timeout
        while self.metric("saga_tracker_sweep_duration_seconds_count") < start + passes:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {passes} sweeps in {timeout}s\n{self.tail()}")
            time.sleep(0.1)

    def saga(self, saga_id: str) -> dict[str, Any] | None:
        status, body = self.get("/sagas/" + urllib.parse.quote(saga_id, safe=""))
        return body if status == 200 else None

    def wait_saga(self, saga_id: str, check: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.saga(saga_id)
            except OSError:
                last = None
            if last is not None and check(last):
                return last
            time.sleep(0.25)
        raise AssertionError(f"saga {saga_id} never satisfied the check; last: {last}\n{self.tail()}")

    def wait_listed(self, count: int, query: str = "", timeout: float = 60.0) -> list[dict[str, Any]]:
        """Wait until `GET /sagas?query` lists exactly `count` sagas."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                status, last = self.get(f"/sagas?limit=100&{query}")
            except OSError:
                status = 0
            if status == 200 and len(last["items"]) == count and not last["partial"]:
                return list(last["items"])
            time.sleep(0.25)
        raise AssertionError(f"never listed {count} sagas for {query!r}; last: {last}\n{self.tail()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the worker and its wrapper, if any."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = 30.0) -> None:
        if self.alive():
            assert self.process is not None
            self.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.process is not None:
            self.send_signal(signal.SIGKILL)  # the group: even when the wrapper is gone already
            self.process.wait()

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)
