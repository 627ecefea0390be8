"""Scale benchmark: a worker with N sagas in flight (1,000,000 by default).

    python -m bench.scale --sagas 1000000        # make bench-scale
    python -m bench.scale --sagas 2000 --smoke   # the smoke run in make test

Loading a million sagas through the tracker would take hours at its current rate, so the
state is written straight into the ``sagas`` changelog topic, built with the tracker's own
code (the pure machine): what a worker would have written after each saga's first event.
Then, on one fresh embedded broker:

1. **recovery**: a worker with an empty data directory restores the table from the
   changelog and rebuilds its local indexes from it; the time from start to ready (minus
   the start-to-ready time of a worker with nothing to restore, measured in the same run)
   against raw aiokafka consumption of the same changelog records, and the worker's peak RSS;
2. **sweep**: the worker is restarted on its local state and a further window of sagas falls
   due at ``--due-rate`` per second: time from each deadline to its compensation on the
   compensations topic (p50, p99), and the sweep's share of the worker's time (wall time,
   from the ``saga_tracker_sweep_duration_seconds`` histogram; and the CPU of the sweep's own
   code, ``saga_tracker_sweep_cpu_seconds_total``, against wall time and the worker's CPU),
   compared with the same window over a worker with ``--small`` sagas in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import rocksdict
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition

from bench.run import metric, order_definitions, proc_cpu, proc_rss_mb, spawn_worker, stop
from tracker.core.definitions import SagaDefinition
from tracker.core.events import Event
from tracker.core.machine import apply
from tracker.demo.runner import get_json
from tracker.kafka.admin import ensure_topics
from tracker.kafka.broker import EmbeddedBroker, free_port
from tracker.loader import load_catalog
from tracker.stream.indexes import DEADLINE, SUMMARY, Index, deadline_key, due_bound, options, stored_row

PARTITIONS = 4
TABLES = ("sagas",)  # the only changelog-backed table; the indexes are rebuilt from it
CPU = "saga_tracker_sweep_cpu_seconds_total"  # the sweeps' own code: scan and decisions
TIMEOUT_DAYS = 30  # the payment step's timeout in the benchmark's copy of the order saga
partition_of = DefaultPartitioner()


@dataclass
class World:
    bootstrap: str
    app_id: str
    data: Path
    definition: SagaDefinition


def world(bootstrap: str, tmp: Path, name: str) -> World:
    app_id = f"scale-{name}-{uuid.uuid4().hex[:6]}"
    text = (
        order_definitions(f"{app_id}-orders")
        .replace("timeout: 20s", f"timeout: {TIMEOUT_DAYS}d")
        .replace("ttl: 10m", f"ttl: {2 * TIMEOUT_DAYS}d")
    )
    data = tmp / app_id
    data.mkdir()
    path = data / "sagas.yaml"
    path.write_text(text)
    definition = load_catalog([path]).definitions[0]
    return World(bootstrap, app_id, data, definition)


def rows(definition: SagaDefinition, saga_id: str, due: float) -> Iterator[tuple[str, bytes, bytes]]:
    """The changelog rows a worker writes after a saga's first event, deadline ``due``."""
    started = due - TIMEOUT_DAYS * 86400
    event = Event(saga_id, definition.name, f"{saga_id}:0", definition.start, started)
    state = apply(definition, None, event, started).state
    assert state is not None and state.deadline is not None
    yield "sagas", saga_id.encode(), stored_row(definition, state)


