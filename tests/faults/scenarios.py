"""The fault scenarios. Each drives seeded traffic, breaks something, and returns a Verdict.

A scenario gets a ``Context``: the broker, a fresh ``FaultScenario`` (app id, topics,
definitions), the seed and a temp directory. Faults run in a thread while the generator
starts sagas; when both are done every worker is brought back and the verdict waits for
the read model to settle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.faults.harness import TIMEOUT, FaultScenario, ServicesThread, Verdict, on_its_own, verdict
from tests.integration.harness import Kafka, Worker
from tests.integration.test_hostile_input import hostile as kafka_level
from tests.integration.test_hostile_input import produce_large
from tests.tools import tool
from tracker.demo.services import Behaviour
from tracker.kafka.broker import EmbeddedBroker

BEHAVIOUR = Behaviour(fail_rate=0.1, stall_rate=0.12, duplicate_rate=0.1, reorder_rate=0.15, ignore_compensation_rate=0.0)
SAGAS, RATE = 24, 3.0


@dataclass
class Context:
    broker: EmbeddedBroker
    kafka: Kafka
    tmp: Path
    seed: int
    sagas: int = SAGAS

    def scenario(self) -> FaultScenario:
        path = self.tmp / f"run-{time.monotonic_ns()}"
        path.mkdir()
        return FaultScenario(self.kafka, path, self.broker.url)


def drive(
    ctx: Context,
    s: FaultScenario,
    during: Callable[[threading.Event], None] | None = None,
    behaviour: Behaviour = BEHAVIOUR,
) -> tuple[ServicesThread, float]:
    """Start the services, generate the sagas while ``during`` breaks things; returns when the
    faults are over (their end time is when "due handled in bound" starts counting)."""
    services = ServicesThread(s, ctx.seed, behaviour)
    done = threading.Event()
    fault = threading.Thread(target=during, args=(done,)) if during else None
    if fault:
        fault.start()
    services.generate(ctx.sagas, RATE)
    done.set()
    if fault:
        fault.join(120)
    return services, time.time()


def finish(
    name: str,
    s: FaultScenario,
    services: ServicesThread,
    reader: Worker,
    faults_end: float,
    before_loss: Sequence[dict[str, Any]] = (),
    then: Callable[[Verdict], None] | None = None,
) -> Verdict:
    """The verdict once the read model settled; ``then`` adds to it while everything still runs."""
    for w in s.workers:
        settle(w)
    try:
        v = verdict(name, s, services, reader, faults_end, before_loss=before_loss)
        v.routes = routes(s.workers)
        if then is not None:
            then(v)
        return v
    finally:
        s.done.set()
        services.stop()
        for w in s.workers:
            w.stop()


def routes(workers: Sequence[Worker]) -> Counter[str]:
    """Events applied where they were read ("here") and forwarded to the saga log, summed over
    the running workers (each counts since its last start)."""
    out: Counter[str] = Counter()
    for w in workers:
        if not w.alive():
            continue
        try:
            _, text = w.get("/metrics")
        except OSError:
            continue
        for family in text_string_to_metric_families(str(text)):
            if family.name == "saga_tracker_routed_events":  # the parser drops "_total"
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        out[sample.labels["route"]] += int(sample.value)
    return out


def took_over(w: Worker, partitions: int = 4, timeout: float = 60.0) -> None:
    """Wait until ``w`` owns every state partition (what a frozen peer's session timeout leads to)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, body = w.get("/readyz")
        except OSError:
            status, body = 0, {}
        if status in (200, 503) and len(body.get("active_partitions", [])) == partitions:
            return
        time.sleep(0.2)
    raise AssertionError(f"{w.name} never took over all {partitions} partitions\n{w.tail()}")


def nothing_due(w: Worker, timeout: float = 90.0) -> None:
    """Wait until no saga on ``w`` is past a deadline nobody acted on (``stuck``, but for the
    ``failed_needs_manual`` ones, which stay stuck until an operator acts), swept twice over."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, body = w.get("/sagas?stuck=true&limit=500")
        except OSError:
            status, body = 0, {}
        due = [r for r in body.get("items", []) if r["status"] != "failed_needs_manual"] if status == 200 else None
        if due == [] and not body.get("partial"):
            w.wait_sweeps(2)
            return
        time.sleep(0.5)
    raise AssertionError(f"{w.name} still has sagas past their deadlines\n{w.tail()}")


def settle(w: Worker, timeout: float = 90.0) -> None:
    """Wait for ``w`` to be ready if it runs. One that exits on its own (a watchdog, the freeze
    guard: code 70, as ``FaultScenario.supervise`` restarts) is waited for again once the
    supervisor has restarted it; one the scenario stopped or killed is left to the scenario."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = w.process.poll() if w.process is not None else 0
        if code is None:
            try:
                w.wait_ready(max(1.0, deadline - time.monotonic()))
                return
            except AssertionError:
                if not on_its_own(w.process.poll() if w.process is not None else 0):
                    raise
        elif not on_its_own(code):
            return
        time.sleep(0.2)
    raise AssertionError(f"worker {w.name}: not ready in {timeout:g}s\n{w.tail()}")


def every(done: threading.Event, seconds: float, act: Callable[[], None]) -> None:
    while not done.wait(seconds):
        act()


def restart(w: Worker) -> None:
    w.kill()
    w.start(wait=False)


# --- scenarios ------------------------------------------------------------------------------


def baseline(ctx: Context) -> Verdict:
    s = ctx.scenario()
    w = s.worker("w1").start()
    services, end = drive(ctx, s)
    return finish("no faults (baseline)", s, services, w, end)


def replay_under_traffic(ctx: Context) -> Verdict:
    """``replay`` while the services keep producing through a batching producer (several records
    per batch, as librdkafka sends them) and confirm each compensation at once; a generation-2
    worker goes on live behind its backlog; then ``replay --verify`` against the live one."""
    s = ctx.scenario()
    w1 = s.worker("w1").start()
    fed: list[str] = []

    def rebuild(done: threading.Event) -> None:
        done.wait(ctx.sagas / RATE / 2)  # half the sagas started, stalls being compensated
        out = s.cli("replay")
        said = [line.strip() for line in out.stdout.splitlines() if "fed" in line][:1] or [out.stdout.strip()[:200]]
        fed.append(said[0] if out.returncode == 0 else f"replay failed: {out.stderr[-300:]}")
        if out.returncode == 0:
            s.worker("w2", SAGA_TRACKER_GENERATION="2").start(wait=False)

    services, end = drive(ctx, s, rebuild, dataclasses.replace(BEHAVIOUR, batching=True))

    def verified(v: Verdict) -> None:
        nothing_due(w1)
        deadline, report = time.monotonic() + 90, dict[str, Any]()
        while time.monotonic() < deadline:  # generation 2 may still apply the last live records
            done = s.cli("replay", "--verify", "--generation", "2", "--json", "--wait", "60")
            report = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {"error": done.stderr[-300:]}
            if done.returncode == 0 and report.get("equal"):
                break
            time.sleep(3)
        (s.tmp / "verify.json").write_text(json.dumps(report, indent=1, default=str))  # for the post-mortem
        differing = [d.get("saga_id") for d in report.get("differing", [])]
        ok = report.get("equal") is True and not differing and report.get("new_compensations") == []
        new = report.get("new_compensations")
        v.checks["replay = live"] = "pass" if ok else f"differing {differing[:4]}, new {new}, {report.get('error', '')}"
        said = fed[0] if fed else "no replay"
        v.notes.append(f"{said}; verify: {len(differing)} differing, digests equal {report.get('equal')}")

    name = "replay while services keep producing (batching producer, confirming at once)"
    return finish(name, s, services, w1, end, then=verified)


def sigkill_random(ctx: Context, behaviour: Behaviour = BEHAVIOUR, name: str = "") -> Verdict:
    s = ctx.scenario()
    workers = [s.worker(f"w{i}").start() for i in range(3)]
    rng = random.Random(ctx.seed)
    kills = []

    def kill() -> None:
        w = rng.choice(workers)
        kills.append(w.name)
        restart(w)

    services, end = drive(ctx, s, lambda done: every(done, 4.0, kill), behaviour)
    for w in workers:
        if not w.alive():
            w.start(wait=False)
    for w in workers:
        w.wait_ready(90)
    v = finish(name or "SIGKILL a random worker every 4 s (3 workers)", s, services, workers[0], end)
    v.notes.append(f"killed {len(kills)} times: {', '.join(kills)}")
    return v


def keyed_otherwise(ctx: Context) -> Verdict:
    """Events keyed by their own id: a saga's events on any partition, each applied in place
    where its saga's state is active and forwarded to the saga log elsewhere, while workers die."""
    behaviour = dataclasses.replace(BEHAVIOUR, key_by_saga=False)
    v = sigkill_random(ctx, behaviour, "events keyed by event id; SIGKILL a random worker every 4 s (3 workers)")
    v.notes.append(f"applied where read {v.routes['here']}, through the saga log {v.routes['saga_log']} (running workers)")
    if not (v.routes.get("here") and v.routes.get("saga_log")):  # both routes, or this tested one only
        v.checks["both routes taken"] = f"routed {dict(v.routes)}"
    return v


def scale(ctx: Context) -> Verdict:
    s = ctx.scenario()
    w1 = s.worker("w1").start()
    others = [s.worker("w2"), s.worker("w3")]

    def steps(done: threading.Event) -> None:
        time.sleep(2)
        for w in others:
            w.start(wait=False)
        time.sleep(5)
        for w in others:
            w.stop()

    services, end = drive(ctx, s, steps)
    return finish("scale 1 -> 3 -> 1, clean stops", s, services, w1, end)


def crash_before_send(ctx: Context) -> Verdict:
    s = ctx.scenario()
    marker = s.tmp / "crashed"
    w = s.worker("w1", CRASH_POINT="before_send", CRASH_MARKER=str(marker)).start()

    def watch(done: threading.Event) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not marker.exists():
            time.sleep(0.2)
        w.wait_exit(30)
        w.start(wait=False)

    services, end = drive(ctx, s, watch)
    w.wait_ready(90)
    v = finish("os._exit between the state write and the compensation send", s, services, w, end)
    v.notes.append("crashed once at before_send" if marker.exists() else "the crash point was never reached")
    return v


def zombie(ctx: Context) -> Verdict:
    s = ctx.scenario()
    w1, w2 = s.worker("w1").start(), s.worker("w2").start()

    woke: list[int | None] = []

    def freeze(done: threading.Event) -> None:
        time.sleep(2)
        frozen = w2.process  # the supervisor replaces w2.process when it restarts w2
        assert frozen is not None
        w2.send_signal(signal.SIGSTOP)
        took_over(w1)  # past the session timeout: w1 took w2's partitions
        w2.send_signal(signal.SIGCONT)
        # Its freeze guard (tracker/stream/state_cache.py) exits it before it writes stale rows.
        try:
            woke.append(frozen.wait(timeout=20))
        except subprocess.TimeoutExpired:
            woke.append(None)

    services, end = drive(ctx, s, freeze)
    v = finish("SIGSTOP a worker past its session timeout, then SIGCONT", s, services, w1, end)
    v.notes.append(f"the woken worker exited with code {woke[0]}" if woke and woke[0] is not None else "w2 kept running")
    if woke != [70]:  # it may have written rows stale since its partitions moved
        v.checks["state = oracle"] = f"the woken worker did not exit 70 (its freeze guard): {woke}"
    return v


def redelivery(ctx: Context) -> Verdict:
    s = ctx.scenario()
    w = s.worker("w1").start()
    services, _ = drive(ctx, s)
    # Every input record twice more, as they are (same keys, values, headers).
    again = []
    for topic in s.topics:
        for r in s.kafka.read(topic, timeout=2.0):
            again.append((topic, r["key"], r["value"], list(r["headers"].items())))
    s.kafka.produce(again + again)
    # A clean stop leaves the group empty only past its first generation (this broker starts
    # at 0, where aiokafka sends no LeaveGroup): restart once, then stop and rewind.
    w.stop()
    w.start()
    w.stop()
    rewind_group(s, 20)
    w.start()
    v = finish("every event delivered 3 times; group reset back 20 offsets", s, services, w, time.time())
    v.notes.append(f"{len(again)} records re-delivered twice")
    return v


def rewind_group(s: FaultScenario, n: int) -> None:
    """Move the tracker's committed input offsets back by ``n`` per partition."""
    import asyncio

    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import CommitFailedError, UnknownMemberIdError
    from aiokafka.structs import OffsetAndMetadata, TopicPartition

    async def go() -> None:
        tps = [TopicPartition(t, p) for t in s.topics for p in range(4)]
        admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka.bootstrap)
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(s.app_id, partitions=tps)
        finally:
            await admin.close()
        back = {tp: OffsetAndMetadata(max(0, m.offset - n), "") for tp, m in committed.items() if m.offset > 0}
        # The broker refuses a commit from outside a non-empty group: retry while the stopped
        # worker's membership ends.
        deadline = time.monotonic() + 30
        while back:
            c = AIOKafkaConsumer(bootstrap_servers=s.kafka.bootstrap, group_id=s.app_id, enable_auto_commit=False)
            await c.start()
            try:
                c.assign(tps)
                await c.commit(back)
                return
            except (CommitFailedError, UnknownMemberIdError):
                if time.monotonic() > deadline:
                    raise
            finally:
                await c.stop()
            await asyncio.sleep(1)

    asyncio.run(go())


