"""Which partition a saga lives in: the producer's default partitioner, in one place."""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_of(saga_id: str, partitions: int) -> int:
    """The saga's partition: what Kafka's default partitioner picks for the key (murmur2, as
    in the Java client), so the saga log, the state, table routing and replay agree."""
    return (murmur2(saga_id.encode()) & 0x7FFFFFFF) % partitions
