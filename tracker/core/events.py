"""Records the machine applies: service events, timeouts and operator actions.

Standard library only. Every record on the tracker's saga log is one of these, keyed by saga
id; a service event whose saga's partition is active where it was read is applied there
without the hop (``tracker.stream.ingest``). Either way one worker, the partition's owner,
applies everything that can change a saga.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tracker.core.errors import StateError

SERVICE, TIMEOUT, CONTROL, DECISION = "service", "timeout", "control", "decision"
KINDS = (SERVICE, TIMEOUT, CONTROL, DECISION)
ACTIONS = ("retry_timeout", "force_compensation", "extend_deadline", "resolve")  # what operators may ask
MARK_PARTIAL = "mark_partial"  # control action sent only by replay: history before the window is gone


@dataclass(frozen=True)
class Event:
    saga_id: str
    saga_type: str
    id: str
    type: str
    time: float  # event time, epoch seconds
    kind: str = SERVICE
    version: str | None = None  # definition version a timeout/action was decided under
    keys: Mapping[str, str] = field(default_factory=dict)  # business keys found in the event
    trace: Mapping[str, str] = field(default_factory=dict)  # traceparent, tracestate, correlation id
    token: str = ""  # timeout: the deadline token it fires
    # control: action, actor, reason, seconds; decision: {"of": timeout|control, "anchor", "due", "action"}
    action: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""  # topic/partition/offset of the original record, for the timeline
    # Position of this record in the saga log, set by the shell (not serialized): a record
    # seen again at the same position is a redelivery, not a new duplicate.
    position: str = ""

    @classmethod
    def service(
        cls,
        saga_id: str,
        saga_type: str,
        id: str,
        type: str,
        time: float,
        keys: Mapping[str, str],
        trace: Mapping[str, str],
        source: str,
    ) -> Event:
        """A service event as correlation reads it, once per input record: ``Event(...)`` without
        the frozen dataclass's ``__setattr__`` per field (~1.5 µs)."""
        new = object.__new__(cls)
        new.__dict__.update(
            saga_id=saga_id,
            saga_type=saga_type,
            id=id,
            type=type,
            time=time,
            kind=SERVICE,
            version=None,
            keys=keys,
            trace=trace,
            token="",
            action={},
            source=source,
            position="",
        )
        return new

    def at(self, position: str) -> Event:
        """This record at ``position``: ``dataclasses.replace`` without its per-call field
        walk and ``__init__`` (~3 µs, once per applied record)."""
        if position == self.position:
            return self
        new = object.__new__(Event)
        new.__dict__.update(self.__dict__)
        object.__setattr__(new, "position", position)  # frozen: the one field set after creation
        return new

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "saga_id": self.saga_id,
            "saga_type": self.saga_type,
            "id": self.id,
            "type": self.type,
            "time": self.time,
            "kind": self.kind,
        }
        for name in ("version", "token", "source"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        for name in ("keys", "trace", "action"):
            if getattr(self, name):
                out[name] = dict(getattr(self, name))
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Event:
        if not isinstance(data, Mapping):
            raise StateError(f"a saga log record must be an object, got {type(data).__name__}")
        try:
            kind = data.get("kind", SERVICE)
            if kind not in KINDS:
                raise StateError(f"unknown record kind {kind!r}")
            time = data["time"]
            if isinstance(time, bool) or not isinstance(time, (int, float)):
                raise StateError(f"record time must be a number, got {time!r}")
            strings: dict[str, str] = {}
            for n in ("saga_id", "saga_type", "id", "type"):
                v = data[n]
                if not isinstance(v, str) or not v:
                    raise StateError(f"record field {n!r} must be a non-empty string")
                strings[n] = v
            maps: dict[str, Mapping[str, Any]] = {}
            for n in ("keys", "trace", "action"):
                m = data.get(n) or {}
                if not isinstance(m, Mapping):
                    raise StateError(f"record field {n!r} must be an object")
                maps[n] = m
            version = data.get("version")
            return cls(
                saga_id=strings["saga_id"],
                saga_type=strings["saga_type"],
                id=strings["id"],
                type=strings["type"],
                time=float(time),
                kind=kind,
                version=None if version is None else str(version),
                keys=maps["keys"],
                trace=maps["trace"],
                action=maps["action"],
                token=str(data.get("token", "")),
                source=str(data.get("source", "")),
            )
        except KeyError as exc:
            raise StateError(f"saga log record misses field {exc.args[0]!r}") from None


def timeout_event(saga_id: str, saga_type: str, token: str, due: float) -> Event:
    """The record a sweeper sends when a deadline is due; its id makes duplicates no-ops."""
    return Event(
        saga_id=saga_id, saga_type=saga_type, id=f"timeout:{token}", type="DeadlineReached", time=due, kind=TIMEOUT, token=token
    )


def _sent(x: Any) -> bool:
    """One entry of a decision's ``emitted``: a step name and an attempt number."""
    return (
        isinstance(x, Mapping)
        and isinstance(x.get("step"), str)
        and isinstance(x.get("attempt"), int)
        and not isinstance(x.get("attempt"), bool)
    )


def decision_event(payload: Any) -> Event:
    """The record a replaying generation applies for a decision another generation took
    (the payload of a ``decision`` output); raises ``StateError`` when it is malformed."""
    if not isinstance(payload, Mapping) or payload.get("of") not in (TIMEOUT, CONTROL):
        raise StateError("a decision must be an object with 'of' = timeout or control")
    anchor = payload.get("anchor")
    if not isinstance(anchor, Mapping):
        raise StateError("a decision must carry its anchor")
    spec: dict[str, Any] = {"of": payload["of"], "anchor": dict(anchor)}
    decided_at = payload.get("decided_at")
    if isinstance(decided_at, (int, float)) and not isinstance(decided_at, bool):
        spec["decided_at"] = float(decided_at)  # when it was taken: the windows it opened count from there
    if payload["of"] == CONTROL:
        spec["action"] = dict(payload.get("action") or {})
    emitted = payload.get("emitted") or []
    if not isinstance(emitted, list) or not all(_sent(x) for x in emitted):
        raise StateError("a decision's emitted compensations must be objects with a step and an attempt")
    if emitted:
        spec["emitted"] = [{"id": str(x.get("id", "")), "step": x["step"], "attempt": x["attempt"]} for x in emitted]
    base = Event.from_dict(
        {
            "saga_id": payload.get("saga_id"),
            "saga_type": payload.get("saga_type"),
            "id": payload.get("id"),
            "type": "SagaDecision",
            "time": payload.get("time"),
            "kind": DECISION,
            "version": payload.get("saga_version"),
            "action": spec,
        }
    )
    return base
