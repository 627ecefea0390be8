"""The dead-letter processor: input the tracker cannot use, kept with why and where from.

A dead letter always fits the producer's request limit: the original key, headers and value
go whole when they fit; a value (or key) that does not is cut to a prefix and the record says
how long the original was and its SHA-256, with its source coordinates, so the original can be
fetched from its topic while retained. A dead letter the producer cannot take is tried again
with backoff; if it still cannot be sent the worker exits to be restarted, so the record is
read again and never acknowledged unhandled.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable

from tracker.core.correlation import Record
from tracker.ops.metrics import Metrics
from tracker.stream.context import Context
from tracker.stream.restart import exit_to_restart

log = logging.getLogger(__name__)

REASON, DETAIL = "x-dead-letter-reason", "x-dead-letter-detail"
SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET = "x-source-topic", "x-source-partition", "x-source-offset"
TRUNCATED = "x-dead-letter-truncated"  # "value", "key" or "key,value": what was cut to a prefix
ORIGINAL_BYTES, ORIGINAL_SHA256 = "x-dead-letter-original-bytes", "x-dead-letter-original-sha256"
ORIGINAL_KEY_BYTES, ORIGINAL_KEY_SHA256 = "x-dead-letter-original-key-bytes", "x-dead-letter-original-key-sha256"
DROPPED_HEADERS = "x-dead-letter-dropped-headers"  # how many of the original headers did not fit
PROCESSING_ERROR = "processing_error"  # the reason when handling a record raised something unforeseen

# What a dead letter keeps of an original that does not fit: bounded, well under any request limit.
KEY_PREFIX = 1024
VALUE_PREFIX = 64 * 1024
HEADERS_BUDGET = 64 * 1024
OVERHEAD = 4096  # record and batch framing, and the headers this module adds
SEND_ATTEMPTS = 5  # tries before the worker exits to be restarted (backoff 0.2 s doubling: ~6 s in all)

# Every reason a record is dead-lettered for, as the README lists them (a test compares the two).
REASONS = {
    "not_json": "the value does not decode as JSON",
    "bad_encoding": "the value is not UTF-8",
    "not_object": "the JSON value is not an object",
    "too_deep": "the JSON nests deeper than 64 levels",
    "oversized": "the value is larger than SAGA_TRACKER_MAX_EVENT_BYTES",
    "empty": "no value (a tombstone) or an empty one",
    "no_event_type": "no event type found",
    "unknown_event_type": "an event type no definition names on that topic",
    "unknown_topic": "a topic no definition reads",
    "no_saga_id": "no usable saga id",
    "saga_id_too_long": "a saga id longer than 512 characters",
    "bad_event_id": "an event id that is not a string or an integer",
    "event_id_too_long": "an event id longer than 512 characters",
    "bad_event_time": "an event time that cannot be read, and no record timestamp",
    "bad_header": "a header the definitions read is not UTF-8",
    "bad_key": "the record key, read by the definitions, is not UTF-8",
    "bad_decision": "a record on the decisions topic that is not a decision",
    "bad_record": "a record on the saga log that is not the tracker's own format",
    "unknown_saga_type": "a saga-log record for a saga type no definition has",
    "partition_not_here": "a saga-log record that reached a worker while its partition moved away",
    "processing_error": "handling the record raised an unforeseen error (a bug: the log has the trace)",
}


LOG_EVERY = 60.0  # seconds: at most one log line per reason per minute; the metric counts them all


class DeadLetters:
    def __init__(
        self,
        metrics: Metrics,
        *,
        max_record_bytes: int = 1_000_000,
        clock: Callable[[], float] = time.monotonic,
        backoff: float = 0.2,
    ) -> None:
        """``max_record_bytes``: the producer's request limit (faust's ``producer_max_request_size``)."""
        self.metrics, self.clock, self.backoff = metrics, clock, backoff
        self.max_record_bytes = max_record_bytes
        self.logged: dict[str, tuple[float, int]] = {}  # reason -> (last logged at, suppressed since)
        self.context: Context | None = None

    def init(self, context: Context) -> None:
        self.context = context

    async def failed(self, record: Record, exc: BaseException, *, stage: str) -> None:
        """Dead-letter ``record`` because handling it raised ``exc``: the error's own reason
        (``CorrelationError``, ``StateError``...), else ``processing_error``, logged with its trace
        and counted by stage."""
        reason, detail = why(exc)
        if reason == PROCESSING_ERROR:
            log.error("%s failed on %s", stage, record.source, exc_info=exc)
            self.metrics.processing_errors.labels(stage).inc()
        await self.send(record, reason, detail)

    async def send(self, record: Record, reason: str, detail: str) -> None:
        """Send the original key, value and headers, plus headers saying why and from where."""
        assert self.context is not None, "init(context) first"
        self.metrics.dead_letters.labels(reason).inc()
        self.log(record, reason, detail)
        key, value, extra = fitted(record, self.max_record_bytes)
        out = headers(record, reason, detail, keep_bytes=HEADERS_BUDGET) + extra
        delay = self.backoff
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                await self.context.send("dead_letter", key, value, headers=out)
                return
            except Exception as exc:  # the producer refused it at once (its delivery is the checkpoint's)
                if attempt == SEND_ATTEMPTS:
                    exit_to_restart(f"dead letter for {record.source} ({reason}) not sent after {attempt} attempts: {exc!r}")
                log.warning("dead letter for %s not sent (attempt %d): %r; retrying", record.source, attempt, exc)
                await asyncio.sleep(delay)
                delay *= 2

    def log(self, record: Record, reason: str, detail: str) -> None:
        """A flood of bad input must not flood the log too."""
        now = self.clock()
        last, suppressed = self.logged.get(reason, (-LOG_EVERY, 0))
        if now - last < LOG_EVERY:
            self.logged[reason] = (last, suppressed + 1)
            return
        more = f" (and {suppressed} more since the last report)" if suppressed else ""
        log.warning("dead-lettered %s: %s: %s%s", record.source, reason, detail[:200], more)
        self.logged[reason] = (now, 0)


def why(exc: BaseException) -> tuple[str, str]:
    """The dead-letter reason and detail for a failure: the error's own (``CorrelationError``,
    ``StateError``...), else ``processing_error`` and the error's repr."""
    return getattr(exc, "reason", PROCESSING_ERROR), getattr(exc, "detail", repr(exc))


