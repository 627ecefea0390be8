"""Rows: a saga's state as the ``sagas`` table stores it (JSON), encoded and decoded in one place.

Every reader of a stored saga decodes through here: the track processor (on a cache miss), the
index rebuild, the API and the batch reports. orjson writes a ``SagaState`` dataclass as
``to_dict`` would; ``from_dict`` reads rows of every earlier version.
"""

from __future__ import annotations

from typing import Any

import orjson

from tracker.core.state import SagaState


def encode(state: SagaState) -> bytes:
    return orjson.dumps(state)


def decode(raw: bytes) -> SagaState:
    return SagaState.from_dict(orjson.loads(raw))


def data(raw: bytes) -> Any:
    """The stored saga as plain JSON data, as written (``to_dict``'s shape), for readers that want
    no objects: the verify digests over every saga, the batch reports."""
    return orjson.loads(raw)
