"""Saga definitions: what a saga type looks like, declared once, validated at load time.

Standard library only: the same frozen dataclasses are built from Python or from the
mapping a YAML file parses to (``loader.load_file``). Errors name file, saga, step and
field; unknown fields are errors, never ignored.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tracker.core.errors import DefinitionError

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
UNLIMITED = ("none", "never", "unlimited", "manual")


def parse_duration(value: Any) -> float | None:
    """``30s``, ``5m``, ``1.5h``, ``250ms``, a number of seconds, or ``none`` (no limit)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in UNLIMITED):
        return None
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"expected a duration such as '30s', '5m', '2h' or 'none', got {value!r}")
    if not seconds > 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


@dataclass(frozen=True)
class FieldRef:
    """Where a value is found in a record: a JSON field path, the key, a header or the timestamp."""

    source: str  # "field" | "key" | "header" | "timestamp"
    path: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> FieldRef:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"expected a field path, 'key', 'header:NAME' or 'timestamp', got {text!r}")
        text = text.strip()
        if text == "key":
            return cls("key")
        if text == "timestamp":
            return cls("timestamp")
        if text.startswith("header:"):
            name = text[len("header:") :]
            if not name:
                raise ValueError("'header:' needs a header name")
            return cls("header", (name,))
        if text.startswith("field:"):
            text = text[len("field:") :]
        parts = tuple(text.split("."))
        if any(not p for p in parts):
            raise ValueError(f"invalid field path {text!r}")
        return cls("field", parts)

    def __str__(self) -> str:
        if self.source == "field":
            return ".".join(self.path)
        if self.source == "header":
            return f"header:{self.path[0]}"
        return self.source


def _refs(*texts: str) -> tuple[FieldRef, ...]:
    return tuple(FieldRef.parse(t) for t in texts)


@dataclass(frozen=True)
class Correlation:
    """How to read saga id, event type, event id and event time from existing service events.

    Each is a list of places tried in order; the first present wins.
    """

    saga_id: tuple[FieldRef, ...]
    event_type: tuple[FieldRef, ...] = _refs("type", "header:ce_type")
    event_id: tuple[FieldRef, ...] = _refs("id", "event_id", "header:ce_id")
    event_time: tuple[FieldRef, ...] = _refs("time", "occurred_at", "timestamp")
    # Per event type overrides of the saga id location (services disagree on field names).
    saga_id_by_event: Mapping[str, tuple[FieldRef, ...]] = field(default_factory=dict)

    def saga_id_refs(self, event_type: str) -> tuple[FieldRef, ...]:
        return self.saga_id_by_event.get(event_type, self.saga_id)


@dataclass(frozen=True)
class Compensation:
    """How a completed step is undone: the event the tracker emits, and what confirms it."""

    emit: str
    confirmed_by: tuple[str, ...]
    # A semantic compensation does not restore the old state, it offsets it (a correction notice).
    semantic: bool = False


@dataclass(frozen=True)
class Step:
    name: str
    completed_by: tuple[str, ...]
    failed_by: tuple[str, ...] = ()
    timeout: float | None = None  # seconds; None waits without limit (manual approval)
    compensation: Compensation | None = None  # None: irreversible, no undo exists
    status: str = ""  # user-visible status while this step is pending

    @property
    def pending_status(self) -> str:
        return self.status or f"PENDING_{self.name.upper().replace('-', '_').replace('.', '_')}"


@dataclass(frozen=True)
class CompensationPolicy:
    """How long to wait for a compensation's confirmation, and how often to re-emit it."""

    confirm_timeout: float = 30.0
    max_attempts: int = 5
    backoff: float = 2.0
    max_delay: float = 3600.0

    def delay(self, attempt: int) -> float:
        """Wait after emitting ``attempt`` (1-based): exponential, capped."""
        return float(min(self.confirm_timeout * self.backoff ** (attempt - 1), self.max_delay))


@dataclass(frozen=True)
class Limits:
    """Per-saga memory bounds, so one hot saga cannot grow without limit."""

    seen_ids: int = 1000
    history: int = 500
    early_events: int = 100
    orphan_after: float = 300.0  # seconds an early event waits for its start before it is an orphan


