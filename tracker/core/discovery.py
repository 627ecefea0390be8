"""Discovery: a draft saga definition mined from the events already on the services' topics.

In a choreography the saga exists only implicitly, spread over services. This reads what
they publish (each event: its type, time and JSON body) and proposes what a definition
says, with the evidence beside it:

- the **correlation key**: the field whose values join events of several types one
  instance at a time (``data.order_id``), rather than many instances at once
  (``data.customer_id``): paths are ranked by how many (value, event type) pairs they join;
- the **steps**: the start (the type most instances begin with), then each next completion:
  the type that follows the previous one in most instances reaching it;
- **failures**: off-path types that end an instance's forward progress at one step and come
  before any other off-path event there (the undo events follow them);
- **compensations**: the other off-path types, each the undo of the newest step present in
  (nearly) all of its instances;
- **timeouts**: the p99 of the observed step duration (from the previous step's completion)
  times a margin, rounded up;
- **variants** (as process mining lists them) and how many instances fit the draft exactly.

Memory is bounded: at most ``max_instances`` instances are kept (each a few types and times);
events of further instances are counted, not kept. Standard library only.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

# CloudEvents attributes that identify the event itself, never an instance.
NOT_KEYS = frozenset({"id", "type", "time", "specversion", "source", "datacontenttype", "dataschema"})
MAX_DEPTH = 4
MAX_VALUE = 200  # longer strings are payloads, not keys
MIN_SHARE = 0.01  # an off-path type in fewer instances than this is too rare to place
FORWARD = 0.3  # a next step follows its predecessor in at least this share of instances reaching it
FAILURE_FIRST = 0.8  # a failure comes before every other off-path event in this share of its instances
UNDO_PRESENT = 0.95  # an undo's step is present in this share of its instances
NICE = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1200, 1800, 3600, 7200, 14400, 28800, 86400)


def leaves(body: Any, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, str]]:
    """Every scalar string or integer field of a JSON object, by dotted path."""
    if not isinstance(body, dict) or depth >= MAX_DEPTH:
        return
    for k, v in body.items():
        if not isinstance(k, str):
            continue
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from leaves(v, path + ".", depth + 1)
        elif isinstance(v, bool):
            continue
        elif isinstance(v, int) or (isinstance(v, str) and 0 < len(v) <= MAX_VALUE):
            yield path, str(v)


def value_at(body: Any, path: str) -> str | None:
    node = body
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    if isinstance(node, bool) or not isinstance(node, (str, int)):
        return None
    text = str(node)
    return text if 0 < len(text) <= MAX_VALUE else None


@dataclass
class KeyFinder:
    """Which field joins events of several types, one instance at a time (a sample's worth)."""

    values: dict[str, dict[str, set[str]]] = field(default_factory=dict)  # path -> value -> event types

    def add(self, event_type: str, body: Any) -> None:
        for path, value in leaves(body):
            if path not in NOT_KEYS:
                self.values.setdefault(path, {}).setdefault(value, set()).add(event_type)

    def ranked(self, types: set[str] | None = None) -> list[tuple[str, int, list[str]]]:
        """(path, how many (value, type) pairs it joins, the types it joins), best first;
        ``types``: only count those."""
        out = []
        for path, by_value in self.values.items():
            joined, seen = 0, set()
            for found in by_value.values():
                mine = found if types is None else found & types
                if len(mine) >= 2:
                    joined += len(mine)
                    seen |= mine
            if joined:
                out.append((path, joined, sorted(seen)))
        return sorted(out, key=lambda r: (-r[1], r[0]))


@dataclass
class Miner:
    """The instances one correlation key groups the events into: first time of each type."""

    key: str
    max_instances: int
    instances: dict[str, dict[str, float]] = field(default_factory=dict)
    duplicates: int = 0
    dropped_events: int = 0  # events of instances beyond the cap

    def add(self, value: str, event_type: str, at: float) -> None:
        seen = self.instances.get(value)
        if seen is None:
            if len(self.instances) >= self.max_instances:
                self.dropped_events += 1
                return
            seen = self.instances[value] = {}
        if event_type in seen:
            self.duplicates += 1
            seen[event_type] = min(seen[event_type], at)
        else:
            seen[event_type] = at


@dataclass
class Step:
    name: str
    completed_by: str
    failed_by: list[str] = field(default_factory=list)
    confirmed_by: list[str] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)

    def timeout(self, margin: float) -> float | None:
        if not self.durations:
            return None
        return nice(percentile(self.durations, 0.99) * margin)


@dataclass
class Draft:
    name: str
    key: str
    start: str
    steps: list[Step]
    instances: int
    fitting: int
    variants: list[tuple[tuple[str, ...], int]]
    left_out: dict[str, str]  # event type -> why
    topics: list[str] = field(default_factory=list)
    misfits: list[tuple[tuple[str, ...], int]] = field(default_factory=list)  # variants the draft does not explain


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def nice(seconds: float) -> float:
    """Rounded up to a duration a person would write."""
    for n in NICE:
        if seconds <= n:
            return float(n)
    return float(math.ceil(seconds / 86400) * 86400)