def late_and_shuffled(ctx: Context) -> Verdict:
    s = ctx.scenario()
    w = s.worker("w1").start()
    # Sagas whose events arrive in a random order (event times say the real order).
    rng = random.Random(ctx.seed)
    t0 = time.time() - 4
    shuffled = []
    for n in range(6):
        sid = f"shuffled-{n}"
        evs = [order_event(s, t, sid, t0 + i * 0.5) for i, t in enumerate(FLOW)]
        rng.shuffle(evs)
        shuffled += evs
    s.kafka.produce(shuffled)
    services, _ = drive(ctx, s)
    # Late: the missing completion of each stalled step, after the tracker compensated.
    time.sleep(8)
    late = []
    for sid in services.ids:
        view = w.saga(sid)
        if view and view["status"] in ("compensating", "compensated") and view["compensated_by"] == "tracker":
            step = next(st for st in view["steps"] if st["state"] == "timed_out")
            late.append(service_event(s, view["saga_type"], step["name"], sid))
    s.kafka.produce([e for e in late if e is not None])
    v = finish("events shuffled within sagas; late events after compensation", s, services, w, time.time())
    v.notes.append(f"{len(shuffled)} shuffled events in 6 sagas; {len(late)} late completions")
    return v


FLOW = ("OrderCreated", "PaymentAuthorized", "InventoryReserved", "ShipmentCreated")
TOPIC = {
    "OrderCreated": "orders",
    "OrderCancelled": "orders",
    "PaymentAuthorized": "payments",
    "PaymentRefunded": "payments",
    "InventoryReserved": "inventory",
    "StockReleased": "inventory",
    "ShipmentCreated": "shipping",
}


