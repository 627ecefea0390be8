"""``saga-tracker demo``: embedded broker, a tracker worker and the demo services, with traffic.

Prints where to look, follows every saga to a terminal state, and prints a summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from tracker.core.errors import SettingsError
from tracker.core.state import TERMINAL
from tracker.demo.services import Behaviour, Services, generate
from tracker.kafka.admin import bootstrap_of, ensure_topics
from tracker.kafka.broker import EmbeddedBroker, free_port
from tracker.loader import load_catalog
from tracker.ops.processes import run, stopping_on, with_parent
from tracker.ops.settings import Settings


def get_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """GET ``url``: (status, decoded JSON), or the text for other content types."""

    def body(raw: bytes, content_type: str) -> Any:
        return orjson.loads(raw) if "json" in content_type else raw.decode(errors="replace")

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, body(resp.read(), resp.headers.get("Content-Type", ""))
    except urllib.error.HTTPError as exc:
        return exc.code, body(exc.read(), exc.headers.get("Content-Type", ""))


def wait_ready(base: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the worker exited with code {process.returncode}")
        try:
            status, body = get_json(f"{base}/readyz", timeout=2)
            if status == 200 and body.get("ready"):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"worker at {base} not ready within {timeout:g}s")


def statuses(base: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for saga_id in ids:
        status, body = get_json(f"{base}/sagas/{saga_id}")
        if status == 200:
            out[saga_id] = body
    return out


def run_demo(
    settings: Settings, *, sagas: int, rate: float, seed: int, exit_when_done: bool = False, max_wait: float = 240.0
) -> int:
    """The demo: one screen that tells the story; faust's and aiokafka's logs go to a file.

    SIGTERM and SIGINT (Ctrl-C) stop it cleanly: the worker first, then the broker. Both children
    watch this process and stop with it even if it is killed (``ops.processes``)."""
    logs = Path(tempfile.gettempdir()) / f"saga-tracker-demo-{os.getpid()}.log"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", filename=logs, force=True)
    catalog = load_catalog(list(settings.definitions) or None)
    port = settings.web_port if settings.web_port != 6066 else free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        with (
            stopping_on(),
            tempfile.TemporaryDirectory(prefix="saga-demo-") as data,
            EmbeddedBroker(log_path=str(logs)) as broker,
        ):
            run(ensure_topics(broker.bootstrap, catalog.topics, settings.partitions))
            env = {
                **os.environ,
                "SAGA_TRACKER_BROKER": broker.url,
                "SAGA_TRACKER_DATA_DIR": data,
                "SAGA_TRACKER_WEB_PORT": str(port),
                "SAGA_TRACKER_APP_ID": settings.app_id,
            }
            with open(logs, "ab") as out:
                worker = subprocess.Popen(
                    [sys.executable, "-m", "tracker", "worker"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    preexec_fn=with_parent,
                )
            try:
                return _show(worker, broker, catalog, settings, base, logs, sagas, rate, seed, exit_when_done, max_wait)
            finally:
                _stop(worker, settings.stop_timeout)
    except KeyboardInterrupt:
        print("\nstopped.", flush=True)
        return 0


def _show(
    worker: subprocess.Popen[bytes],
    broker: EmbeddedBroker,
    catalog: Any,
    settings: Settings,
    base: str,
    logs: Path,
    sagas: int,
    rate: float,
    seed: int,
    exit_when_done: bool,
    max_wait: float,
) -> int:
    wait_ready(base, 60, worker)
    print(
        f"== saga-tracker demo ==\n"
        f"  page:     {base}/\n"
        f"  API:      {base}/sagas  {base}/sagas/stats  {base}/metrics\n"
        f"  broker:   {broker.url} (embedded, memory only)\n"
        f"  logs:     {logs} (worker, broker, faust, aiokafka)\n"
        f"  traffic:  {sagas} sagas at {rate:g}/s (seed {seed}): some fail, stall, duplicate or reorder\n",
        flush=True,
    )
    ids = run(_traffic(broker.bootstrap, catalog, settings, sagas, rate, seed, base, max_wait))
    final = statuses(base, ids)
    counts = Counter((s["saga_type"], s["status"]) for s in final.values())
    print("\n== outcome ==")
    for (saga_type, status), n in sorted(counts.items()):
        print(f"  {saga_type:18} {status:20} {n}")
    print(f"  tracked {len(final)}/{len(ids)} sagas; try: curl {base}/sagas/{ids[0]}", flush=True)
    if not exit_when_done:
        print("Ctrl-C stops the demo.", flush=True)
        while worker.poll() is None:
            time.sleep(1)
    return 0 if len(final) == len(ids) else 1


def _stop(worker: subprocess.Popen[bytes], bound: float) -> None:
    """The worker first (it commits while the broker still runs), within its own stop bound."""
    if worker.poll() is not None:
        return
    worker.terminate()
    try:
        worker.wait(timeout=bound + 5)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def milestone(saga: dict[str, Any]) -> str | None:
    """What matters of where a saga is now, for the demo's screen (None: nothing to say yet)."""
    status, reason = saga["status"], saga.get("reason") or ""
    if status == "compensating":
        return "stalled, compensating" if reason.startswith("timeout") else "failed, compensating"
    return status if status in TERMINAL else None


