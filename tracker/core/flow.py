"""Flow: the figures of ``GET /sagas/stats`` and the page's flow diagram, kept incrementally.

Every stored saga contributes *marks* derived from its summary row: its status, the step it
is pending at, the step where it went wrong (failed, timed out, or forced while pending there)
and what came of that, and one duration bucket per completed step. The census counts marks per
partition as sagas change (``census``), so a stats request sums counters instead of reading
every saga. What depends on the clock (past a deadline now) comes from the deadline index,
which holds only sagas with a deadline, oldest first: the request reads the overdue ones.

Step durations are counted in fixed buckets, so the workers' figures add up; p50 and p95
are interpolated within a bucket, as Prometheus' ``histogram_quantile`` does.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tracker.core import state as st

# Upper bounds (seconds) of the step-duration buckets; one more bucket holds everything above.
BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400, 604800)
MEASURES = ("pending", "stuck", "failed", "compensated")
NONE = -1  # the bucket field of a mark that is not a duration

# (what, saga type, status or step, bucket): "status" | "pending" | "failed" | "compensated"
# | "manual" | "took"
Mark = tuple[str, str, str, int]


def empty_cell() -> dict[str, Any]:
    """One step's figures before anything is counted."""
    return {**dict.fromkeys(MEASURES, 0), "completed": 0, "buckets": {}}


def bucket(seconds: float) -> int:
    return bisect.bisect_left(BUCKETS, seconds)


def step_seconds(steps: Sequence[Any], names: Sequence[str]) -> dict[str, float]:
    """How long each completed step took: from the completion of the step before it to its
    own, in event time, so the figure does not depend on the order events arrived in
    (``StepState``s; the start step has none)."""
    out: dict[str, float] = {}
    for i in range(1, min(len(steps), len(names))):
        before, done = steps[i - 1].completed_at, steps[i].completed_at
        if before is not None and done is not None:
            out[names[i]] = max(0.0, done - before)
    return out


def marks(row: Mapping[str, Any]) -> list[Mark]:
    """What one saga counts for (``row``: its ``placement`` or summary)."""
    saga_type, status = row["saga_type"], row["status"]
    out: list[Mark] = [("status", saga_type, status, NONE)]
    if status == st.RUNNING and row["current_step"]:
        out.append(("pending", saga_type, row["current_step"], NONE))
    trouble = row.get("trouble_step")
    if trouble:
        out.append(("failed", saga_type, trouble, NONE))
        if status == st.COMPENSATED:
            out.append(("compensated", saga_type, trouble, NONE))
        elif status == st.FAILED_NEEDS_MANUAL:
            out.append(("manual", saga_type, trouble, NONE))
    for name, seconds in (row.get("step_seconds") or {}).items():
        out.append(("took", saga_type, name, bucket(seconds)))
    return out


def where_stuck(row: Mapping[str, Any]) -> str | None:
    """The step a saga past its deadline is stuck at: where it waits, or where it went wrong
    (its compensation overdue); None before it started."""
    return row.get("current_step") or row.get("trouble_step") or None


def figures(
    steps: Mapping[str, Sequence[str]],
    counts: Counter[Mark],
    overdue: Iterable[Mapping[str, Any]],
    oldest: Mapping[tuple[str, str], float],
    now: float,
) -> dict[str, Any]:
    """One worker's part of ``/sagas/stats``.

    ``steps``: each saga type's steps in order; ``counts``: the census marks of the partitions
    answered for; ``overdue``: summary rows of the sagas past their deadline (not terminal);
    ``oldest``: per (type, step), since when the longest-pending saga waits there.
    """
    out: dict[str, Any] = {"counts": {}, "stuck": {}, "oldest_in_flight_seconds": {}, "flow": {}}
    flow: dict[str, dict[str, dict[str, Any]]] = out["flow"]
    for saga_type, names in steps.items():
        flow[saga_type] = {name: empty_cell() for name in names}
    for (what, saga_type, name, b), n in counts.items():
        if n <= 0:
            continue
        if what == "status":
            out["counts"].setdefault(saga_type, {})[name] = n
            continue
        cell = flow.get(saga_type, {}).get(name)
        if cell is None:  # a step of an older definition version: no place in the diagram
            continue
        if what == "took":
            cell["completed"] += n
            cell["buckets"][str(b)] = cell["buckets"].get(str(b), 0) + n
        elif what == "manual":
            cell["stuck"] += n
            out["stuck"][saga_type] = out["stuck"].get(saga_type, 0) + n
        else:
            cell[what] += n
    for row in overdue:
        saga_type = row["saga_type"]
        out["stuck"][saga_type] = out["stuck"].get(saga_type, 0) + 1
        cell = flow.get(saga_type, {}).get(where_stuck(row) or "")
        if cell is not None:
            cell["stuck"] += 1
    for (saga_type, name), since in oldest.items():
        out["oldest_in_flight_seconds"].setdefault(saga_type, {})[name] = max(0.0, now - since)
    return out


def merge(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The workers' parts added up, with p50/p95 step durations from the summed buckets."""
    out: dict[str, Any] = {"counts": {}, "stuck": {}, "oldest_in_flight_seconds": {}, "flow": {}}
    for p in parts:
        for saga_type, by_status in p["counts"].items():
            into = out["counts"].setdefault(saga_type, {})
            for status, n in by_status.items():
                into[status] = into.get(status, 0) + n
        for saga_type, n in p["stuck"].items():
            out["stuck"][saga_type] = out["stuck"].get(saga_type, 0) + n
        for saga_type, ages in p["oldest_in_flight_seconds"].items():
            into = out["oldest_in_flight_seconds"].setdefault(saga_type, {})
            for name, age in ages.items():
                into[name] = max(into.get(name, 0.0), age)
        for saga_type, cells in p.get("flow", {}).items():
            into = out["flow"].setdefault(saga_type, {})
            for name, cell in cells.items():
                mine = into.setdefault(name, empty_cell())
                for measure in (*MEASURES, "completed"):
                    mine[measure] += cell[measure]
                for b, n in cell["buckets"].items():
                    mine["buckets"][b] = mine["buckets"].get(b, 0) + n
    for cells in out["flow"].values():
        for cell in cells.values():
            buckets = {int(b): n for b, n in cell.pop("buckets").items()}
            cell["p50_seconds"] = quantile(buckets, 0.5)
            cell["p95_seconds"] = quantile(buckets, 0.95)
    return out


def quantile(buckets: Mapping[int, int], q: float) -> float | None:
    """The ``q`` quantile of durations counted in ``BUCKETS``; None without any."""
    total = sum(buckets.values())
    if total <= 0:
        return None
    rank, seen = q * total, 0
    for b in sorted(buckets):
        n = buckets[b]
        if n <= 0:
            continue
        if seen + n >= rank:
            lower = BUCKETS[b - 1] if b > 0 else 0.0
            if b >= len(BUCKETS):  # above the last bound: its lower bound is all we know
                return float(lower)
            return float(lower + (BUCKETS[b] - lower) * (rank - seen) / n)
        seen += n
    return float(BUCKETS[-1])
