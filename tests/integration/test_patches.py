"""The client fixes in ``tracker.patches`` against the real broker."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.harness import Kafka, run
from tracker import patches
from tracker.admin import ensure_topics

pytestmark = pytest.mark.integration


def test_a_producer_keeps_the_metadata_of_known_topics_when_it_sends_to_a_new_one(kafka: Kafka) -> None:
    """Without the fix the first send to a topic created after start leaves the client
    tracking only that topic, and the next refresh forgets every other one: their batches
    then have no leader and wait forever (the changelog stall seen in CI)."""
    patches.apply()
    known, created_later = (f"pm-{uuid.uuid4().hex[:8]}-{n}" for n in ("known", "later"))

    async def go() -> None:
        await ensure_topics(kafka.bootstrap, [known], 4)
        p = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, max_batch_size=1)
        await p.start()  # fetches the metadata of every topic, ``known`` included
        try:
            await p.send_and_wait(known, b"1", key=b"k")
            await ensure_topics(kafka.bootstrap, [created_later], 4)
            await p.send_and_wait(created_later, b"2", key=b"k")
            await p.client.force_metadata_update()
            assert p.client.cluster.partitions_for_topic(known) == {0, 1, 2, 3}
            assert p.client.cluster.partitions_for_topic(created_later) == {0, 1, 2, 3}
            await asyncio.wait_for(p.send_and_wait(known, b"3", key=b"k"), timeout=10)
        finally:
            await p.stop()

    run(go())