def step_name(event_type: str, taken: set[str]) -> str:
    """``PaymentAuthorized`` -> ``payment``; unique within the saga."""
    words = re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", event_type) or [event_type]
    base = re.sub(r"[^a-z0-9_]", "_", words[0].lower()) or "step"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def mine(miner: Miner, name: str, topics: list[str] | None = None) -> Draft:
    """The draft definition of the instances ``miner`` grouped."""
    seqs = [tuple(sorted(times, key=lambda t: (times[t], t))) for times in miner.instances.values()]
    presence: Counter[str] = Counter(t for s in seqs for t in s)
    firsts = Counter(s[0] for s in seqs if s)
    start = firsts.most_common(1)[0][0]
    before: Counter[tuple[str, str]] = Counter()
    for s in seqs:
        for i, a in enumerate(s):
            for b in s[i + 1 :]:
                before[(a, b)] += 1
    chain = [start]
    while True:
        last = chain[-1]
        options = [
            (before[(last, b)], b)
            for b in presence
            if b not in chain and before[(last, b)] > before[(b, last)] and all(before[(c, b)] >= before[(b, c)] for c in chain)
        ]
        if not options:
            break
        count, best = max(options)
        if count < FORWARD * presence[last]:
            break
        chain.append(best)
    index = {t: i for i, t in enumerate(chain)}
    rare = {t for t, n in presence.items() if t not in index and n < max(2, MIN_SHARE * len(seqs))}
    off = [t for t in presence if t not in index and t not in rare]
    # Per off-path type: the newest chain step reached before it, and whether it came first.
    reached: dict[str, Counter[int]] = {t: Counter() for t in off}
    first_off: Counter[str] = Counter()
    for s in seqs:
        top, seen_off = -1, False
        for t in s:
            if t in index:
                top = max(top, index[t])
            elif t in reached:
                reached[t][top] += 1
                if not seen_off:
                    first_off[t] += 1
                seen_off = True
    failures: dict[str, int] = {}
    for t in off:
        step, n = reached[t].most_common(1)[0]
        later = step + 1
        # The step it fails never completes after all (but for a few late events).
        ends_there = later < len(chain) and sum(chain[later] in s for s in seqs if t in s) <= 0.05 * presence[t]
        if ends_there and n >= 0.9 * presence[t] and first_off[t] >= FAILURE_FIRST * presence[t]:
            failures[t] = later
    taken: set[str] = set()
    steps = [Step(step_name(t, taken), t) for t in chain]
    for t, at in sorted(failures.items()):
        steps[at].failed_by.append(t)
    left_out = {t: f"too rare to place: in {presence[t]} of {len(seqs)} instances" for t in sorted(rare)}
    for t in sorted(set(off) - set(failures)):
        holders = [s for s in seqs if t in s]
        undone = [j for j, c in enumerate(chain) if sum(c in s for s in holders) >= UNDO_PRESENT * len(holders)]
        if undone:
            steps[max(undone)].confirmed_by.append(t)
        else:
            left_out[t] = "off the main path, and neither a failure nor the undo of one step"
    for times in miner.instances.values():
        for i in range(1, len(chain)):
            prev, cur = times.get(chain[i - 1]), times.get(chain[i])
            if prev is not None and cur is not None:
                steps[i].durations.append(max(0.0, cur - prev))
    variants = Counter(seqs).most_common()
    misfits = [(v, n) for v, n in variants if not fits(v, steps)]
    fitting = len(seqs) - sum(n for _, n in misfits)
    return Draft(name, miner.key, start, steps, len(seqs), fitting, variants, left_out, topics or [], misfits)


def fits(variant: tuple[str, ...], steps: list[Step]) -> bool:
    """An instance the draft accounts for exactly: the steps in order up to where it is, then
    at most a failure of the next step, then only undo events of steps it completed."""
    forward = {s.completed_by: i for i, s in enumerate(steps)}
    fails = {t: i for i, s in enumerate(steps) for t in s.failed_by}
    undoes = {t: i for i, s in enumerate(steps) for t in s.confirmed_by}
    done, failed = -1, False
    for t in variant:
        if t in forward and not failed and forward[t] == done + 1 and not any(u in undoes for u in variant[: variant.index(t)]):
            done += 1
        elif t in fails and not failed and fails[t] == done + 1:
            failed = True
        elif t in undoes and undoes[t] <= done:
            continue
        else:
            return False
    return done >= 0


def render(drafts: list[Draft], margin: float, report: Mapping[str, Any]) -> str:
    """The drafts as the tracker's definitions YAML, the evidence in comments."""
    out = [
        "# Drafted by `saga-tracker discover` from "
        f"{report['records']} records ({report['skipped']} skipped) on {', '.join(report['topics'])}.",
        "# Review it: name the steps and the compensation commands your services expect, then",
        "# `saga-tracker validate` it.",
        "sagas:",
    ]
    for d in drafts:
        share = d.fitting / d.instances if d.instances else 0.0
        out += [
            f"  - name: {d.name}",
            "    version: 1",
            f"    description: Discovered from {d.instances} instances ({share:.0%} fit this draft exactly).",
            f"    topics: [{', '.join(d.topics)}]",
            f"    start: {d.start}",
            "    correlation:",
            f"      saga_id: {d.key}",
            "    steps:",
        ]
        for i, s in enumerate(d.steps):
            out.append(f"      - name: {s.name}")
            out.append(f"        completed_by: {s.completed_by}")
            if s.failed_by:
                out.append(f"        failed_by: [{', '.join(s.failed_by)}]")
            if i > 0:
                timeout = s.timeout(margin)
                if timeout is None:
                    out.append("        # no duration observed: no timeout proposed")
                else:
                    p50, p99 = percentile(s.durations, 0.5), percentile(s.durations, 0.99)
                    out.append(
                        f"        timeout: {timeout:g}s  # observed n={len(s.durations)}, p50 {p50:.2f}s, "
                        f"p99 {p99:.2f}s, x{margin:g}"
                    )
            if s.confirmed_by:
                command = "Undo" + "".join(p.capitalize() for p in s.name.split("_"))
                out.append(
                    f"        compensation: {{emit: {command}, confirmed_by: [{', '.join(s.confirmed_by)}]}}"
                    "  # emit: the command your service expects"
                )
            else:
                out.append("        compensation: none  # no undo of this step in the traffic: irreversible, or never needed")
    return "\n".join(out) + "\n"