@dataclass(frozen=True)
class SagaDefinition:
    name: str
    start: str
    topics: tuple[str, ...]
    steps: tuple[Step, ...]
    correlation: Correlation
    version: str = "1"
    description: str = ""
    ttl: float | None = None
    business_keys: Mapping[str, tuple[FieldRef, ...]] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()
    compensation_policy: CompensationPolicy = CompensationPolicy()
    limits: Limits = Limits()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "warnings", tuple(validate(self)))

    # Lookups the machine uses on every event; built once, definitions are frozen.
    def role(self, event_type: str) -> tuple[str, int] | None:
        """``("start"|"complete"|"fail"|"confirm", step index)`` for an event type, or None."""
        return self._roles().get(event_type)

    def _roles(self) -> dict[str, tuple[str, int]]:
        cached: dict[str, tuple[str, int]] | None = self.__dict__.get("_roles_cache")
        if cached is None:
            cached = {}
            for i, step in enumerate(self.steps):
                for t in step.completed_by:
                    cached[t] = ("complete", i)
                for t in step.failed_by:
                    cached[t] = ("fail", i)
                if step.compensation:
                    for t in step.compensation.confirmed_by:
                        cached[t] = ("confirm", i)
            if self.start not in cached:
                cached[self.start] = ("start", -1)
            object.__setattr__(self, "_roles_cache", cached)
        return cached

    def event_types(self) -> frozenset[str]:
        return frozenset(self._roles())

    @property
    def step_names(self) -> tuple[str, ...]:
        names: tuple[str, ...] | None = self.__dict__.get("_names_cache")
        if names is None:
            names = tuple(s.name for s in self.steps)
            object.__setattr__(self, "_names_cache", names)
        return names

    @property
    def fingerprint(self) -> str:
        """What the rows derived from this definition name (type, version, step names and their
        pending statuses) as 8 hex digits: a stored row's head made under another definition of
        the same type and version is not trusted (``tracker.stream.indexes``)."""
        found: str | None = self.__dict__.get("_fingerprint_cache")
        if found is None:
            text = "|".join([self.name, self.version, *(f"{s.name}:{s.pending_status}" for s in self.steps)])
            found = f"{zlib.crc32(text.encode()):08x}"
            object.__setattr__(self, "_fingerprint_cache", found)
        return found

    def step_index(self, name: str) -> int:
        for i, s in enumerate(self.steps):
            if s.name == name:
                return i
        raise KeyError(name)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"


