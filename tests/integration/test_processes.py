"""Process lifecycle: every command that starts children stops them on SIGTERM and SIGINT, leaves
none behind when it is SIGKILLed, and a worker's stop is bounded even with its broker gone."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.harness import run
from tracker.demo.runner import get_json, wait_ready
from tracker.kafka.admin import ensure_topics
from tracker.kafka.broker import EmbeddedBroker, free_port
from tracker.loader import load_catalog

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BOUND = 30.0  # seconds: every stop below must be done well within a Kubernetes grace period


def children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def gone(pids: set[int], timeout: float = BOUND) -> set[int]:
    """Wait until none of ``pids`` is alive; returns those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while (left := {p for p in pids if alive(p)}) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def start(*args: str, env: dict[str, str] | None = None, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tracker", *args],
            env={**os.environ, **(env or {})},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture
def reap() -> Iterator[list[int]]:
    """Whatever a failed test leaves running is killed."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        for p in [*children(pid), pid]:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)


def wait_for(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_broker_command_stops_its_broker(tmp_path: Path, reap: list[int], sig: signal.Signals) -> None:
    p = start("broker", "--port", str(free_port()), log=tmp_path / "broker.log")
    reap.append(p.pid)
    wait_for(lambda: "listening" in (tmp_path / "broker.log").read_text())
    tansu = children(p.pid)
    assert tansu  # the Tansu process
    p.send_signal(sig)
    assert p.wait(timeout=BOUND) == 0
    assert gone(tansu) == set()


def test_a_sigkilled_broker_command_takes_its_broker_with_it(tmp_path: Path, reap: list[int]) -> None:
    p = start("broker", "--port", str(free_port()), log=tmp_path / "broker.log")
    reap.append(p.pid)
    wait_for(lambda: "listening" in (tmp_path / "broker.log").read_text())
    tansu = children(p.pid)
    p.kill()
    p.wait(timeout=BOUND)
    assert gone(tansu) == set()  # it watched its parent


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_the_demo_leaves_no_process_behind(tmp_path: Path, reap: list[int], sig: signal.Signals) -> None:
    port = free_port()
    p = start("demo", "--sagas", "2", env={"SAGA_TRACKER_WEB_PORT": str(port)}, log=tmp_path / "demo.log")
    reap.append(p.pid)
    wait_ready(f"http://127.0.0.1:{port}", 90)
    family = children(p.pid)
    assert len(family) >= 2, family  # the worker and the broker
    p.send_signal(sig)
    code = p.wait(timeout=BOUND)
    assert sig == signal.SIGKILL or code == 0
    assert gone(family) == set()
    assert "Traceback" not in (tmp_path / "demo.log").read_text()


def test_a_worker_stops_cleanly_on_sigterm(tmp_path: Path, reap: list[int]) -> None:
    with EmbeddedBroker() as broker:
        port = free_port()
        env = {"SAGA_TRACKER_BROKER": broker.url, "SAGA_TRACKER_WEB_PORT": str(port), "SAGA_TRACKER_DATA_DIR": str(tmp_path)}
        p = start("worker", env=env, log=tmp_path / "worker.log")
        reap.append(p.pid)
        wait_ready(f"http://127.0.0.1:{port}", 90, p)  # type: ignore[arg-type]
        began = time.monotonic()
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=BOUND) == 0
    assert time.monotonic() - began < 20
    assert "Traceback" not in (tmp_path / "worker.log").read_text()


def test_a_worker_whose_broker_is_gone_stops_within_its_bound(tmp_path: Path, reap: list[int]) -> None:
    broker = EmbeddedBroker().start()
    port = free_port()
    env = {
        "SAGA_TRACKER_BROKER": broker.url,
        "SAGA_TRACKER_WEB_PORT": str(port),
        "SAGA_TRACKER_DATA_DIR": str(tmp_path),
        "SAGA_TRACKER_STOP_TIMEOUT": "5",
    }
    p = start("worker", env=env, log=tmp_path / "worker.log")
    reap.append(p.pid)
    try:
        wait_ready(f"http://127.0.0.1:{port}", 90, p)  # type: ignore[arg-type]
    finally:
        broker.stop()
    began = time.monotonic()
    p.send_signal(signal.SIGTERM)
    code = p.wait(timeout=BOUND)
    took = time.monotonic() - began
    log = (tmp_path / "worker.log").read_text()
    assert code != 0 or took < 5, (code, took)  # either it finished in time or said why it could not
    if code != 0:
        assert took < 5 + 5 and "did not finish within 5s" in log
    assert "Traceback" not in log


def test_a_worker_against_the_broker_command_survives_sigkill_and_restart(tmp_path: Path, reap: list[int]) -> None:
    """A worker given `saga-tracker broker`'s URL recognises Tansu and batches as the embedded
    mode does; with 16 KiB batches a SIGKILLed worker could not restart (ConsistencyError)."""
    bport = free_port()
    b = start("broker", "--port", str(bport), log=tmp_path / "broker.log")
    reap.append(b.pid)
    wait_for(lambda: "listening" in (tmp_path / "broker.log").read_text())
    assert f"SAGA_TRACKER_BROKER=kafka://127.0.0.1:{bport}" in (tmp_path / "broker.log").read_text()
    bootstrap = f"127.0.0.1:{bport}"
    catalog = load_catalog()
    run(ensure_topics(bootstrap, catalog.topics, 4))
    port = free_port()
    env = {
        "SAGA_TRACKER_BROKER": f"kafka://{bootstrap}",
        "SAGA_TRACKER_WEB_PORT": str(port),
        "SAGA_TRACKER_DATA_DIR": str(tmp_path),
    }
    base = f"http://127.0.0.1:{port}"
    w = start("worker", env=env, log=tmp_path / "worker.log")
    reap.append(w.pid)
    wait_ready(base, 90, w)  # type: ignore[arg-type]
    assert "is Tansu (the embedded broker): producer batches of 1 byte(s)" in (tmp_path / "worker.log").read_text()
    ids = [f"k-{n}" for n in range(20)]
    produce_batched(bootstrap, [("orders", "OrderCreated", i) for i in ids] + [("payments", "PaymentAuthorized", i) for i in ids])
    wait_for(lambda: all(get_json(f"{base}/sagas/{i}")[1].get("visible_status") == "PENDING_INVENTORY" for i in ids), 60)
    w.kill()
    w.wait(timeout=BOUND)
    w = start("worker", env=env, log=tmp_path / "worker-2.log")
    reap.append(w.pid)
    wait_ready(base, 90, w)  # type: ignore[arg-type]  # no ConsistencyError at recovery
    assert all(get_json(f"{base}/sagas/{i}")[1]["visible_status"] == "PENDING_INVENTORY" for i in ids)  # state intact
    produce_batched(
        bootstrap, [("inventory", "InventoryReserved", i) for i in ids] + [("shipping", "ShipmentCreated", i) for i in ids]
    )
    wait_for(lambda: all(get_json(f"{base}/sagas/{i}")[1].get("status") == "completed" for i in ids), 60)


def produce_batched(bootstrap: str, events: list[tuple[str, str, str]]) -> None:
    """As the services do: librdkafka-like batching (several records per batch)."""

    async def go() -> None:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
        await p.start()
        try:
            sent = []
            for topic, event_type, saga_id in events:
                body = {"id": f"{saga_id}:{event_type}", "type": event_type, "time": time.time(), "data": {"order_id": saga_id}}
                sent.append(await p.send(topic, orjson.dumps(body), key=saga_id.encode()))
            await asyncio.gather(*sent)
        finally:
            await p.stop()

    run(go())
