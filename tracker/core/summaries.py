"""Saga summaries: the small row per saga that list and stats queries read.

Derived from the saga state by the track processor and kept in each worker's local index of
the partitions it owns (``tracker.stream.indexes``); queried with filters, sorting and keyset
pagination here, without I/O, so every worker answers for its partitions and any worker can
merge the pages of all of them.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tracker.core import state as st
from tracker.core.definitions import Catalog, SagaDefinition
from tracker.core.flow import step_seconds
from tracker.core.machine import visible_status
from tracker.core.state import SagaState
from tracker.core.times import parse_time

SORTS = ("updated_at", "started_at", "saga_id")
MAX_LIMIT = 500


def placement(definition: SagaDefinition, s: SagaState) -> dict[str, Any]:
    """The summary fields that place a saga in the census, its flow marks and the indexes
    (see ``indexes.keys_of`` and ``flow.marks``)."""
    steps = definition.steps
    current = steps[s.current] if s.current is not None else None
    trouble = s.trouble_step
    return {
        "saga_id": s.saga_id,
        "saga_type": s.saga_type,
        "status": s.status,
        "current_step": current.name if current else None,
        "pending_since": s.steps[s.current].started_at if s.current is not None and s.steps else None,
        "trouble_step": steps[trouble].name if trouble is not None and trouble < len(steps) else None,
        "step_seconds": step_seconds(s.steps, definition.step_names),
    }


def summary(definition: SagaDefinition, s: SagaState) -> dict[str, Any]:
    return {
        **placement(definition, s),
        "version": s.version,
        "visible_status": visible_status(definition, s),
        "started_at": s.started_at,
        "updated_at": s.updated_at,
        "ended_at": s.ended_at,
        "deadline": s.deadline.due if s.deadline else None,
        "keys": dict(s.keys),
        "orphaned": s.orphaned,
        "partial": s.partial,
        "reason": s.reason,
    }


def is_stuck(row: Mapping[str, Any], now: float) -> bool:
    """Past a deadline nobody acted on yet, or waiting for a human."""
    if row["status"] == st.FAILED_NEEDS_MANUAL:
        return True
    return row["status"] not in st.TERMINAL and row["deadline"] is not None and row["deadline"] <= now


class BadQuery(ValueError):
    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter, self.message = parameter, message


@dataclass(frozen=True)
class Query:
    saga_type: str | None = None
    status: str | None = None
    step: str | None = None
    stuck: bool | None = None
    key: str | None = None
    updated_since: float | None = None
    sort: str = "updated_at"
    descending: bool = True
    limit: int = 50
    after: tuple[Any, str] | None = None  # keyset cursor: (sort value, saga id) of the last row returned
    failed_step: str | None = None  # went wrong at this step (failed, timed out, forced there)
    at: str | None = None  # pending at this step, or went wrong there (the flow diagram's stuck count)

    @classmethod
    def parse(cls, params: Mapping[str, str], catalog: Catalog) -> Query:
        known = {
            "saga_type",
            "status",
            "step",
            "failed_step",
            "at",
            "stuck",
            "key",
            "updated_since",
            "sort",
            "order",
            "limit",
            "cursor",
        }
        for name in params:
            if name not in known:
                raise BadQuery(name, f"unknown parameter (known: {', '.join(sorted(known))})")
        saga_type = params.get("saga_type") or None
        if saga_type is not None and saga_type not in catalog.current:
            raise BadQuery("saga_type", f"unknown saga type {saga_type[:100]!r} (known: {', '.join(sorted(catalog.current))})")
        status = params.get("status") or None
        if status is not None and status not in st.STATUSES:
            raise BadQuery("status", f"must be one of {', '.join(st.STATUSES)}")
        stuck = None
        if params.get("stuck"):
            if params["stuck"] not in ("true", "false"):
                raise BadQuery("stuck", "must be true or false")
            stuck = params["stuck"] == "true"
        since = None
        if params.get("updated_since"):
            raw = params["updated_since"]
            try:
                number: float | str = float(raw) if raw.isascii() else raw
            except ValueError:
                number = raw  # not a number: an ISO 8601 time, or nothing
            since = parse_time(number)
            if since is None:
                raise BadQuery("updated_since", "must be an ISO 8601 time or epoch seconds")
        sort = params.get("sort") or "updated_at"
        if sort not in SORTS:
            raise BadQuery("sort", f"must be one of {', '.join(SORTS)}")
        order = params.get("order") or ("asc" if sort == "saga_id" else "desc")
        if order not in ("asc", "desc"):
            raise BadQuery("order", "must be asc or desc")
        try:
            limit = int(params.get("limit") or 50)
        except ValueError:
            raise BadQuery("limit", "must be a whole number") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise BadQuery("limit", f"must be between 1 and {MAX_LIMIT}")
        after = decode_cursor(params["cursor"], sort) if params.get("cursor") else None
        return cls(
            saga_type,
            status,
            params.get("step") or None,
            stuck,
            params.get("key") or None,
            since,
            sort,
            order == "desc",
            limit,
            after,
            params.get("failed_step") or None,
            params.get("at") or None,
        )

    def to_params(self, *, cursor: str | None = None) -> dict[str, str]:
        out = {"sort": self.sort, "order": "desc" if self.descending else "asc", "limit": str(self.limit)}
        for name in ("saga_type", "status", "step", "failed_step", "at", "key"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.stuck is not None:
            out["stuck"] = "true" if self.stuck else "false"
        if self.updated_since is not None:
            out["updated_since"] = repr(self.updated_since)
        if cursor:
            out["cursor"] = cursor
        return out

    def matches(self, row: Mapping[str, Any], now: float) -> bool:
        if self.saga_type is not None and row["saga_type"] != self.saga_type:
            return False
        if self.status is not None and row["status"] != self.status:
            return False
        if self.step is not None and row["current_step"] != self.step:
            return False
        if self.failed_step is not None and row.get("trouble_step") != self.failed_step:
            return False
        if self.at is not None and self.at not in (row["current_step"], row.get("trouble_step")):
            return False
        if self.stuck is not None and is_stuck(row, now) != self.stuck:
            return False
        if self.key is not None and self.key != row["saga_id"] and self.key not in row["keys"].values():
            return False
        return self.updated_since is None or (row["updated_at"] or 0) >= self.updated_since

    def sort_key(self, row: Mapping[str, Any]) -> tuple[Any, str]:
        value = row[self.sort]
        if self.sort != "saga_id":
            value = value if value is not None else 0.0
        return value, row["saga_id"]

    def select(self, rows: Iterable[Mapping[str, Any]], now: float) -> list[dict[str, Any]]:
        """One page: the first ``limit`` matching rows after the cursor, in order.

        One pass holding at most ``limit`` rows: a worker may own a million sagas."""
        matching = (r for r in rows if self.matches(r, now) and self.after_cursor(r))
        pick = heapq.nlargest if self.descending else heapq.nsmallest
        return [dict(r) for r in pick(self.limit, matching, key=self.sort_key)]

    def after_cursor(self, row: Mapping[str, Any]) -> bool:
        if self.after is None:
            return True
        key = self.sort_key(row)
        return key < self.after if self.descending else key > self.after

    def merge(self, pages: Iterable[list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], str | None]:
        """Merge the workers' pages; the next cursor, if there may be more."""
        rows = sorted((r for p in pages for r in p), key=self.sort_key, reverse=self.descending)
        page = rows[: self.limit]
        more = len(rows) > self.limit or len(page) == self.limit
        return page, encode_cursor(self.sort_key(page[-1])) if page and more else None


def encode_cursor(key: tuple[Any, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[Any, str]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        value, saga_id = raw
        if not isinstance(saga_id, str) or (sort == "saga_id") != isinstance(value, str):
            raise ValueError
        if sort != "saga_id" and not isinstance(value, (int, float)):
            raise ValueError
        return value, saga_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadQuery("cursor", "not a cursor returned by this API for this sort") from None
