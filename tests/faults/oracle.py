"""The offline oracle: what every saga must have come to, computed from the input alone.

Written independently of the tracker: it reads the definitions YAML itself (no
``tracker.definitions``), the services' topics as plain JSON, and applies the contract in
the README with event times:

- a step is done when its completion event exists; the next step is pending from the latest
  completion before it, and due ``timeout`` later;
- a failure event for the pending step (before its due time) fails the saga: the services
  undo their own steps and the tracker emits nothing (confirmations arrive in time);
- a pending step with no completion or failure by its due time stalls: the tracker emits
  ``{saga}:{step}:compensate:1`` for every completed step with a compensation, and for every
  step whose completion arrives later while the saga is compensating (a late completion is
  undone too; after the saga is compensated it is fenced: recorded, never acted on);
- a compensating saga is compensated once every step being undone has its confirmation.

Events within ``margin`` seconds of a due time could go either way: such sagas are
reported as ambiguous and left out of the exact checks (the generator avoids them).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml

MAX_ID = 512  # the event contract: longer saga ids are dead-lettered (saga_id_too_long)
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(value: Any) -> float | None:
    if value is None or value == "none":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?", str(value).strip())
    assert m, f"duration {value!r}"
    return float(m.group(1)) * UNITS[m.group(2) or "s"]


def listed(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


@dataclass
class StepSpec:
    name: str
    completed_by: list[str]
    failed_by: list[str]
    timeout: float | None
    compensation: str | None
    confirmed_by: list[str]


@dataclass
class SagaSpec:
    name: str
    start: str
    topics: list[str]
    id_path: list[str]
    steps: list[StepSpec]


def load_specs(text: str) -> dict[str, SagaSpec]:
    out = {}
    for s in yaml.safe_load(text)["sagas"]:
        steps = []
        for st in s["steps"]:
            comp = st.get("compensation")
            comp = None if comp in (None, "none") else comp
            steps.append(
                StepSpec(
                    st["name"],
                    listed(st.get("completed_by")),
                    listed(st.get("failed_by")),
                    seconds(st.get("timeout")),
                    comp["emit"] if comp else None,
                    listed(comp["confirmed_by"]) if comp else [],
                )
            )
        path = s["correlation"]["saga_id"]
        path = path[0] if isinstance(path, list) else path
        out[s["name"]] = SagaSpec(s["name"], s["start"], list(s["topics"]), path.split("."), steps)
    return out


def event_time(body: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(body["time"]).replace("Z", "+00:00")).timestamp()


@dataclass
class Expected:
    saga_id: str
    saga_type: str
    status: str
    compensations: set[str] = field(default_factory=set)
    completed: set[str] = field(default_factory=set)
    undone: set[str] = field(default_factory=set)  # steps whose undo was confirmed
    due: float | None = None  # the stalled step's deadline, when the tracker must act
    ambiguous: str = ""


def expected(specs: dict[str, SagaSpec], records: list[dict[str, Any]], margin: float = 1.0) -> dict[str, Expected]:
    """``records``: every record of the services' topics ({topic, value})."""
    by_topic_type = {(t, ev): s for s in specs.values() for t in s.topics for ev in types_of(s)}
    events: dict[str, dict[str, tuple[str, float]]] = defaultdict(dict)  # saga -> event id -> (type, time)
    kind: dict[str, str] = {}
    for r in records:
        try:
            body = json.loads(r["value"])
        except (ValueError, TypeError, RecursionError):
            continue  # not an event (hostile input): the tracker dead-letters it
        if not isinstance(body, dict):
            continue
        spec = by_topic_type.get((r["topic"], str(body.get("type"))))
        if spec is None:
            continue
        node: Any = body
        for part in spec.id_path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, str) or not node or len(node) > MAX_ID or "id" not in body or "time" not in body:
            continue  # the README's contract: such an event is dead-lettered
        try:
            at = event_time(body)
        except (ValueError, TypeError):
            continue  # no readable event time: the tracker dead-letters it (bad_event_time)
        events[node].setdefault(str(body["id"]), (str(body["type"]), at))
        kind[node] = spec.name
    return {sid: judge(specs[kind[sid]], sid, evs, margin) for sid, evs in events.items()}


def types_of(s: SagaSpec) -> set[str]:
    return {s.start} | {t for st in s.steps for t in (*st.completed_by, *st.failed_by, *st.confirmed_by)}


def judge(spec: SagaSpec, saga_id: str, evs: dict[str, tuple[str, float]], margin: float) -> Expected:
    first: dict[str, float] = {}  # event type -> earliest time
    for etype, t in evs.values():
        first[etype] = min(t, first.get(etype, t))

    def when(types: list[str]) -> float | None:
        found = [first[t] for t in types if t in first]
        return min(found) if found else None

    out = Expected(saga_id, spec.name, "running")
    if spec.start not in first:
        out.status = "awaiting_start"
        return out
    done_at: dict[int, float] = {}
    out.completed = {st.name for st in spec.steps if when(st.completed_by) is not None}
    for i, st in enumerate(spec.steps):
        if i == 0:
            done_at[0] = when(st.completed_by) or first[spec.start]
            continue
        start = max(done_at.values())
        due = None if st.timeout is None else start + st.timeout
        c, f = when(st.completed_by), when(st.failed_by)
        if f is not None and (c is None or f < c) and (due is None or f < due - margin):
            # Services undo their own completed steps; the tracker only follows.
            undo = {j for j in range(i) if spec.steps[j].compensation}
            out.undone = {spec.steps[j].name for j in undo if when(spec.steps[j].confirmed_by) is not None}
            out.status = "compensated" if len(out.undone) == len(undo) else "compensating"
            return out
        if c is not None and (due is None or c < due - margin):
            done_at[i] = c
            continue
        if due is None:
            return out  # waits without limit (running)
        for near in (c, f):
            if near is not None and abs(near - due) <= margin:
                out.ambiguous = f"step {st.name} event {near - due:+.2f}s from its deadline"
        # Stalled: undo every step completed before the deadline, and each completion that
        # comes late while the saga is still compensating; once every undo is confirmed the
        # saga is compensated (terminal) and a later completion is fenced: recorded only.
        out.due = due
        compensable = {j: when(sj.completed_by) for j, sj in enumerate(spec.steps) if sj.compensation}
        undo = {j for j in compensable if j < i}
        while True:
            confirmed = [when(spec.steps[j].confirmed_by) for j in undo]
            ended = due if not undo else max(confirmed) if all(t is not None for t in confirmed) else None  # type: ignore[type-var]
            late = set()
            for j, c in compensable.items():
                if j < i or c is None or j in undo:
                    continue
                if ended is None or c < ended - margin:
                    late.add(j)
                elif abs(c - ended) <= margin:
                    out.ambiguous = f"late completion of {spec.steps[j].name} {c - ended:+.2f}s from the saga's end"
            if not late:
                break
            undo |= late
        out.compensations = {f"{saga_id}:{spec.steps[j].name}:compensate:1" for j in undo}
        out.undone = {spec.steps[j].name for j in undo if when(spec.steps[j].confirmed_by) is not None}
        out.status = "compensated" if len(out.undone) == len(undo) else "compensating"
        return out
    out.status = "completed"
    return out
