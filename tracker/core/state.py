"""Per-saga state: what the tracker knows about one business transaction.

Standard library only. Stored as one JSON object per saga in a changelog-backed table;
``to_dict``/``from_dict`` are the only (de)serialization, so old rows keep loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from tracker.core.errors import StateError

# Saga statuses.
AWAITING_START = "awaiting_start"  # events arrived before the start event
RUNNING = "running"
COMPENSATING = "compensating"
COMPLETED = "completed"
COMPENSATED = "compensated"
FAILED_NEEDS_MANUAL = "failed_needs_manual"
RESOLVED = "resolved"  # an operator closed a failed_needs_manual saga
TERMINAL = frozenset({COMPLETED, COMPENSATED, FAILED_NEEDS_MANUAL, RESOLVED})
STATUSES = (AWAITING_START, RUNNING, COMPENSATING, COMPLETED, COMPENSATED, FAILED_NEEDS_MANUAL, RESOLVED)

# Step states.
WAITING = "waiting"  # not reached yet
ACTIVE = "active"  # the pending step, awaiting its completion
DONE = "done"
FAILED = "failed"  # a service reported failure
TIMED_OUT = "timed_out"  # stalled past its deadline
STEP_COMPENSATING = "compensating"  # awaiting confirmation of its undo
STEP_COMPENSATED = "compensated"
NO_COMPENSATION = "no_compensation"  # irreversible: needs semantic or manual follow-up
COMPENSATION_FAILED = "compensation_failed"  # undo never confirmed after every attempt


@dataclass
class StepState:
    """One step of one saga. **Stored sparse**: a step made by ``waiting`` or read from a row
    holds in its ``__dict__`` only the fields set on it; the others read the class's defaults (a
    dataclass keeps each default as a class attribute). orjson writes a dataclass's ``__dict__``,
    so the stored row carries only what was set: a done step ~110 bytes instead of ~260, and a
    row of the benchmark's input ~2,270 bytes instead of ~2,870 (fewer bytes to write, send,
    keep and read back on a recovery; a row decodes ~12 % faster). ``to_dict`` writes every
    field, so readers of the plain data see the shape they always did; a row written with every
    field (before this) loads as it is. Were orjson to write every field instead, rows would only
    be larger: ``test_machine`` pins the sparse form."""

    state: str = WAITING
    started_at: float | None = None  # when it became pending
    due: float | None = None  # step deadline (None: no limit)
    completed_at: float | None = None
    completed_by: str | None = None  # event id
    failed_at: float | None = None
    out_of_order: bool = False  # completed before an earlier step
    comp_attempts: int = 0  # compensation events the tracker emitted
    comp_started_at: float | None = None
    comp_due: float | None = None  # when the confirmation is overdue
    comp_confirmed_at: float | None = None
    comp_by_tracker: bool = False

    @classmethod
    def waiting(cls) -> StepState:
        """A step not reached yet, with nothing but its state set (the sparse form)."""
        new = object.__new__(cls)
        new.__dict__ = {"state": WAITING}
        return new


@dataclass
class Deadline:
    token: str
    due: float


@dataclass
class SagaState:
    saga_id: str
    saga_type: str
    version: str
    status: str = AWAITING_START
    current: int | None = None  # index of the pending step while running
    started_at: float | None = None
    ended_at: float | None = None
    first_seen_at: float | None = None
    updated_at: float | None = None  # wall clock of the last change (not part of the digest)
    reason: str = ""  # why it is compensating / failed
    trouble_step: int | None = None  # where it went wrong: failed, timed out, or forced while pending there
    compensated_by: str = ""  # "tracker" (it emits the undo events) or "services" (they undo themselves)
    steps: list[StepState] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)
    trace: dict[str, str] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)  # applied ids, bounded, oldest first
    early: list[dict[str, Any]] = field(default_factory=list)  # events waiting for the start
    orphaned: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    history_dropped: int = 0
    outbox: list[dict[str, Any]] = field(default_factory=list)  # every output decided, with its cause
    deadline: Deadline | None = None
    deadline_seq: int = 0
    ttl_due: float | None = None
    counts: dict[str, int] = field(default_factory=dict)  # duplicates, late, reordered, early...
    resolution: dict[str, Any] | None = None
    # Replay: decisions another generation took, waiting until this saga reaches the point
    # (anchor) where they were taken; and whether history before the replay window is missing.
    parked: list[dict[str, Any]] = field(default_factory=list)
    partial: bool = False

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (fresh containers: callers may change them)."""
        out = {f: getattr(self, f) for f in _FIELDS}
        out["steps"] = [{**_STEP_DEFAULTS, **vars(x)} for x in self.steps]  # every field, in field order
        out["deadline"] = dict(vars(self.deadline)) if self.deadline is not None else None
        for name in ("keys", "trace", "counts"):
            out[name] = dict(out[name])
        for name in ("seen", "early", "history", "parked"):
            out[name] = list(out[name])
        out["outbox"] = [dict(o) for o in self.outbox]
        return out

    @classmethod
    def from_dict(cls, data: Any) -> SagaState:
        if not isinstance(data, dict):
            raise StateError("a stored saga state must be an object")
        try:
            # A row this version wrote has every field, in order (a rebuild reads a million):
            # copied whole, not filtered key by key.
            values = dict(data) if tuple(data) == _FIELDS else {k: v for k, v in data.items() if k in _KNOWN}
            values["steps"] = [_step(s) for s in values.get("steps", [])]
            dl = values.get("deadline")
            values["deadline"] = _load(Deadline, _DEADLINE_FIELDS, dl) if dl else None
            return _load(cls, _FIELDS, values)
        except TypeError as exc:
            raise StateError(f"cannot load saga state: {exc}") from None

    def logical(self) -> dict[str, Any]:
        """The state without wall-clock fields (when records were applied): equal for the same
        records in the same order, whenever and however often they were applied."""
        return logical(self.to_dict())

    def copy(self) -> SagaState:
        """A copy ``apply`` may change without touching this one. History and seen entries are
        never changed once appended, so only their lists are copied. The early events and the
        parked decisions (nearly always empty) are replaced when they change, never changed in
        place, so the copy shares their lists: two containers fewer per event, each one more object
        for the collector to walk while the state stays in memory (bench/README.md)."""
        new = _shallow(self)
        new.steps = [_shallow(x) for x in self.steps]
        new.keys, new.trace, new.counts = dict(self.keys), dict(self.trace), dict(self.counts)
        new.seen, new.history = list(self.seen), list(self.history)
        new.outbox = [dict(o) for o in self.outbox]  # "confirmed" changes in place
        return new


