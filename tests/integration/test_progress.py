"""Stream time against the real broker: what a peek at a waiting partition may conclude."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from faust.types import TP

from tests.integration.harness import Kafka, run
from tracker.progress import Progress

pytestmark = pytest.mark.integration


def test_a_peek_tells_a_record_from_an_empty_offset_from_no_answer(kafka: Kafka) -> None:
    topic = f"peek-{uuid.uuid4().hex[:8]}"
    kafka.create([topic])
    kafka.produce([(topic, b"k", b"v", [])])
    record = next(r for r in kafka.read(topic, lambda rs: bool(rs)))
    p = Progress(SimpleNamespace(conf=SimpleNamespace()), [topic], "log", kafka.bootstrap, lag_threshold=0)
    there, empty, unanswered = TP(topic, record["partition"]), TP(topic, (record["partition"] + 1) % 4), TP(topic, 7)

    async def go() -> tuple[dict[TP, float | None], dict[TP, float | None]]:
        try:
            first = await p.first_timestamps({there: 0, empty: 0, unanswered: 0})
            again = await p.first_timestamps({there: 0, empty: 0, unanswered: 0})
            return first, again
        finally:
            await p.close()

    first, again = run(go())
    assert first[there] == record["timestamp"] / 1000
    # The broker answered "nothing there" (a phantom lag): remembered, it holds nothing back.
    assert first[empty] is None and p.peeked[empty] == (0, None)
    # No answer (here: a partition that does not exist) may hide a completion: nothing fires
    # past it this sweep, and the next sweep asks again.
    assert first[unanswered] == 0.0 and unanswered not in p.peeked
    assert again == first