def order_event(s: FaultScenario, event_type: str, saga_id: str, at: float) -> tuple[str, bytes, bytes, list[Any]]:
    from tracker.core.machine import iso

    body = {"id": f"{saga_id}:{event_type}", "type": event_type, "time": iso(at), "data": {"order_id": saga_id}}
    return (s.prefix + TOPIC[event_type], saga_id.encode(), json.dumps(body).encode(), [])


def service_event(s: FaultScenario, saga_type: str, step: str, saga_id: str) -> tuple[str, bytes, bytes, list[Any]] | None:
    from tracker.core.machine import iso

    d = s.catalog.current[saga_type]
    i = d.step_index(step)
    spec = d.steps[i]
    body: dict[str, Any] = {"id": f"{saga_id}:{step}:late", "type": spec.completed_by[0], "time": iso(time.time())}
    key = d.correlation.saga_id[0].path
    body["data"] = {key[-1]: saga_id}
    return (d.topics[i % len(d.topics)], saga_id.encode(), json.dumps(body).encode(), [])


HOSTILE: list[bytes] = [
    b"\xff\xfe\x00not utf-8",
    b"{not json",
    b"[" * 5000 + b"]" * 5000,
    json.dumps({"type": "OrderCreated", "id": "x", "time": "now", "data": {"order_id": "<script>alert(1)</script>"}}).encode(),
    json.dumps({"type": "OrderCreated", "id": "y", "data": {"order_id": "a" * 10_000}}).encode(),
    json.dumps({"type": "SomethingElse", "id": "z", "data": {}}).encode(),
    b"x" * 500_000,  # over the worker's SAGA_TRACKER_MAX_EVENT_BYTES below: oversized
    b"",
]