async def load(w: World, sagas: range, due: Any) -> int:
    """Write the changelogs of ``sagas`` (ids ``order-<n>``, deadline ``due(n)``); returns records.

    Batched for speed, except each partition's last record, sent alone: the embedded broker
    reports a partition's end offset as the first offset of its last batch + 1."""
    topics = [f"{w.app_id}-{t}-changelog" for t in TABLES]
    await ensure_topics(w.bootstrap, topics, PARTITIONS, config={"cleanup.policy": "compact"})
    producer = AIOKafkaProducer(bootstrap_servers=w.bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    last: dict[tuple[str, int], tuple[bytes, bytes]] = {}
    sent, pending = 0, []
    try:
        for n in sagas:
            saga_id = f"order-{n:08d}"
            p = partition_of(saga_id.encode(), list(range(PARTITIONS)), list(range(PARTITIONS)))
            for table, key, value in rows(w.definition, saga_id, due(n)):
                topic = f"{w.app_id}-{table}-changelog"
                held = last.get((topic, p))
                last[(topic, p)] = (key, value)
                if held is not None:
                    pending.append(await producer.send(topic, held[1], key=held[0], partition=p))
                    sent += 1
            if len(pending) > 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        for (topic, p), (key, value) in last.items():
            await producer.send_and_wait(topic, value, key=key, partition=p)
            sent += 1
    finally:
        await producer.stop()
    return sent


async def raw_read(w: World) -> tuple[int, float, int]:
    """Raw consumption of every changelog record: (records, seconds, restarts).

    A fetch session to the embedded broker sometimes stops returning records: after 1 s of
    nothing the consumer starts over from where it got to (the wait is not counted)."""
    tps = [TopicPartition(f"{w.app_id}-{t}-changelog", p) for t in TABLES for p in range(PARTITIONS)]
    position = dict.fromkeys(tps, 0)
    seen, restarts, idle_time, ends = 0, 0, 0.0, None
    t0 = time.perf_counter()
    while ends is None or seen < sum(ends.values()):
        consumer = AIOKafkaConsumer(bootstrap_servers=w.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(tps)
            if ends is None:
                ends = await consumer.end_offsets(tps)
                t0 = time.perf_counter()
            for tp, offset in position.items():
                consumer.seek(tp, offset)
            quiet = time.perf_counter()
            while seen < sum(ends.values()):
                batch = await consumer.getmany(timeout_ms=250)
                if not batch:
                    if time.perf_counter() - quiet > 1.0:
                        idle_time += time.perf_counter() - quiet
                        restarts += 1
                        break
                    continue
                quiet = time.perf_counter()
                for tp, records in batch.items():
                    seen += len(records)
                    position[tp] = records[-1].offset + 1
        finally:
            await consumer.stop()
    return seen, time.perf_counter() - t0 - idle_time, restarts


class Worker:
    def __init__(self, w: World) -> None:
        self.w, self.port = w, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start; returns seconds until /readyz says ready with every partition active."""
        t0 = time.perf_counter()
        with open(self.w.data / "tracker.log", "ab") as log:  # the child has its own copy
            self.proc = spawn_worker(self.w.bootstrap, self.w.app_id, self.w.data, self.port, log)
        while time.perf_counter() - t0 < 3600:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}: see {self.w.data / 'tracker.log'}")
            try:
                status, body = get_json(f"{self.base}/readyz", timeout=5)
            except OSError:
                status, body = 0, None
            if status == 200 and body.get("ready") and len(body.get("active_partitions", ())) == PARTITIONS:
                return time.perf_counter() - t0
            time.sleep(0.2)
        raise TimeoutError("the worker did not get ready")

    def metric(self, name: str) -> float:
        return self.metrics(name)[0]

    def metrics(self, *names: str) -> tuple[float, ...]:
        """Several samples from one scrape."""
        _, text = get_json(f"{self.base}/metrics", timeout=10)
        return tuple(metric(text, name) for name in names)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop(self.proc, grace=60)


async def compensations(w: World, wanted: int, timeout: float) -> list[tuple[float, float]]:
    """(due, emitted at) of the first compensation per saga, until ``wanted`` sagas or ``timeout``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=w.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    first: dict[str, tuple[float, float]] = {}
    try:
        tps = [TopicPartition(f"{w.app_id}-compensations", p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while len(first) < wanted and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    c = orjson.loads(r.value)
                    due = int(c["causation_id"].rsplit("@", 1)[1]) / 1000
                    first.setdefault(c["saga_id"], (due, r.timestamp / 1000))
    finally:
        await consumer.stop()
    return list(first.values())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def sweep_window(w: World, in_flight: int, rate: int, window: float, lead: float) -> dict[str, float]:
    """Restart ``w``'s worker on its local state while ``rate * window`` more sagas fall due."""
    due_sagas = int(rate * window)
    start = time.time() + lead
    asyncio.run(load(w, range(in_flight, in_flight + due_sagas), lambda n: start + (n - in_flight) / rate))
    worker = Worker(w)
    try:
        worker.start()
        if time.time() > start:
            print(f"warning: the worker was ready {time.time() - start:.1f}s after the first deadline", file=sys.stderr)
        time.sleep(max(0.0, start - time.time()))
        pid = worker.proc.pid if worker.proc else 0
        s0, c0, p0, t0 = (*worker.metrics("saga_tracker_sweep_duration_seconds_sum", CPU), proc_cpu(pid), time.perf_counter())
        time.sleep(window)
        s1, c1, p1, t1 = (*worker.metrics("saga_tracker_sweep_duration_seconds_sum", CPU), proc_cpu(pid), time.perf_counter())
        got = asyncio.run(compensations(w, due_sagas, timeout=max(120.0, 4 * window)))
        rss = proc_rss_mb(pid) if pid else 0.0
    finally:
        worker.stop()
    late = [at - due for due, at in got]
    return {
        "due": due_sagas,
        "handled": len(got),
        "p50": percentile(late, 0.5),
        "p99": percentile(late, 0.99),
        "early": sum(1 for x in late if x < 0),
        "sweep_share": (s1 - s0) / (t1 - t0),
        "cpu_share": (c1 - c0) / (t1 - t0),
        "cpu_of_worker": (c1 - c0) / max(p1 - p0, 1e-9),
        "rss": rss,
    }


def scan_cost(root: Path, in_flight: int, due: int = 1000, rounds: int = 20) -> tuple[float, float]:
    """CPU seconds of one sweep's read of ``due`` due deadlines from a partition index that
    also holds ``in_flight`` sagas not due (their summary and deadline rows): right after the
    rows were written (as after a rebuild: many level-0 files, compaction pending) and once
    compacted (a long-running worker's index)."""
    index = Index(rocksdict.Rdict(str(root), options(rocksdict.Cache(16 << 20))))
    try:
        row = orjson.dumps({"token": "1@1", "saga_id": "order-00000000", "saga_type": "order", "due": 0.0, "step": "payment"})
        now, batch = 2e9, {}
        for n in range(in_flight):
            saga_id = f"order-{n:08d}"
            batch[SUMMARY + saga_id.encode()] = row
            batch[DEADLINE + deadline_key(now + 86400 + n / 1000, saga_id)] = row
            if len(batch) >= 100_000:
                index.write(batch)
                batch = {}
        for n in range(due):
            batch[DEADLINE + deadline_key(now - n / 1000, f"due-{n}")] = row
        index.write(batch)
        index.db.flush()
        bound, costs = due_bound(now), []
        for settled in (False, True):
            if settled:
                index.db.compact_range(None, None)
            t0 = time.process_time()
            for _ in range(rounds):
                assert sum(1 for _ in index.due(bound)) == due
            costs.append((time.process_time() - t0) / rounds)
        return costs[0], costs[1]
    finally:
        index.db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sagas", type=int, default=1_000_000, help="sagas in flight")
    parser.add_argument("--small", type=int, default=1_000, help="sagas in flight of the comparison worker")
    parser.add_argument("--due-rate", type=int, default=1_000, help="deadlines falling due per second")
    parser.add_argument("--window", type=float, default=10.0, help="seconds during which deadlines fall due")
    parser.add_argument("--lead", type=float, default=30.0, help="seconds from loading the window to its first deadline")
    parser.add_argument("--smoke", action="store_true", help="a small run that checks the harness works")
    args = parser.parse_args(argv)
    far = time.time() + 365 * 86400.0  # in flight: due long after the benchmark
    with tempfile.TemporaryDirectory(prefix="saga-scale-") as tmp, EmbeddedBroker() as broker:
        big, small = world(broker.bootstrap, Path(tmp), "big"), world(broker.bootstrap, Path(tmp), "small")
        t0 = time.perf_counter()
        written = asyncio.run(load(big, range(args.sagas), lambda n: far + n / 1000))
        asyncio.run(load(small, range(args.small), lambda n: far + n / 1000))
        print(f"{args.sagas} sagas in flight: {written} changelog records written in {time.perf_counter() - t0:.0f}s", flush=True)

        records, raw_seconds, restarts = asyncio.run(raw_read(big))
        print(
            f"raw consumption of the changelogs: {records} records in {raw_seconds:.1f}s"
            + (f" ({restarts} stalled fetch sessions restarted, their wait not counted)" if restarts else ""),
            flush=True,
        )

        empty = Worker(world(broker.bootstrap, Path(tmp), "empty"))
        try:
            start_empty = empty.start()
        finally:
            empty.stop()
        worker = Worker(big)
        try:
            start_full = worker.start()
            rss = proc_rss_mb(worker.proc.pid) if worker.proc else 0.0
            in_table, until = 0.0, time.monotonic() + 120
            while in_table < args.sagas and time.monotonic() < until:  # counted by the index rebuild
                time.sleep(1)
                in_table = worker.metric("saga_tracker_sagas_in_flight")
            rebuild = worker.metric("saga_tracker_index_rebuild_duration_seconds_sum")
        finally:
            worker.stop()
        recovery = max(start_full - start_empty, 1e-9)
        print(
            f"recovery: ready after {start_full:.1f}s (an empty worker: {start_empty:.1f}s), "
            f"{recovery:.1f}s for {records} records = {recovery / raw_seconds:.1f} x raw consumption "
            f"(of which {rebuild:.1f}s rebuilding the local indexes); {in_table:.0f} sagas counted in flight; "
            f"peak RSS {rss:.0f} MB (target < 400 MB)",
            flush=True,
        )
        (fresh, settled), (fresh_small, settled_small) = (scan_cost(Path(tmp) / f"scan-{n}", n) for n in (args.sagas, args.small))
        print(
            f"sweep scan of 1000 due deadlines in one partition index, CPU: {1000 * settled:.2f} ms beside {args.sagas} "
            f"sagas in flight, {1000 * settled_small:.2f} ms beside {args.small}: ratio {settled / settled_small:.2f} "
            f"(right after writing them, before compaction: {1000 * fresh:.2f} / {1000 * fresh_small:.2f} ms = "
            f"{fresh / fresh_small:.2f})",
            flush=True,
        )
        if args.smoke:
            return 0 if in_table == args.sagas else 1
        # A restart on local state reads only the changelog's tail, then rebuilds the indexes.
        lead = args.lead + 3 * start_empty + 2 * rebuild
        for w, n in ((big, args.sagas), (small, args.small)):
            r = sweep_window(w, n, args.due_rate, args.window, lead)
            print(
                f"sweep with {n} in flight, {args.due_rate}/s due for {args.window:g}s: {r['handled']}/{r['due']} "
                f"compensated, deadline -> compensation p50 {r['p50']:.2f}s p99 {r['p99']:.2f}s, "
                f"{r['early']} early; sweep share of the worker's time {100 * r['sweep_share']:.1f}% (wall), its own "
                f"code's CPU {100 * r['cpu_share']:.2f}% of wall time, {100 * r['cpu_of_worker']:.2f}% of the worker's CPU; "
                f"peak RSS {r['rss']:.0f} MB",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