def validate(d: SagaDefinition) -> list[str]:
    """Raise DefinitionError for an invalid definition; return warnings."""
    saga = d.name if isinstance(d.name, str) else None
    if not isinstance(d.name, str) or not _NAME.match(d.name):
        raise DefinitionError(f"must be a name of letters, digits, '_', '-', '.', got {d.name!r}", saga=saga, field="name")
    if not d.topics:
        raise DefinitionError("at least one topic must carry the saga's events", saga=saga, field="topics")
    if not d.steps:
        raise DefinitionError("a saga needs at least one step", saga=saga, field="steps")
    if not isinstance(d.start, str) or not d.start:
        raise DefinitionError("the start event type is required", saga=saga, field="start")
    warnings: list[str] = []
    owner: dict[str, str] = {}

    def claim(event_type: str, what: str, step: str, fld: str) -> None:
        if not isinstance(event_type, str) or not event_type:
            raise DefinitionError(f"event types must be non-empty strings, got {event_type!r}", saga=saga, step=step, field=fld)
        if event_type in owner:
            raise DefinitionError(f"event type {event_type!r} already means {owner[event_type]}", saga=saga, step=step, field=fld)
        owner[event_type] = f"{what} of step {step!r}"

    names: set[str] = set()
    for i, s in enumerate(d.steps):
        if not isinstance(s.name, str) or not _NAME.match(s.name):
            raise DefinitionError(f"invalid step name {s.name!r}", saga=saga, field=f"steps[{i}].name")
        if s.name in names:
            raise DefinitionError("duplicate step name", saga=saga, step=s.name, field="name")
        names.add(s.name)
        if not s.completed_by:
            raise DefinitionError("a step needs at least one completing event", saga=saga, step=s.name, field="completed_by")
        for t in s.completed_by:
            claim(t, "completion", s.name, "completed_by")
        for t in s.failed_by:
            claim(t, "failure", s.name, "failed_by")
        if s.timeout is not None and not s.timeout > 0:
            raise DefinitionError("must be positive or 'none'", saga=saga, step=s.name, field="timeout")
        if s.compensation is not None:
            if not s.compensation.emit:
                raise DefinitionError(
                    "the compensation event type is required", saga=saga, step=s.name, field="compensation.emit"
                )
            if not s.compensation.confirmed_by:
                raise DefinitionError(
                    "name the event that confirms the undo", saga=saga, step=s.name, field="compensation.confirmed_by"
                )
            for t in s.compensation.confirmed_by:
                claim(t, "compensation confirmation", s.name, "compensation.confirmed_by")
        elif i != len(d.steps) - 1:
            warnings.append(
                f"saga {saga!r}: step {s.name!r} is irreversible (no compensation) but not last: "
                "a later failure cannot undo it and the saga will need manual follow-up"
            )
    if d.start in owner and owner[d.start] != f"completion of step {d.steps[0].name!r}":
        raise DefinitionError(
            f"the start event {d.start!r} is the {owner[d.start]}; it may only complete the first step",
            saga=saga,
            field="start",
        )
    if d.ttl is not None and not d.ttl > 0:
        raise DefinitionError("must be positive or 'none'", saga=saga, field="ttl")
    p = d.compensation_policy
    if p.max_attempts < 1 or p.confirm_timeout <= 0 or p.backoff < 1 or p.max_delay <= 0:
        raise DefinitionError(
            "needs max_attempts >= 1, confirm_timeout > 0, backoff >= 1, max_delay > 0",
            saga=saga,
            field="compensation_policy",
        )
    lim = d.limits
    if min(lim.seen_ids, lim.history, lim.early_events) < 1 or lim.orphan_after <= 0:
        raise DefinitionError("limits must be positive", saga=saga, field="limits")
    for t in d.ignore:
        if t in owner or t == d.start:
            raise DefinitionError(f"event type {t!r} is both ignored and used", saga=saga, field="ignore")
    return warnings


# --- building definitions from a parsed mapping (YAML / JSON) ---------------------------------


class _Fields:
    """Reads a mapping, remembering what was read, so unknown fields can be reported."""

    def __init__(self, data: Any, where: dict[str, str | None], what: str) -> None:
        if not isinstance(data, Mapping):
            raise DefinitionError(f"{what} must be a mapping, got {type(data).__name__}", **where)
        self.data, self.where, self.used = data, where, set[str]()

    def get(self, name: str, default: Any = None, *, required: bool = False) -> Any:
        self.used.add(name)
        value = self.data.get(name)
        if value is None:
            if required:
                raise DefinitionError("is required", **self.where, field=name)
            return default
        return value

    def error(self, name: str, message: str) -> DefinitionError:
        return DefinitionError(message, **self.where, field=name)

    def done(self, prefix: str = "") -> None:
        unknown = sorted(str(k) for k in self.data if k not in self.used)
        if unknown:
            raise DefinitionError(
                f"unknown field (known: {', '.join(sorted(self.used))})", **self.where, field=prefix + unknown[0]
            )


def _str_list(f: _Fields, name: str, *, required: bool = False) -> tuple[str, ...]:
    value = f.get(name, (), required=required)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise f.error(name, f"expected a string or a list of strings, got {value!r}")
    if required and not value:
        raise f.error(name, "must not be empty")
    return tuple(value)