def hostile(ctx: Context) -> Verdict:
    """Malformed values mixed into the traffic, then every Kafka-level kind at once (records at,
    under and far over the size limit, 1 MB keys, headers that are not UTF-8, records on the saga
    log and the decisions topic that are not the tracker's): each on the dead-letter topic with
    its reason, the sagas at their oracle states, no agent crashed."""
    s = ctx.scenario()
    w = s.worker("w1").start()
    bad: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = [(s.prefix + "orders", b"k", value, []) for value in HOSTILE]
    cases = kafka_level(s)

    def inject(done: threading.Event) -> None:
        while not done.wait(1.0):
            s.kafka.produce(bad[:3])
        s.kafka.produce(bad)
        produce_large(s.kafka, [(t, k, v, h) for t, k, v, h, _ in cases.values()])

    services, end = drive(ctx, s, inject)
    v = finish("malformed and hostile input mixed in, Kafka-level hostile records", s, services, w, end)
    dead = s.kafka.read(s.topic("dead-letter"), timeout=3.0)
    v.notes.append(f"dead-lettered {len(dead)} records")
    by_hash = {hashlib.sha256(k).hexdigest().encode(): k for k in cases}
    reasons: dict[bytes | None, str] = {}
    for r in dead:  # a key cut to a prefix comes back with its size and hash: the case it was
        key = by_hash.get(r["headers"].get("x-dead-letter-original-key-sha256", b""), r["key"])
        reasons[key] = r["headers"]["x-dead-letter-reason"].decode()
        if key not in cases and r["headers"].get("x-source-topic", b"").decode() != s.prefix + "orders":
            v.notes.append(
                f"also dead-lettered: {r['headers']['x-source-topic'].decode()} {r['headers']['x-dead-letter-reason'].decode()}"
            )
    wrong = {k[:40]: (reasons.get(k), c[4]) for k, c in cases.items() if reasons.get(k) != c[4]}
    if len(dead) < len(bad) + len(cases) or wrong:
        v.checks["no saga lost"] = f"{len(dead)} dead letters for {len(bad) + len(cases)} bad records; wrong: {wrong}"
    if "Crashed" in w.tail(100_000):
        v.checks["no saga lost"] = "an agent crashed (faust restarted it past its record)"
    return v


