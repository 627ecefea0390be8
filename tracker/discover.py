"""``saga-tracker discover``: read a window of the services' topics and draft their sagas.

The mining is pure (``tracker.core.discovery``); this reads the records, in timestamp order
across partitions (as replay does), decodes each JSON value and hands over its type, time and
body. A record that cannot be used (not JSON, not an object, no type, larger than the event
limit) is skipped and counted by reason, never fatal. Without ``--correlation`` the key is
proposed from the first ``SAMPLE`` records (held in memory, then mined with the rest):
the best-ranked path drafts one saga; the event types it does not reach are tried with the
next best key, so topics carrying two sagas give two drafts.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from tracker.core.correlation import Record
from tracker.core.discovery import Draft, KeyFinder, Miner, mine, render, value_at
from tracker.core.times import parse_time
from tracker.generations.replay import merged, open_window
from tracker.kafka import clients

SAMPLE = 20_000  # records held to propose the correlation key
MAX_KEYS = 4  # sagas drafted from one window at most


@dataclass
class Seen:
    event_type: str
    at: float
    topic: str
    body: dict[str, Any]


@dataclass
class Discovery:
    """One run's state: the records skipped (why), the miners per key, the counts."""

    max_instances: int
    max_bytes: int
    keys: list[str] = field(default_factory=list)
    records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    miners: dict[str, Miner] = field(default_factory=dict)
    topics_of: dict[str, set[str]] = field(default_factory=dict)  # key -> topics its events came from
    unkeyed: Counter[str] = field(default_factory=Counter)  # event types no key reached

    def decode(self, record: Record) -> Seen | None:
        self.records += 1
        value = record.value
        if value is None:
            self.skipped["empty"] += 1
            return None
        if len(value) > self.max_bytes:
            self.skipped["oversized"] += 1
            return None
        try:
            body = orjson.loads(value)
        except orjson.JSONDecodeError:
            self.skipped["not_json"] += 1
            return None
        if not isinstance(body, dict):
            self.skipped["not_an_object"] += 1
            return None
        event_type = body.get("type")
        if not isinstance(event_type, str) or not 0 < len(event_type) <= 200:
            self.skipped["no_type"] += 1
            return None
        at = parse_time(body.get("time"))
        if at is None:
            at = record.timestamp if record.timestamp is not None else 0.0
        return Seen(event_type, at, record.topic, body)

    def propose(self, sample: list[Seen]) -> list[tuple[str, int, list[str]]]:
        """Keys for the sample's types: the best one, then the best for what it leaves out."""
        finder = KeyFinder()
        for s in sample:
            finder.add(s.event_type, s.body)
        chosen: list[tuple[str, int, list[str]]] = []
        left = {s.event_type for s in sample}
        while left and len(chosen) < MAX_KEYS:
            ranked = [r for r in finder.ranked(left) if r[0] not in {c[0] for c in chosen}]
            if not ranked:
                break
            chosen.append(ranked[0])
            reached = {s.event_type for s in sample if value_at(s.body, ranked[0][0]) is not None}
            left -= reached
        return chosen

    def add(self, seen: Seen) -> None:
        for key in self.keys:
            value = value_at(seen.body, key)
            if value is not None:
                miner = self.miners.setdefault(key, Miner(key, self.max_instances))
                miner.add(value, seen.event_type, seen.at)
                self.topics_of.setdefault(key, set()).add(seen.topic)
                return
        self.unkeyed[seen.event_type] += 1

    def drafts(self, names: list[str]) -> list[Draft]:
        out = []
        for i, key in enumerate(self.keys):
            miner = self.miners.get(key)
            if miner is None or not miner.instances:
                continue
            name = names[i] if i < len(names) else key.rsplit(".", 1)[-1].removesuffix("_id") + "_saga"
            draft = mine(miner, name, sorted(self.topics_of.get(key, ())))
            for t, n in self.unkeyed.items():
                draft.left_out.setdefault(t, f"{n} events with no value at {' or '.join(self.keys)}")
            out.append(draft)
        return out