WALL_CLOCK = ("updated_at",)
_FIELDS = tuple(f.name for f in fields(SagaState))
_KNOWN = frozenset(_FIELDS)
_STEP_DEFAULTS = {f.name: f.default for f in fields(StepState)}
_STEP_KNOWN = _STEP_DEFAULTS.keys()
_DEADLINE_FIELDS = tuple(f.name for f in fields(Deadline))


def _shallow(obj: Any) -> Any:
    """``copy.copy`` of a plain dataclass instance, without its generic protocol (per step, per event)."""
    new = object.__new__(type(obj))
    new.__dict__ = obj.__dict__.copy()  # a compact dict's copy is one block copy, not key by key
    return new


def _load(cls: Any, names: tuple[str, ...], values: dict[str, Any]) -> Any:
    """``cls(**values)``. A stored state or step has every field in field order (as orjson
    wrote it; it writes them in ``__dict__`` order): the common case, read per event and
    per saga on a rebuild. Its values are then set as they are, without the call."""
    if not isinstance(values, dict) or tuple(values) != names:
        return cls(**values)
    obj = object.__new__(cls)
    obj.__dict__ = values.copy()
    return obj


def _step(values: Any) -> StepState:
    """A stored step: the fields it has (a sparse row) or all of them (an older row), as they are."""
    if not isinstance(values, dict) or not values.keys() <= _STEP_KNOWN:
        return StepState(**values)  # not an object, or an unknown field: TypeError, as any bad row
    obj = object.__new__(StepState)
    obj.__dict__ = values.copy()
    return obj


def logical(data: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in data.items() if k not in WALL_CLOCK}
    out["history"] = [{k: v for k, v in h.items() if k != "at"} for h in data.get("history", [])]
    return out


def outcome_view(data: dict[str, Any], step_names: list[str] | None = None) -> dict[str, Any]:
    """What a saga came to, independent of the order its records arrived in.

    Two generations read the services' topics in different interleavings (a replay merges
    them by timestamp; live consumption does not), so the history order, deadline tokens
    and ``seen`` lists may differ while the saga is the same. Replay digests compare this.
    """
    steps = data.get("steps") or []
    names = step_names or [str(i) for i in range(len(steps))]
    return {
        "saga_id": data["saga_id"],
        "saga_type": data["saga_type"],
        "version": data["version"],
        "status": data["status"],
        "current": data.get("current"),
        "started_at": data.get("started_at"),
        "reason": data.get("reason", ""),
        "partial": data.get("partial", False),
        "keys": dict(sorted((data.get("keys") or {}).items())),
        "steps": {
            names[i]: {
                "state": x.get("state", WAITING),
                "completed_at": x.get("completed_at"),
                "failed_at": x.get("failed_at"),
                "comp_attempts": x.get("comp_attempts", 0),
                "comp_confirmed_at": x.get("comp_confirmed_at"),
            }
            for i, x in enumerate(steps)
        },
        "emitted": sorted(o["id"] for o in data.get("outbox") or [] if o.get("kind") != "decision"),
        "deadline": None if not data.get("deadline") else data["deadline"]["due"],
    }
