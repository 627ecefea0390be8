"""The fault-injection harness: seeded traffic from the demo services, faults, then a verdict.

One ``Run`` per scenario: its own app id and topics on the broker, workers as real
processes (``tests.integration.harness.Worker``), the demo services in a thread of their own,
and at the end the invariants checked against the oracle (``oracle.py``), which only reads
the input topics and the definitions file.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.faults import oracle
from tests.integration.harness import Kafka, Scenario, Worker
from tracker.demo.services import Behaviour, Services, generate
from tracker.loader import builtin_paths, load_catalog

TIMEOUT = 6.0  # step timeout of the fault definitions (the shipped ones use 20 s)
CONFIRM = 120.0  # longer than any run: an undo is never re-requested, so ids are exact
# Seconds after a deadline (or the end of the faults) to act on it: a worker wedged by the
# broker exits after STALL seconds, is restarted and rejoins (~10 s), catches up, sweeps.
STALL = 15.0
HANDLED_BOUND = 45.0


def on_its_own(code: int | None) -> bool:
    """An exit the supervisor restarts (its watchdog, the freeze guard: 70), not a kill by the
    scenario (-9, 137) or a clean stop (0, -15)."""
    return code is not None and code > 0 and code != 137


def fault_definitions(prefix: str) -> str:
    """The shipped sagas on prefixed topics, with short step timeouts."""
    sagas = []
    for path in builtin_paths():
        sagas.extend(yaml.safe_load(Path(path).read_text())["sagas"])
    for s in sagas:
        s["topics"] = [prefix + t for t in s["topics"]]
        s.pop("ttl", None)
        s["compensation_policy"] = {"confirm_timeout": f"{CONFIRM:g}s", "max_attempts": 3, "backoff": 2}
        for st in s["steps"]:
            if "timeout" in st:
                st["timeout"] = f"{TIMEOUT:g}s"
    return yaml.safe_dump({"sagas": sagas}, sort_keys=False)


class FaultScenario(Scenario):
    """A scenario whose topics and definitions are the shipped sagas'."""

    def __init__(self, kafka: Kafka, tmp: Path, broker_url: str) -> None:
        self.kafka, self.tmp, self.broker_url = kafka, tmp, broker_url
        self.id = uuid.uuid4().hex[:8]
        self.prefix = f"f{self.id}-"
        self.app_id = f"faults-{self.id}"
        self.definitions = tmp / "sagas.yaml"
        self.definitions.write_text(fault_definitions(self.prefix))
        self.catalog = load_catalog([str(self.definitions)])
        self.topics = list(self.catalog.topics)
        kafka.create(self.topics)
        self.workers: list[Worker] = []
        self.restarts: list[str] = []
        self.done = threading.Event()
        self.supervisor = threading.Thread(target=self.supervise, daemon=True)
        self.supervisor.start()

    def worker(self, name: str = "w1", **env: str) -> Worker:
        # The watchdogs only when FAULTS is set (`make faults`, named scenarios): the supervisor
        # restarts workers there.
        stall = {"SAGA_TRACKER_STALL_TIMEOUT": f"{STALL:g}"} if os.environ.get("FAULTS") else {}
        return super().worker(name, **{**stall, **env})

    def supervise(self) -> None:
        """Restart a worker that exits on its own (its watchdog: code 70), as Kubernetes would.
        Kills by the scenario itself (-9, 137) and clean stops (0, -15) are left to it."""
        while not self.done.wait(1.0):
            for w in list(self.workers):
                code = w.process.poll() if w.process is not None else None
                if on_its_own(code):
                    self.restarts.append(f"{w.name} exited {code}")
                    w.start(wait=False)

    def close(self) -> None:
        self.done.set()
        super().close()


