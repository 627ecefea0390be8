"""Which partition a saga lives in: the producer's default partitioner, in one place."""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


# murmur2 in Python costs ~2 µs; a saga's every event asks for its partition, so the sagas in
# flight are remembered (a hit costs a tenth of that).
@lru_cache(maxsize=1 << 16)
def partition_of(saga_id: str, partitions: int) -> int:
    """The saga's partition: what Kafka's default partitioner picks for the key (murmur2, as
    in the Java client), so the saga log, the state, table routing and replay agree."""
    return (murmur2(saga_id.encode()) & 0x7FFFFFFF) % partitions
