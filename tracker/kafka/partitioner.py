"""Which partition a key goes to: the producer's default partitioner, in one place, remembered.

murmur2 in Python costs ~2 µs; a saga's every event asks for its partition, and its outputs
ask again in the producer, so the hashes of the keys in flight are remembered (a hit costs a
tenth of that).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from aiokafka.partitioner import DefaultPartitioner, murmur2


@lru_cache(maxsize=1 << 16)
def _hash(key: bytes) -> int:
    return murmur2(key) & 0x7FFFFFFF


def partition_of(saga_id: str, partitions: int) -> int:
    """The saga's partition: what Kafka's default partitioner picks for the key (murmur2, as
    in the Java client), so the saga log, the state, table routing and replay agree."""
    return _hash(saga_id.encode()) % partitions


class Partitioner:
    """The producer's partitioner (faust's ``producer_partitioner``): aiokafka's default, each
    key's hash remembered."""

    default = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
        if key is None:
            return int(self.default(key, all_partitions, available))
        return all_partitions[_hash(key) % len(all_partitions)]
