"""Topic administration: create topics explicitly, with their partitions and configs.

Auto-creation would give unknown topics a broker-chosen partition count; the tracker
creates its inputs (in the demo and tests) and outputs up front instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from tracker.kafka import clients

log = logging.getLogger(__name__)

RETAIN_WEEK = {"cleanup.policy": "delete", "retention.ms": str(7 * 24 * 3600 * 1000)}


def bootstrap_of(url: str) -> str:
    """``kafka://a:9092;b:9092`` -> ``a:9092,b:9092``."""
    return ",".join(part.split("://", 1)[-1] for part in url.replace(";", ",").split(",") if part)


async def ensure_topics(
    bootstrap: str, names: Iterable[str], partitions: int, replication: int = 1, config: dict[str, str] | None = None
) -> None:
    admin = clients.admin(bootstrap, purpose="admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(n, partitions, replication, topic_configs=dict(config or RETAIN_WEEK))
            for n in dict.fromkeys(names)
            if n not in existing
        ]
        for topic in wanted:  # one by one: an existing one must not fail the rest
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([topic])
    finally:
        await admin.close()


def ensure_topics_sync(bootstrap: str, names: Iterable[str], partitions: int, replication: int = 1) -> None:
    asyncio.run(ensure_topics(bootstrap, list(names), partitions, replication))


MESSAGE_LIMIT = "max.message.bytes"  # a topic's largest record batch


async def message_limits(bootstrap: str, names: Iterable[str]) -> dict[str, int]:
    """The ``max.message.bytes`` of each topic of ``names`` that exists and reports it: Apache
    Kafka reports every topic's, its default included; Tansu only one set on the topic."""
    admin = clients.admin(bootstrap, purpose="admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [n for n in dict.fromkeys(names) if n in existing]
        if not wanted:
            return {}
        answers = await admin.describe_configs(
            # All of a topic's configs: Tansu closes the connection on a request naming some
            # (Apache Kafka answers either way).
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in wanted]
        )
    finally:
        await admin.close()
    limits: dict[str, int] = {}
    for answer in answers:
        for error, _message, _type, name, entries, *_ in answer.resources:
            for entry in entries if not error else ():
                if entry[0] == MESSAGE_LIMIT and str(entry[1] or "").isdigit():
                    limits[name] = int(entry[1])
    return limits


async def batch_size_for(bootstrap: str, written: Iterable[str], wanted: int) -> int:
    """``wanted``, or less: no larger than the smallest ``max.message.bytes`` of the topics in
    ``written`` that exist already (a user's own output or dead-letter topic may be set below
    Kafka's default). The broker refuses a larger batch, which exits a worker, and would again
    after every restart. ``wanted`` as it is when the configs cannot be read (not allowed by the
    cluster's ACLs, no broker answering): the producer then fails as it would have."""
    if wanted <= 1:
        return wanted
    try:
        limits = await message_limits(bootstrap, written)
    except Exception as exc:
        log.warning("the topics' %s not read (%r): producer batches of %d bytes", MESSAGE_LIMIT, exc, wanted)
        return wanted
    if not limits or min(limits.values()) >= wanted:
        return wanted
    topic = min(limits, key=limits.__getitem__)
    log.warning(
        "producer batches of %d bytes, not %d: topic %s takes no larger (%s)", limits[topic], wanted, topic, MESSAGE_LIMIT
    )
    return limits[topic]


TANSU_CLUSTER = "tansu_cluster"  # the cluster id Tansu reports (DescribeCluster)


def is_tansu(bootstrap: str, timeout: float = 10.0) -> bool:
    """The broker is Tansu (the embedded broker), by the cluster id it reports; False when it
    cannot tell (an Apache Kafka cluster, or no answer in time)."""

    async def ask() -> bool:
        admin = clients.admin(bootstrap, purpose="admin", request_timeout_ms=int(timeout * 1000))
        await admin.start()
        try:
            cluster = await admin.describe_cluster()
        finally:
            await admin.close()
        return str(cluster.get("cluster_id") or "").startswith("tansu")

    try:
        return asyncio.run(asyncio.wait_for(ask(), timeout))
    except Exception:
        return False
