"""The definitions in the read model: every saga type and version as the tracker reads them,
for UIs that draw the process (steps, failure and compensation paths, limits)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tracker.core.definitions import Catalog, FieldRef, SagaDefinition


def _refs(refs: Iterable[FieldRef]) -> list[str]:
    return [str(r) for r in refs]


def definition_view(d: SagaDefinition, current: bool) -> dict[str, Any]:
    """One saga type at one version, in the shape of the definitions file."""
    policy, limits, corr = d.compensation_policy, d.limits, d.correlation
    by_event: Mapping[str, Any] = corr.saga_id_by_event
    return {
        "name": d.name,
        "version": d.version,
        "current": current,
        "description": d.description,
        "topics": list(d.topics),
        "start": d.start,
        "correlation": {
            "saga_id": _refs(corr.saga_id),
            "saga_id_by_event": {event: _refs(refs) for event, refs in by_event.items()},
            "event_type": _refs(corr.event_type),
            "event_id": _refs(corr.event_id),
            "event_time": _refs(corr.event_time),
        },
        "business_keys": {name: _refs(refs) for name, refs in d.business_keys.items()},
        "ttl": d.ttl,
        "ignore": list(d.ignore),
        "compensation_policy": {
            "confirm_timeout": policy.confirm_timeout,
            "max_attempts": policy.max_attempts,
            "backoff": policy.backoff,
            "max_delay": policy.max_delay,
        },
        "limits": {
            "seen_ids": limits.seen_ids,
            "history": limits.history,
            "early_events": limits.early_events,
            "orphan_after": limits.orphan_after,
        },
        "steps": [
            {
                "name": s.name,
                "status": s.pending_status,
                "completed_by": list(s.completed_by),
                "failed_by": list(s.failed_by),
                "timeout": s.timeout,
                "compensation": None
                if s.compensation is None
                else {
                    "emit": s.compensation.emit,
                    "confirmed_by": list(s.compensation.confirmed_by),
                    "semantic": s.compensation.semantic,
                },
            }
            for s in d.steps
        ],
        "warnings": list(d.warnings),
    }


def definitions_view(catalog: Catalog) -> dict[str, Any]:
    """Every saga type and version, in the order of the files (the current version last)."""
    return {
        "definitions": [definition_view(d, catalog.current.get(d.name) is d) for d in catalog.definitions],
    }
