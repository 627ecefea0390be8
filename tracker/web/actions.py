"""Operator actions: parse and check a request body into the control record's action."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from tracker.core.events import ACTIONS

MAX_BODY = 64 * 1024  # bytes an action's body may have: refused with 413 before it is read whole


class BadAction(ValueError):
    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter, self.message = parameter, message


def parse_action(raw: bytes, idempotency_key: str | None) -> tuple[dict[str, Any], str]:
    """An action request body -> (the control record's action, its idempotency key);
    raises ``BadAction`` naming the parameter."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadAction("body", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadAction("body", "the body must be a JSON object")
    action = body.get("action")
    if not isinstance(action, str) or action not in ACTIONS:
        raise BadAction("action", f"action must be one of {', '.join(ACTIONS)}")
    actor, reason = body.get("actor"), body.get("reason", "")
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 200:
        raise BadAction("actor", "actor (who acts) is required, at most 200 characters")
    if not isinstance(reason, str) or len(reason) > 2000:
        raise BadAction("reason", "reason must be text of at most 2000 characters")
    if action in ("resolve", "force_compensation") and not reason.strip():
        raise BadAction("reason", f"{action} needs a reason")
    details: dict[str, Any] = {"action": action, "actor": actor.strip(), "reason": reason}
    if action == "extend_deadline":
        seconds = body.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 30 * 86400:
            raise BadAction("seconds", "seconds must be a number between 0 and 30 days")
        details["seconds"] = seconds
    key = idempotency_key or body.get("id") or uuid.uuid4().hex
    if not isinstance(key, str) or not 0 < len(key) <= 200:
        raise BadAction("id", "the idempotency key must be 1 to 200 characters")
    return details, key