def _cut(data: bytes, prefix: int, size_header: str, sha_header: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    return data[:prefix], [(size_header, str(len(data)).encode()), (sha_header, hashlib.sha256(data).hexdigest().encode())]


def fitted(record: Record, max_record_bytes: int) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """The key and value a dead letter carries, and the headers that say what was cut."""
    key, value, extra, cut = record.key, record.value, list[tuple[str, bytes]](), []
    if key is not None and len(key) > KEY_PREFIX:
        key, said = _cut(key, KEY_PREFIX, ORIGINAL_KEY_BYTES, ORIGINAL_KEY_SHA256)
        extra += said
        cut.append("key")
    room = max_record_bytes - OVERHEAD - HEADERS_BUDGET - len(key or b"")
    if value is not None and len(value) > room:
        value, said = _cut(value, min(VALUE_PREFIX, max(room, 0)), ORIGINAL_BYTES, ORIGINAL_SHA256)
        extra += said
        cut.append("value")
    if cut:
        extra.append((TRUNCATED, ",".join(cut).encode()))
    return key, value, extra


def headers(record: Record, reason: str, detail: str, *, keep_bytes: int = HEADERS_BUDGET) -> list[tuple[str, bytes]]:
    """The record's own headers (as many as fit ``keep_bytes``), plus why it was dead-lettered
    and where it came from."""
    out: list[tuple[str, bytes]] = []
    used = dropped = 0
    for k, v in record.headers:
        if v is None:
            continue
        size = len(k.encode("utf-8", "replace")) + len(v)
        if used + size > keep_bytes:
            dropped += 1
            continue
        out.append((k, v))
        used += size
    if dropped:
        out.append((DROPPED_HEADERS, str(dropped).encode()))
    out += [
        (REASON, reason.encode()),
        (DETAIL, detail[:1000].encode("utf-8", "replace")),
        (SOURCE_TOPIC, record.topic.encode()),
        (SOURCE_PARTITION, str(record.partition).encode()),
        (SOURCE_OFFSET, str(record.offset).encode()),
    ]
    return out