async def _traffic(
    bootstrap: str, catalog: Any, settings: Settings, sagas: int, rate: float, seed: int, base: str, max_wait: float
) -> list[str]:
    services = Services(bootstrap, catalog, settings.compensations, Behaviour(), seed=seed)
    await services.start()
    try:
        started = asyncio.ensure_future(generate(services, sagas, rate, list(catalog.current.values())))
        seen: dict[str, str | None] = {}
        polls = 0
        deadline = time.monotonic() + max_wait
        while time.monotonic() < deadline:
            await asyncio.sleep(3)
            ids = list(services.sagas)  # started so far, in order
            current = await asyncio.to_thread(statuses, base, ids)
            news: dict[str, list[str]] = {}
            fresh = [i for i in current if i not in seen]
            for saga_id, saga in current.items():
                now = milestone(saga)
                if now is not None and seen.get(saga_id) != now:
                    news.setdefault(now, []).append(saga_id)
                seen[saga_id] = now
            clock = time.strftime("%H:%M:%S")
            if fresh:
                print(f"  {clock} {'started':21} {len(fresh):3}: {len(seen)}/{sagas} so far", flush=True)
            for what, which in sorted(news.items()):
                shown = " ".join(which[:4]) + (f" (+{len(which) - 4})" if len(which) > 4 else "")
                print(f"  {clock} {what:21} {len(which):3}: {shown}", flush=True)
            polls += 1
            if polls % 5 == 0:  # a live summary every 15 s
                tally = Counter(s["status"] for s in current.values())
                print(f"  {clock} {'now':21}      " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())), flush=True)
            done = started.done() and len(current) == sagas and all(s["status"] in TERMINAL for s in current.values())
            if done:
                break
        return await started
    finally:
        await services.stop()


def run_services(settings: Settings, *, sagas: int, rate: float, seed: int) -> int:
    """The demo services alone, against the configured broker (Compose runs them this way)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if settings.embedded:
        raise SettingsError("set SAGA_TRACKER_BROKER: the demo services join an existing broker")
    catalog = load_catalog(list(settings.definitions) or None)
    bootstrap = bootstrap_of(settings.broker)

    async def go() -> None:
        await ensure_topics(bootstrap, catalog.topics, settings.partitions, settings.replication_factor)
        services = Services(bootstrap, catalog, settings.compensations, Behaviour(), seed=seed)
        await services.start()
        try:
            n = 0
            while sagas == 0 or n < sagas:
                batch = sagas - n if sagas else 100
                await generate(services, batch, rate, list(catalog.current.values()), start=n)
                n += batch
            while True:  # keep answering compensation requests
                await asyncio.sleep(3600)
        finally:
            await services.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())
    return 0
