"""Conformance: where live traffic drifts from the definitions, per saga type.

Four kinds of drift, each a sign that the services changed under the definition:

- ``undeclared_event_type``: an event type on the saga's topics that no definition names
  (still dead-lettered as ``unknown_event_type``; here also tallied per event type);
- ``steps_out_of_order``: a saga whose steps completed, in event time, in an order the
  definition does not declare (arrival order alone is not drift: transport reorders);
- ``completed_after_timeout``: a step that completed after the tracker timed it out;
- ``unrequested_confirmation``: an undo confirmed that nobody asked for (no failure, no
  compensation requested).

Counted per worker since it started (as its Prometheus counters are), added up over workers by
``/sagas/stats``. The tally of undeclared event types is bounded: names are cut to ``NAME``
characters and at most ``TYPES`` are kept per saga type, the rest counted as ``(other)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DRIFTS = ("undeclared_event_type", "steps_out_of_order", "completed_after_timeout", "unrequested_confirmation")
# Machine outcomes that are drift (``tracker.core.machine``).
OUTCOMES = {
    "steps_out_of_order": "steps_out_of_order",
    "completed_after_timeout": "completed_after_timeout",
    "confirmed_early": "unrequested_confirmation",
}
TYPES = 50
NAME = 100
OTHER = "(other)"


@dataclass
class Conformance:
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # saga type -> drift -> n
    undeclared: dict[str, dict[str, int]] = field(default_factory=dict)  # saga type -> event type -> n

    def note(self, saga_type: str, drift: str, n: int = 1) -> None:
        by = self.counts.setdefault(saga_type, dict.fromkeys(DRIFTS, 0))
        by[drift] = by.get(drift, 0) + n

    def outcomes(self, saga_type: str, outcomes: Iterable[str]) -> list[str]:
        """Count the drift among a transition's outcomes; returns the drifts counted."""
        found = [OUTCOMES[o] for o in outcomes if o in OUTCOMES]
        for drift in found:
            self.note(saga_type, drift)
        return found

    def undeclared_type(self, saga_types: Iterable[str], event_type: str) -> None:
        name = event_type[:NAME]
        for saga_type in saga_types:
            self.note(saga_type, "undeclared_event_type")
            tally = self.undeclared.setdefault(saga_type, {})
            if name not in tally and len(tally) >= TYPES:
                name = OTHER
            tally[name] = tally.get(name, 0) + 1

    def figures(self) -> dict[str, Any]:
        return {
            saga_type: {**by, "undeclared_types": dict(self.undeclared.get(saga_type, {}))}
            for saga_type, by in self.counts.items()
        }


def merge(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The workers' figures added up (the tally keeps the ``TYPES`` most frequent names)."""
    out: dict[str, dict[str, Any]] = {}
    for part in parts:
        for saga_type, by in part.items():
            into = out.setdefault(saga_type, {**dict.fromkeys(DRIFTS, 0), "undeclared_types": {}})
            for drift in DRIFTS:
                into[drift] += int(by.get(drift, 0))
            for name, n in by.get("undeclared_types", {}).items():
                into["undeclared_types"][name] = into["undeclared_types"].get(name, 0) + n
    for by in out.values():
        top = sorted(by["undeclared_types"].items(), key=lambda kv: (-kv[1], kv[0]))
        by["undeclared_types"] = dict(top[:TYPES])
    return out
