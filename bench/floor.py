"""faust's own per-record cost on this machine, before any tracker code: where the time goes.

Same fresh embedded broker and generated input as ``bench.run``; each contender is a faust
worker process of its own (the tracker's client fixes and broker settings, 16 KiB producer batches
with a 5 ms linger), timed from its first record to its last, CPU of the whole process:

* **agent**: an agent that reads each record and does nothing with it;
* **handler**: the same records handed to a function straight from faust's consumer (the
  conductor's per-partition callback, as the tracker's internals reach in elsewhere), without
  the channel queue, stream, event and agent: what faust's consumer alone costs (the agent is
  still declared, for the subscription, and its idle stream's CPU is counted);
* **agent + table**: the agent writing each record to a RocksDB table with faust's default
  options (changelog through faust's producer): the issue's "straightforward faust agent that
  updates a table";
* **agent + changelog**: the same table written the way the tracker writes saga state
  (``tracker.changelog``: the row put in the partition's RocksDB, its changelog record sent on
  the producer, the offset recorded on delivery), without faust's table write and producer
  buffer.

    python -m bench.floor --sagas 10000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.run import generate, produce
from tracker.kafka.broker import EmbeddedBroker

MODES = ("agent", "handler", "agent + table", "agent + changelog")


def child(mode: str, bootstrap: str, topic: str, total: int, out: str, data: str) -> None:
    """One contender: a faust worker that writes ``[events/s, CPU µs/event]`` to ``out`` and exits."""
    import faust

    from tracker.kafka import internals
    from tracker.stream.state_cache import StateCache

    internals.install_client_fixes()
    app = faust.App(
        f"floor-{uuid.uuid4().hex[:6]}",
        broker=f"kafka://{bootstrap}",
        store="rocksdb://",
        datadir=data,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        producer_max_batch_size=16384,
        producer_linger=0.005,
        topic_replication_factor=1,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    table = app.Table("rows", partitions=4, key_type=bytes, value_type=bytes)
    writes = StateCache(table)
    clock: dict[str, float] = {}

    def seen(n: list[int] = [0]) -> None:  # noqa: B006 - the counter, kept between calls
        if not n[0]:
            clock["t"], clock["cpu"] = time.perf_counter(), cpu()
        n[0] += 1
        if n[0] == total:
            rate, used = total / (time.perf_counter() - clock["t"]), (cpu() - clock["cpu"]) / total * 1e6
            Path(out).write_text(json.dumps([rate, used]))
            os._exit(0)

    @app.agent(source)
    async def consume(stream: Any) -> None:
        async for event in stream.events():
            if mode == "agent + table":
                table[event.key] = event.value
            elif mode == "agent + changelog":
                await writes.put(event.message.partition, event.key, event.value)
            seen()

    if mode == "handler":
        conductor: Any = app.topics
        build = conductor._build_handler

        def build_handler(tp: Any, channels: Any) -> Any:
            if tp.topic != topic:
                return build(tp, channels)
            acquire, consumer = app.flow_control.acquire, app.consumer

            async def on_message(message: Any) -> None:
                await acquire()
                seen()
                consumer.ack(message)

            return on_message

        conductor._build_handler = build_handler
    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sagas", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="one small round: checks the harness works")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, bootstrap, topic, total, out = args.child
        child(mode, bootstrap, topic, int(total), out, str(Path(out).parent / f"data-{uuid.uuid4().hex[:6]}"))
        return 0
    records = generate(args.sagas, args.seed)
    rounds = 1 if args.smoke else args.rounds
    results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="saga-floor-") as tmp, EmbeddedBroker() as broker:
        topic = f"floor-{uuid.uuid4().hex[:6]}"
        asyncio.run(produce(broker.bootstrap, topic, records))
        print(f"input: {len(records)} events of {args.sagas} sagas, {rounds} round(s), contenders alternating", flush=True)
        for r in range(rounds):
            for mode in MODES:  # alternating: the broker slows as it accumulates records
                out = Path(tmp) / f"{mode.replace(' ', '')}-{r}.json"
                command = [sys.executable, "-m", "bench.floor", "--child", mode, broker.bootstrap, topic]
                command += [str(len(records)), str(out)]
                with open(Path(tmp) / "floor.log", "ab") as log:
                    done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=900, check=False)
                if not out.exists():
                    tail = (Path(tmp) / "floor.log").read_text(errors="replace").splitlines()[-30:]
                    raise RuntimeError(f"{mode} exited with {done.returncode} before its last record:\n" + "\n".join(tail))
                rate, used = json.loads(out.read_text())
                results[mode].append((rate, used))
    print(f"\n{'faust, per record':16} {'events/s (median)':>18} {'CPU us/event (median)':>22}   CPU us/event, each round")
    for mode, runs in results.items():
        rate, used = statistics.median(r for r, _ in runs), statistics.median(u for _, u in runs)
        print(f"{mode:16} {rate:>18.0f} {used:>22.1f}   {' / '.join(f'{u:.1f}' for _, u in runs)}")
    handler, agent = (statistics.median(u for _, u in results[m]) for m in ("handler", "agent"))
    print(f"\nchannel, stream and agent: {agent - handler:.1f} us/event; faust's consumer alone: {handler:.1f} us/event")
    faust_write, direct = (statistics.median(u for _, u in results[m]) for m in ("agent + table", "agent + changelog"))
    through, direct = faust_write - agent, direct - agent
    print(f"a table write through faust: {through:.1f} us/event; as the tracker writes: {direct:.1f} us/event")
    return 0


if __name__ == "__main__":
    sys.exit(main())
