"""The dead-letter processor: input the tracker cannot use, kept with why and where from."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tracker.core.correlation import Record
from tracker.ops.metrics import Metrics
from tracker.stream.context import Context

log = logging.getLogger(__name__)

REASON, DETAIL = "x-dead-letter-reason", "x-dead-letter-detail"
SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET = "x-source-topic", "x-source-partition", "x-source-offset"
PROCESSING_ERROR = "processing_error"  # the reason when handling a record raised something unforeseen


LOG_EVERY = 60.0  # seconds: at most one log line per reason per minute; the metric counts them all


class DeadLetters:
    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics, self.clock = metrics, clock
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
        await self.context.send("dead_letter", record.key, record.value, headers=headers(record, reason, detail))

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


def headers(record: Record, reason: str, detail: str) -> list[tuple[str, bytes]]:
    """The record's own headers, plus why it was dead-lettered and where it came from."""
    out = [(k, v) for k, v in record.headers if v is not None]
    out += [
        (REASON, reason.encode()),
        (DETAIL, detail[:1000].encode("utf-8", "replace")),
        (SOURCE_TOPIC, record.topic.encode()),
        (SOURCE_PARTITION, str(record.partition).encode()),
        (SOURCE_OFFSET, str(record.offset).encode()),
    ]
    return out