class ServicesThread:
    """The demo services and the saga generator, on an event loop of their own."""

    def __init__(self, s: FaultScenario, seed: int, behaviour: Behaviour) -> None:
        self.services = Services(s.kafka.bootstrap, s.catalog, s.topic("compensations"), behaviour, seed=seed)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.services.start())
        self.ids: list[str] = []

    def call(self, coro: Any, timeout: float = 120.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def generate(self, sagas: int, rate: float) -> None:
        types = list(self.services.catalog.current.values())
        self.ids += self.call(generate(self.services, sagas, rate, types, start=len(self.ids)), timeout=sagas / rate + 60)

    def stop(self) -> None:
        self.call(self.services.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def end_state(self) -> str:
        st: Counter[str] = self.services.stats
        fields_ = ("started", "duplicated", "reordered", "compensation_requests")
        parts = [f"{k} {st[k]}" for k in fields_]
        parts.append("stalled " + str(sum(v for k, v in st.items() if k.startswith("stalled:"))))
        parts.append("undone " + str(sum(v for k, v in st.items() if k.startswith("undone:"))))
        return ", ".join(parts)


@dataclass
class Verdict:
    scenario: str
    sagas: int
    checks: dict[str, str] = field(default_factory=dict)  # invariant -> "pass" or why not
    services: str = ""
    tracker: str = ""
    notes: list[str] = field(default_factory=list)
    routes: Counter[str] = field(default_factory=Counter)  # route -> events (running workers)

    @property
    def passed(self) -> bool:
        return all(v == "pass" for v in self.checks.values())


INVARIANTS = ("no saga lost", "compensations exact", "state = oracle", "no early timeout", "due handled in bound")


def input_records(s: FaultScenario) -> list[dict[str, Any]]:
    out = []
    for topic in s.topics:
        out += [{"topic": topic, **r} for r in s.kafka.read(topic, timeout=2.0)]
    return out


def read_model(worker: Worker, saga_id: str) -> dict[str, Any] | None:
    try:
        return worker.saga(saga_id)
    except OSError:
        return None


def settled(expect: dict[str, oracle.Expected], look: Callable[[str], dict[str, Any] | None]) -> list[str]:
    """Sagas whose read-model status differs from the oracle's (empty: settled)."""
    off = []
    for sid, e in expect.items():
        got = look(sid)
        if got is None or got["status"] != e.status:
            off.append(sid)
    return off


def verdict(
    name: str,
    s: FaultScenario,
    services: ServicesThread,
    reader: Worker,
    faults_end: float,
    *,
    settle: float = 60.0,
    before_loss: Sequence[dict[str, Any]] = (),
) -> Verdict:
    """Wait for the read model to settle, then check every invariant.

    ``before_loss``: compensation records emitted before the broker lost every topic; they
    count as emitted, and a saga rebuilt from the replayed input may then rightly decide
    nothing more (the services' undo confirmations are in that input)."""
    specs = oracle.load_specs(s.definitions.read_text())
    deadline = time.monotonic() + settle
    while True:
        expect = oracle.expected(specs, input_records(s))
        exact = {sid: e for sid, e in expect.items() if not e.ambiguous}
        off = settled(exact, lambda sid: read_model(reader, sid))
        if not off or time.monotonic() > deadline:
            break
        time.sleep(2)
    v = Verdict(name, len(expect), services=services.end_state())
    if s.restarts:
        v.notes.append("restarted after exiting on their own (watchdog): " + ", ".join(s.restarts))
    ambiguous = [f"{e.saga_id} ({e.ambiguous})" for e in expect.values() if e.ambiguous]
    if ambiguous:
        v.notes.append(f"{len(ambiguous)} ambiguous (left out): " + "; ".join(ambiguous[:5]))
    views = {sid: read_model(reader, sid) for sid in expect}
    lost = [sid for sid in expect if views[sid] is None]
    v.checks["no saga lost"] = "pass" if not lost and len(expect) >= len(services.ids) else f"missing {sorted(lost)[:5]}"
    wrong_status = [f"{sid}: {view['status']} != {exact[sid].status}" for sid in off if (view := views.get(sid))]

    records = [*before_loss, *s.kafka.read(s.topic("compensations"), timeout=3.0)]
    comps = [(r, json.loads(r["value"])) for r in records]
    lost_with_broker = {json.loads(r["value"])["id"] for r in before_loss}
    emitted = Counter(c["id"] for _, c in comps)
    wanted = set().union(*(e.compensations for e in exact.values())) if exact else set()
    amb_ids = {c for c in emitted if any(c.startswith(e.saga_id + ":") for e in expect.values() if e.ambiguous)}
    extra, missing = set(emitted) - wanted - amb_ids, wanted - set(emitted)
    dups = {i: n for i, n in emitted.items() if n > 1}
    if dups:
        v.notes.append(f"{len(dups)} compensation ids delivered more than once (same id): {sorted(dups)[:3]}")
    v.checks["compensations exact"] = (
        "pass" if not extra and not missing else f"unexpected {sorted(extra)[:4]}, missing {sorted(missing)[:4]}"
    )

    bad_state = list(wrong_status)
    for sid, e in exact.items():
        got = views.get(sid)
        if got is None:
            continue
        done = {st["name"] for st in got["steps"] if st["completed_at"] is not None}
        if done != e.completed:
            bad_state.append(f"{sid}: completed {sorted(done)} != {sorted(e.completed)}")
        theirs = {o["id"] for o in got["outbox"] if o["kind"] == "compensation"}
        if theirs != e.compensations and not (theirs <= e.compensations <= theirs | lost_with_broker):
            bad_state.append(f"{sid}: decided {sorted(theirs)} != {sorted(e.compensations)}")
    v.checks["state = oracle"] = "pass" if not bad_state else f"{len(bad_state)} differ: {bad_state[:3]}"
    if lost or bad_state or extra or missing:  # evidence for the post-mortem: the saga as seen and its input
        suspects = {*lost, *(b.split(":")[0] for b in bad_state), *(c.split(":")[0] for c in extra | missing)}
        inputs = input_records(s)
        # The saga log: in which order, and when, the tracker got the saga's records and timeouts.
        logged = [{"topic": "saga-log", **r} for r in s.kafka.read(f"{s.app_id}-saga-log", timeout=2.0)]

        def evidence(records: list[dict[str, Any]], sid: str) -> list[dict[str, Any]]:
            return [
                {
                    "at": f"{r['topic']}/{r['partition']}/{r['offset']}",
                    "ts": r["timestamp"],
                    "headers": {k: v.decode(errors="replace") for k, v in r.get("headers", {}).items()},
                    "value": r["value"].decode(errors="replace"),
                }
                for r in records
                if r["value"] and sid.encode() in r["value"]
            ]

        (s.tmp / "suspects.json").write_text(
            json.dumps(
                {
                    sid: {"view": views.get(sid), "input": evidence(inputs, sid), "saga_log": evidence(logged, sid)}
                    for sid in sorted(suspects)
                },
                indent=1,
                default=str,
            )
        )

    early, slow = [], []
    for r, c in comps:
        found = expect.get(c.get("saga_id", ""))
        if found is None or found.due is None or found.ambiguous:
            continue
        due, at = found.due, r["timestamp"] / 1000
        if at < due:
            early.append(f"{c['id']} {due - at:.2f}s early")
        if at > max(due, faults_end) + HANDLED_BOUND:
            slow.append(f"{c['id']} {at - max(due, faults_end):.1f}s after due")
    v.checks["no early timeout"] = "pass" if not early else "; ".join(early[:3])
    v.checks["due handled in bound"] = "pass" if not slow else "; ".join(slow[:3])
    statuses = Counter(view["status"] for view in views.values() if view)
    v.tracker = ", ".join(f"{k} {n}" for k, n in sorted(statuses.items())) + f"; compensations {sum(emitted.values())}"
    return v


def markdown(seed: int, verdicts: list[Verdict]) -> str:
    head = "| scenario | sagas | " + " | ".join(INVARIANTS) + " | services (end) | tracker (end) | notes |"
    rows = [head, "|" + "---|" * (len(INVARIANTS) + 5)]
    for v in verdicts:
        cells = ["PASS" if v.checks.get(i) == "pass" else f"FAIL: {v.checks.get(i, 'not run')}" for i in INVARIANTS]
        rows.append(
            f"| {v.scenario} | {v.sagas} | " + " | ".join(cells) + f" | {v.services} | {v.tracker} | {'; '.join(v.notes)} |"
        )
    return f"Seed {seed}.\n\n" + "\n".join(rows) + "\n"


def pick(rng: random.Random, workers: list[Worker]) -> Worker:
    return rng.choice(workers)
