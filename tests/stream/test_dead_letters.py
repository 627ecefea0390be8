"""The dead-letter processor when the producer refuses: retried, then the worker exits."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.stream.fake_context import FakeContext
from tracker.core.correlation import Record
from tracker.ops.metrics import Metrics
from tracker.stream.deadletters import SEND_ATTEMPTS, DeadLetters

RECORD = Record("orders", 1, 7, b"k", b"{not json", [("h", b"v")], 1.0)


class Refusing(FakeContext):
    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals

    async def send(self, sink: str, key: bytes | None, value: bytes | None, **kwargs: Any) -> Any:
        if self.refusals:
            self.refusals -= 1
            raise RuntimeError("KafkaTimeoutError")  # what aiokafka raises when it cannot take a record
        return await super().send(sink, key, value, **kwargs)


def dead_letters(context: FakeContext) -> DeadLetters:
    d = DeadLetters(Metrics(CollectorRegistry()), backoff=0.0)
    d.init(context)
    return d


async def test_a_refused_dead_letter_is_retried_until_the_producer_takes_it() -> None:
    context = Refusing(refusals=SEND_ATTEMPTS - 1)
    await dead_letters(context).send(RECORD, "not_json", "unexpected character")
    [sent] = context.take("dead_letter")
    assert sent.value == b"{not json" and dict(sent.headers)["x-dead-letter-reason"] == b"not_json"


async def test_a_dead_letter_that_cannot_be_sent_exits_the_worker_rather_than_skip_the_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def exit_(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr("tracker.stream.restart.os._exit", exit_)
    context = Refusing(refusals=SEND_ATTEMPTS)
    with pytest.raises(SystemExit) as exited:
        await dead_letters(context).send(RECORD, "not_json", "unexpected character")
    assert exited.value.code == 70 and context.take("dead_letter") == []
