"""Rows: a saga's state as the ``sagas`` table stores it, encoded and decoded in one place.

Every reader of a stored saga decodes through here: the track processor (on a cache miss), the
index rebuild, the API and the batch reports. orjson writes a ``SagaState`` dataclass as
``to_dict`` would; ``from_dict`` reads rows of every earlier version.

A row is the state's JSON, after a first line the track processor writes with it: its **head**,
what the saga's index rows are made of (``tracker.stream.indexes.head``), so that an index
rebuild (every start, every partition that moves here: a million sagas take tens of seconds to
decode) reads a few hundred bytes per saga instead of decoding its state. orjson never writes a
raw newline, so the first newline ends the head. A row without one (written before heads, or
by anything else) is the state alone, and is indexed by decoding it as before.
"""

from __future__ import annotations

from typing import Any

import orjson

from tracker.core.state import SagaState

HEAD_END = b"\n"


def encode(state: SagaState, head: bytes = b"") -> bytes:
    """The stored row: ``head`` (one line, no newline in it), then the state."""
    return head + HEAD_END + orjson.dumps(state) if head else orjson.dumps(state)


def split(raw: bytes) -> tuple[bytes, memoryview]:
    """(head, state JSON) of a stored row; the head is empty for a row without one."""
    end = raw.find(HEAD_END)
    view = memoryview(raw)
    return (b"", view) if end < 0 else (raw[:end], view[end + 1 :])


def decode(raw: bytes) -> SagaState:
    return SagaState.from_dict(orjson.loads(split(raw)[1]))


def data(raw: bytes) -> Any:
    """The stored saga as plain JSON data, as written (``to_dict``'s shape), for readers that want
    no objects: the verify digests over every saga, the batch reports."""
    return orjson.loads(split(raw)[1])