def clock_skew(ctx: Context) -> Verdict:
    s = ctx.scenario()
    w1 = s.worker("w1").start()
    w2 = s.worker("w2", FAKETIME_DONT_FAKE_MONOTONIC="1")
    w2.wrapper = [faketime(), "-f", "-3s"]
    w2.start()
    services, end = drive(ctx, s)
    v = finish("one worker's clock 3 s behind (faketime)", s, services, w1, end)
    v.notes.append("a clock running ahead makes its worker fire early: see docs/faults.md")
    return v


def faketime() -> str:
    return tool("faketime", "faketime")


def wipe_state(ctx: Context) -> Verdict:
    s = ctx.scenario()
    workers = [s.worker("w1").start(), s.worker("w2").start()]

    def wipe(done: threading.Event) -> None:
        time.sleep(4)
        for w in workers:
            w.kill()
        for w in workers:
            shutil.rmtree(w.data, ignore_errors=True)
        for w in workers:
            w.start(wait=False)

    services, end = drive(ctx, s, wipe)
    for w in workers:
        w.wait_ready(90)
    return finish("every worker's local state wiped", s, services, workers[0], end)


def kill_in_recovery(ctx: Context) -> Verdict:
    s = ctx.scenario()
    w = s.worker("w1").start()
    services, _ = drive(ctx, s)
    w.kill()
    shutil.rmtree(w.data, ignore_errors=True)
    w.start(wait=False)
    killed = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # kill it while it replays its changelogs
        if "Recovery" in w.log.read_text(errors="replace")[-20000:] or time.monotonic() > deadline - 25:
            w.kill()
            killed = True
            break
        time.sleep(0.05)
    w.start()
    v = finish("SIGKILL during changelog recovery", s, services, w, time.time())
    v.notes.append("killed during recovery" if killed else "recovery was over before the kill")
    return v