async def records(bootstrap: str, topics: list[str], from_time: float | None) -> AsyncIterator[Record]:
    """The topics' records from ``from_time`` (or the earliest) to their end, by timestamp."""
    consumer = clients.consumer(bootstrap, purpose="discover", enable_auto_commit=False)
    await consumer.start()
    try:
        window, _ = await open_window(consumer, topics, from_time)
        async for r in merged(consumer, window, {}, cutoff=time.time(), since=from_time):
            yield r
    finally:
        await consumer.stop()


async def discover(
    bootstrap: str,
    topics: list[str],
    *,
    correlation: str | None,
    from_time: float | None,
    max_records: int,
    max_instances: int,
    max_bytes: int,
    names: list[str],
    margin: float,
) -> tuple[str, dict[str, Any]]:
    """The draft YAML and the report."""
    began = time.monotonic()
    run = Discovery(max_instances, max_bytes, [correlation] if correlation else [])
    sample: list[Seen] = []
    proposed: list[tuple[str, int, list[str]]] = []
    async for record in records(bootstrap, topics, from_time):
        if run.records >= max_records:
            break
        seen = run.decode(record)
        if seen is None:
            continue
        if run.keys:
            run.add(seen)
            continue
        sample.append(seen)
        if len(sample) >= SAMPLE:
            proposed = run.propose(sample)
            run.keys = [p[0] for p in proposed]
            for s in sample:
                run.add(s)
            sample = []
    if not run.keys and sample:
        proposed = run.propose(sample)
        run.keys = [p[0] for p in proposed]
    for s in sample:
        run.add(s)
    drafts = run.drafts(names)
    report = {
        "records": run.records,
        "skipped": sum(run.skipped.values()),
        "skipped_by_reason": dict(run.skipped),
        "topics": topics,
        "seconds": round(time.monotonic() - began, 2),
        "keys": [{"path": p, "joins": n, "types": t} for p, n, t in proposed]
        or [{"path": k, "joins": None, "types": None} for k in run.keys],
        "sagas": [summary(d, run.miners[d.key]) for d in drafts],
    }
    yaml_text = render(drafts, margin, report) if drafts else ""
    return yaml_text, report


def summary(d: Draft, miner: Miner) -> dict[str, Any]:
    return {
        "name": d.name,
        "key": d.key,
        "instances": d.instances,
        "fit": d.fitting,
        "duplicates": miner.duplicates,
        "instance_cap_hit": bool(miner.dropped_events),
        "events_left_out_by_cap": miner.dropped_events,
        "variants": [{"events": list(v), "instances": n} for v, n in d.variants[:10]],
        "variant_count": len(d.variants),
        "misfits": [{"events": list(v), "instances": n} for v, n in d.misfits[:20]],
        "left_out": d.left_out,
    }


def text_report(report: dict[str, Any]) -> str:
    """The report as an operator reads it (stderr, beside the YAML on stdout)."""
    lines = [
        f"read {report['records']} records in {report['seconds']}s; skipped {report['skipped']}"
        + (f" ({', '.join(f'{k} {n}' for k, n in sorted(report['skipped_by_reason'].items()))})" if report["skipped"] else ""),
    ]
    for k in report["keys"]:
        joined = f": joins {k['joins']} (value, type) pairs over {', '.join(k['types'])}" if k["joins"] else " (given)"
        lines.append(f"correlation key {k['path']}{joined}")
    for s in report["sagas"]:
        share = s["fit"] / s["instances"] if s["instances"] else 0.0
        lines.append(f"\nsaga {s['name']} (by {s['key']}): {s['instances']} instances, {share:.0%} fit the draft exactly")
        if s["instance_cap_hit"]:
            lines.append(
                f"  instance cap hit: {s['events_left_out_by_cap']} events of later instances left out (--max-instances)"
            )
        lines.append(f"  {s['variant_count']} variants; the most common:")
        for v in s["variants"]:
            lines.append(f"    {v['instances']:6}  {' -> '.join(v['events'])}")
        if s["misfits"]:
            lines.append("  variants the draft does not explain:")
            for v in s["misfits"]:
                lines.append(f"    {v['instances']:6}  {' -> '.join(v['events'])}")
        for t, why in sorted(s["left_out"].items()):
            lines.append(f"  left out {t}: {why}")
    return "\n".join(lines)
