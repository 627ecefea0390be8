"""JSON responses in the API's one shape: a body, or ``{"error", "message", "parameter"?}``."""

from __future__ import annotations

from typing import Any

import orjson
from faust.web import Response


def error(web: Any, status: int, code: str, message: str, **extra: Any) -> Response:
    return web.bytes(orjson.dumps({"error": code, "message": message, **extra}), content_type="application/json", status=status)


def ok(web: Any, body: Any, status: int = 200) -> Response:
    return web.bytes(orjson.dumps(body), content_type="application/json", status=status)