def deadline_burst(ctx: Context) -> Verdict:
    s = ctx.scenario()
    w1, w2 = s.worker("w1").start(), s.worker("w2").start()
    # Every service stalls: 30 sagas whose payment deadlines all fall due within a second...
    services = ServicesThread(s, ctx.seed, Behaviour(fail_rate=0, stall_rate=1.0, duplicate_rate=0, reorder_rate=0))
    services.ids = [f"burst-{n:02d}" for n in range(30)]
    due_in = 5.0
    started = time.time() + due_in - TIMEOUT
    s.kafka.produce([order_event(s, "OrderCreated", sid, started + n / 30) for n, sid in enumerate(services.ids)])
    # ...while a third worker joins (a rebalance across the due time) and then one leaves.
    time.sleep(due_in - 1.5)
    s.worker("w3").start(wait=False)
    time.sleep(4)
    w2.stop()
    v = finish("a rebalance while a burst of deadlines is due", s, services, w1, time.time())
    v.notes.append("30 deadlines due within 1 s; w3 joined 1.5 s before, w2 left 2.5 s after")
    return v


def idle_partition(ctx: Context) -> Verdict:
    s = ctx.scenario()
    w = s.worker("w1").start()
    # Sagas on one partition only, all stalled at payment; then no traffic anywhere.
    from aiokafka.partitioner import DefaultPartitioner

    part = DefaultPartitioner()
    ids = [f"idle-{n}" for n in range(200) if part(f"idle-{n}".encode(), [0, 1, 2, 3], [0, 1, 2, 3]) == 0][:5]
    s.kafka.produce([order_event(s, "OrderCreated", sid, time.time()) for sid in ids])
    services = ServicesThread(s, ctx.seed, Behaviour(fail_rate=0, stall_rate=1.0, duplicate_rate=0, reorder_rate=0))
    services.ids = ids
    v = finish("a partition with no traffic while its deadlines fall due", s, services, w, time.time())
    return v


def broker_restart(ctx: Context) -> Verdict:
    own = EmbeddedBroker(log_path=str(ctx.tmp / "broker-restart.log"))
    own.start()
    kafka = Kafka(own.bootstrap)
    sub = Context(own, kafka, ctx.tmp, ctx.seed, ctx.sagas)
    s = sub.scenario()
    w = s.worker("w1").start()
    services, _ = drive(sub, s)
    recorded = []
    for topic in s.topics:
        recorded += [(topic, r["key"], r["value"], list(r["headers"].items())) for r in kafka.read(topic, timeout=2.0)]
    # Wait until the tracker has handled what is due, then keep what it emitted: the broker
    # loses it, the services have acted on it.
    nothing_due(w)
    emitted = kafka.read(s.topic("compensations"), timeout=3.0)
    services.stop()
    port = own.port
    own.stop()  # memory storage: every topic, offset and group is gone
    code = None
    try:
        code = w.wait_exit(60)
    except Exception:
        w.kill()
    loud = code not in (None, 0) or "Error" in w.tail(200)
    own = EmbeddedBroker(port, log_path=str(ctx.tmp / "broker-restart-2.log"))
    own.start()
    try:
        kafka.create(s.topics)
        kafka.produce(recorded)
        shutil.rmtree(w.data, ignore_errors=True)
        w.start()
        services = ServicesThread(s, ctx.seed, BEHAVIOUR)
        services.ids = sorted(
            {json.loads(v)["data"].get("order_id") or json.loads(v)["data"].get("task_id") for _, _, v, _ in recorded if v}
        )
        v = finish("broker restart (memory lost), input replayed", s, services, w, time.time(), before_loss=emitted)
        v.notes.append(
            f"worker {'failed loudly' if loud else 'did NOT fail loudly'} (exit {code}); recovered after the input was replayed"
        )
        if not loud:
            v.checks["no saga lost"] = "the worker did not fail loudly when the broker lost everything"
        return v
    finally:
        own.stop()


def saga_of(value: bytes) -> str:
    data = json.loads(value)["data"]
    return str(data.get("order_id") or data.get("task_id"))


ALL: dict[str, Callable[[Context], Verdict]] = {
    "baseline": baseline,
    "replay": replay_under_traffic,
    "sigkill": sigkill_random,
    "scale": scale,
    "burst": deadline_burst,
    "crash": crash_before_send,
    "zombie": zombie,
    "keyed": keyed_otherwise,
    "redelivery": redelivery,
    "late": late_and_shuffled,
    "hostile": hostile,
    "skew": clock_skew,
    "wipe": wipe_state,
    "recovery": kill_in_recovery,
    "idle": idle_partition,
    "broker": broker_restart,
}
REDUCED = ("baseline", "replay")  # what `make test` runs; `make faults` runs ALL
