"""The one factory for the tracker's own aiokafka clients (outside faust's).

Every consumer, producer and admin client the tracker builds itself comes from here, so
their common settings live in one place: a client id that says what the client is for
(the broker logs and quotas name it), no auto-commit for consumers (the tracker commits
what it processed, or nothing), and a request timeout bounded for the caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

CLIENT_ID = "saga-tracker"


def consumer(bootstrap: str, *topics: str, purpose: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer; ``topics`` subscribes it (with ``group_id`` in ``options``), none: assign by hand."""
    options.setdefault("enable_auto_commit", False)
    return AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, client_id=f"{CLIENT_ID}-{purpose}", **options)


async def seek_to_reset(consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition], reset: str) -> None:
    """Seek partitions with no committed offset where the reset policy says: the end for
    ``latest``, else the beginning."""
    parts = list(partitions)
    if parts:
        await (consumer.seek_to_end(*parts) if reset == "latest" else consumer.seek_to_beginning(*parts))


def producer(bootstrap: str, *, purpose: str, **options: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, client_id=f"{CLIENT_ID}-{purpose}", **options)


def admin(bootstrap: str, *, purpose: str, **options: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{CLIENT_ID}-{purpose}", **options)