def _refs_field(f: _Fields, name: str, value: Any) -> tuple[FieldRef, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise f.error(name, f"expected a field path or a list of them, got {value!r}")
    try:
        return tuple(FieldRef.parse(v) for v in items)
    except ValueError as exc:
        raise f.error(name, str(exc)) from None


def _duration_field(f: _Fields, name: str, default: Any) -> float | None:
    try:
        return parse_duration(f.get(name, default))
    except ValueError as exc:
        raise f.error(name, str(exc)) from None


def _number(f: _Fields, name: str, default: float, kind: type = float) -> Any:
    value = f.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise f.error(name, f"expected a {'whole ' if kind is int else ''}number, got {value!r}")
    return kind(value)


def _step_from(data: Any, where: dict[str, str | None], index: int) -> Step:
    name = data.get("name") if isinstance(data, Mapping) else None
    where = {**where, "step": name if isinstance(name, str) else f"#{index + 1}"}
    f = _Fields(data, where, "a step")
    name = f.get("name", required=True)
    if not isinstance(name, str):
        raise f.error("name", f"expected a string, got {name!r}")
    if "compensation" not in f.data:
        raise f.error("compensation", "is required: give {emit, confirmed_by} or 'none' for an irreversible step")
    comp_raw = f.get("compensation")
    compensation: Compensation | None = None
    if comp_raw is None or (isinstance(comp_raw, str) and comp_raw.strip().lower() == "none"):
        compensation = None
    else:
        c = _Fields(comp_raw, where, "compensation")
        semantic = c.get("semantic", False)
        if not isinstance(semantic, bool):
            raise DefinitionError("expected true or false", **where, field="compensation.semantic")
        emit = c.get("emit", required=True)
        if not isinstance(emit, str) or not emit:
            raise DefinitionError(f"expected an event type, got {emit!r}", **where, field="compensation.emit")
        compensation = Compensation(emit=emit, confirmed_by=_str_list(c, "confirmed_by", required=True), semantic=semantic)
        c.done("compensation.")
    status = f.get("status", "")
    if not isinstance(status, str):
        raise f.error("status", f"expected a string, got {status!r}")
    step = Step(
        name=name,
        completed_by=_str_list(f, "completed_by", required=True),
        failed_by=_str_list(f, "failed_by"),
        timeout=_duration_field(f, "timeout", "none"),
        compensation=compensation,
        status=status,
    )
    f.done()
    return step


def saga_from_mapping(data: Any, *, file: str | None = None) -> SagaDefinition:
    """Build and validate one saga definition from its parsed YAML/JSON mapping."""
    name = data.get("name") if isinstance(data, Mapping) else None
    where: dict[str, str | None] = {"file": file, "saga": name if isinstance(name, str) else None}
    f = _Fields(data, where, "a saga")
    name = f.get("name", required=True)
    version = f.get("version", "1")
    if isinstance(version, bool) or not isinstance(version, (str, int)) or not str(version):
        raise f.error("version", f"expected a version such as 1 or '2024-05', got {version!r}")
    description = f.get("description", "")
    if not isinstance(description, str):
        raise f.error("description", "expected a string")

    c = _Fields(f.get("correlation", required=True), where, "correlation")
    defaults = Correlation(saga_id=())
    by_event_raw = c.get("saga_id_by_event", {})
    if not isinstance(by_event_raw, Mapping):
        raise DefinitionError("expected a mapping of event type to field path", **where, field="correlation.saga_id_by_event")
    correlation = Correlation(
        saga_id=_refs_field(c, "correlation.saga_id", c.get("saga_id", required=True)),
        event_type=_refs_field(c, "correlation.event_type", c.get("event_type", [str(r) for r in defaults.event_type])),
        event_id=_refs_field(c, "correlation.event_id", c.get("event_id", [str(r) for r in defaults.event_id])),
        event_time=_refs_field(c, "correlation.event_time", c.get("event_time", [str(r) for r in defaults.event_time])),
        saga_id_by_event={str(k): _refs_field(c, f"correlation.saga_id_by_event.{k}", v) for k, v in by_event_raw.items()},
    )
    c.done("correlation.")

    keys_raw = f.get("business_keys", {})
    if not isinstance(keys_raw, Mapping):
        raise f.error("business_keys", "expected a mapping of key name to field path")
    business_keys = {str(k): _refs_field(f, f"business_keys.{k}", v) for k, v in keys_raw.items()}

    p = _Fields(f.get("compensation_policy", {}), where, "compensation_policy")
    confirm = parse_duration_or_error(p, "confirm_timeout", "30s")
    max_delay = parse_duration_or_error(p, "max_delay", "1h")
    policy = CompensationPolicy(
        confirm_timeout=confirm,
        max_attempts=_number(p, "max_attempts", 5, int),
        backoff=_number(p, "backoff", 2.0),
        max_delay=max_delay,
    )
    p.done("compensation_policy.")

    lf = _Fields(f.get("limits", {}), where, "limits")
    limits = Limits(
        seen_ids=_number(lf, "seen_ids", Limits.seen_ids, int),
        history=_number(lf, "history", Limits.history, int),
        early_events=_number(lf, "early_events", Limits.early_events, int),
        orphan_after=parse_duration_or_error(lf, "orphan_after", Limits.orphan_after),
    )
    lf.done("limits.")

    steps_raw = f.get("steps", required=True)
    if not isinstance(steps_raw, list):
        raise f.error("steps", "expected a list of steps")
    steps = tuple(_step_from(s, where, i) for i, s in enumerate(steps_raw))
    start = f.get("start", required=True)
    try:
        definition = SagaDefinition(
            name=name,
            version=str(version),
            description=description,
            start=start,
            topics=_str_list(f, "topics", required=True),
            steps=steps,
            correlation=correlation,
            ttl=_duration_field(f, "ttl", "none"),
            business_keys=business_keys,
            ignore=_str_list(f, "ignore"),
            compensation_policy=policy,
            limits=limits,
        )
    except DefinitionError as exc:
        if exc.file is None and file is not None:
            raise DefinitionError(exc.detail, file=file, saga=exc.saga, step=exc.step, field=exc.field) from None
        raise
    f.done()
    return definition


def parse_duration_or_error(f: _Fields, name: str, default: Any) -> float:
    value = _duration_field(f, name, default)
    if value is None:
        raise f.error(name, "must be a finite duration")
    return value


def sagas_from_document(data: Any, *, file: str | None = None) -> list[SagaDefinition]:
    """A definitions document: ``{sagas: [saga, ...]}``."""
    f = _Fields(data, {"file": file, "saga": None}, "a definitions document")
    sagas = f.get("sagas", required=True)
    f.done()
    if not isinstance(sagas, list) or not sagas:
        raise DefinitionError("expected a non-empty list of sagas", file=file, field="sagas")
    return [saga_from_mapping(s, file=file) for s in sagas]


@dataclass(frozen=True)
class Catalog:
    """Every deployed definition, indexed for the hot path: (topic, event type) -> saga type."""

    definitions: tuple[SagaDefinition, ...]
    by_topic_type: Mapping[tuple[str, str], SagaDefinition]
    ignored: Mapping[tuple[str, str], str]  # (topic, event type) -> the saga type that ignores it
    current: Mapping[str, SagaDefinition]
    versions: Mapping[str, SagaDefinition]
    # topic -> the current definitions reading it, in declaration order (looked up per record)
    readers: Mapping[str, tuple[SagaDefinition, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, definitions: Iterable[SagaDefinition], *, file: str | None = None) -> Catalog:
        defs = tuple(definitions)
        current: dict[str, SagaDefinition] = {}
        versions: dict[str, SagaDefinition] = {}
        for d in defs:
            if d.key in versions:
                raise DefinitionError(f"version {d.version!r} is declared twice", file=file, saga=d.name, field="version")
            versions[d.key] = d
            current[d.name] = d  # the last declared version starts new sagas
        by_topic_type: dict[tuple[str, str], SagaDefinition] = {}
        ignored: dict[tuple[str, str], str] = {}
        for d in current.values():
            for topic in d.topics:
                for t in d.event_types():
                    other = by_topic_type.get((topic, t))
                    if other is not None and other.name != d.name:
                        raise DefinitionError(
                            f"event type {t!r} on topic {topic!r} is also used by saga {other.name!r}; "
                            "an event must belong to one saga type",
                            file=file,
                            saga=d.name,
                            field="topics",
                        )
                    by_topic_type[(topic, t)] = d
                ignored.update({(topic, t): d.name for t in d.ignore})
        ignored = {k: v for k, v in ignored.items() if k not in by_topic_type}
        topics = {t for d in current.values() for t in d.topics}
        readers = {t: tuple(d for d in current.values() if t in d.topics) for t in topics}
        return cls(defs, by_topic_type, ignored, current, versions, readers)

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(sorted({t for d in self.current.values() for t in d.topics}))

    def definition(self, saga_type: str, version: str | None = None) -> SagaDefinition | None:
        if version is not None:
            found = self.versions.get(f"{saga_type}@{version}")
            if found is not None:
                return found
        return self.current.get(saga_type)

    def warnings(self) -> list[str]:
        return [w for d in self.definitions for w in d.warnings]
