"""The dead-letter topic: input the tracker cannot use, kept with why and where from."""

from __future__ import annotations

import logging

import faust

from tracker.correlation import Record
from tracker.metrics import Metrics

log = logging.getLogger(__name__)

REASON, DETAIL = "x-dead-letter-reason", "x-dead-letter-detail"
SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET = "x-source-topic", "x-source-partition", "x-source-offset"


class DeadLetters:
    def __init__(self, topic: faust.TopicT, metrics: Metrics) -> None:
        self.topic, self.metrics = topic, metrics

    async def send(self, record: Record, reason: str, detail: str) -> None:
        """Send the original key, value and headers, plus headers saying why and from where."""
        headers = [(k, v) for k, v in record.headers if v is not None]
        headers += [
            (REASON, reason.encode()),
            (DETAIL, detail[:1000].encode("utf-8", "replace")),
            (SOURCE_TOPIC, record.topic.encode()),
            (SOURCE_PARTITION, str(record.partition).encode()),
            (SOURCE_OFFSET, str(record.offset).encode()),
        ]
        self.metrics.dead_letters.labels(reason).inc()
        log.warning("dead-lettered %s: %s: %s", record.source, reason, detail[:200])
        await self.topic.send(key=record.key, value=record.value, headers=headers)
