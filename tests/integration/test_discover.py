"""``saga-tracker discover`` against traffic of the demo services on a real broker (both shipped
sagas, with failures, stalls the tracker compensates, duplicates and reordering), with a variant
and hostile records mixed in: it recovers the shipped definitions and the draft validates."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.faults.harness import FaultScenario, ServicesThread
from tests.faults.scenarios import BEHAVIOUR
from tests.integration.harness import Kafka
from tracker.kafka.broker import EmbeddedBroker
from tracker.loader import builtin_paths

pytestmark = pytest.mark.integration


def shipped() -> dict[str, dict]:
    out = {}
    for path in builtin_paths():
        for s in yaml.safe_load(Path(path).read_text())["sagas"]:
            out[s["correlation"]["saga_id"]] = s
    return out


def listed(value: Any) -> list[str]:
    """A definition's one-or-many field as a list."""
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def test_discover_drafts_the_shipped_sagas_from_their_traffic(kafka: Kafka, broker: EmbeddedBroker, tmp_path: Path) -> None:
    s = FaultScenario(kafka, tmp_path, broker.url)
    try:
        s.worker("w1").start()  # compensates the stalls: the services' undo events follow
        services = ServicesThread(s, 11, dataclasses.replace(BEHAVIOUR, stall_rate=0.1))
        services.generate(240, 30.0)
        time.sleep(14)  # the last stalls time out (6 s) and their undos are confirmed
        services.stop()
        order_topic = s.prefix + "orders"
        odd = {"specversion": "1.0", "type": "PaymentAuthorized", "id": "odd-1", "time": "2026-01-01T00:00:00Z"}
        created = {**odd, "id": "odd-2", "type": "OrderCreated", "time": "2026-01-01T00:00:01Z"}
        s.kafka.produce(
            [
                (order_topic, b"odd", orjson.dumps({**odd, "data": {"order_id": "odd-order"}}), []),  # paid before ordered
                (order_topic, b"odd", orjson.dumps({**created, "data": {"order_id": "odd-order"}}), []),
                (order_topic, b"bad", b"\xff\xfe not json", []),
                (order_topic, b"bad", b"[1, 2, 3]", []),
                (order_topic, b"bad", b'{"data": {"order_id": "no-type"}}', []),
            ]
        )
        out = tmp_path / "draft.yaml"
        began = time.monotonic()
        done = s.cli("discover", "--topics", ",".join(s.topics), "--out", str(out), "--json")
        took = time.monotonic() - began
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout)
        assert s.cli("validate", str(out)).returncode == 0, out.read_text()
        assert report["skipped_by_reason"] == {"not_json": 1, "not_an_object": 1, "no_type": 1}
        drafts = {d["correlation"]["saga_id"]: d for d in yaml.safe_load(out.read_text())["sagas"]}
        assert set(drafts) == {"data.order_id", "data.task_id"}, report["keys"]
        for key, want in shipped().items():
            got = drafts[key]
            assert got["start"] == want["start"]
            assert [st["completed_by"] for st in got["steps"]] == [st["completed_by"] for st in want["steps"]]
            for g, w in zip(got["steps"], want["steps"], strict=True):
                assert set(listed(g.get("failed_by"))) <= set(listed(w.get("failed_by"))), (key, g)
                if isinstance(g["compensation"], dict):
                    assert set(g["compensation"]["confirmed_by"]) <= set(listed(w["compensation"]["confirmed_by"])), (key, g)
        order = drafts["data.order_id"]
        # Failures and undos the traffic showed (10 % of steps fail; every completed step gets undone).
        assert sum(len(listed(st.get("failed_by"))) for st in order["steps"]) >= 2
        assert sum(isinstance(st["compensation"], dict) for st in order["steps"]) >= 3
        # Timeouts: services take 0.05-0.6 s, a reordered event 1.5 s more: p99 x 1.5, rounded up.
        for st in order["steps"][1:]:
            assert 1 <= float(str(st["timeout"]).rstrip("s")) <= 5, st
        [orders] = [r for r in report["sagas"] if r["key"] == "data.order_id"]
        assert {"events": ["PaymentAuthorized", "OrderCreated"], "instances": 1} in orders["misfits"]
        assert orders["fit"] < orders["instances"]
        print(f"discover: {report['records']} records in {took:.1f}s")
    finally:
        s.close()
