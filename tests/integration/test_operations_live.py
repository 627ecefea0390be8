"""Metrics on real workers, scraped by a real Prometheus whose stuck-saga alert must fire."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.harness import Scenario, Worker
from tests.tools import tool
from tracker.demo.runner import get_json
from tracker.kafka.broker import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def samples(text: str, name: str) -> dict[str, float]:
    return {labels: float(v) for labels, v in re.findall(rf"^{name}\{{(.*?)\}} (\S+)$", text, re.M)}


def scrape(w: Worker) -> str:
    status, text = w.get("/metrics")
    assert status == 200
    return str(text)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[Worker], str]]:
    binary = tool("prometheus", "prometheus")
    procs: list[subprocess.Popen[bytes]] = []

    def start(worker: Worker) -> str:
        rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
            for rule in group["rules"]:
                rule["for"] = "3s"  # a test copy: the real rules wait minutes
        (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
        port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp_path / "alerts.yml")],
            "scrape_configs": [{"job_name": "saga-tracker", "static_configs": [{"targets": [f"127.0.0.1:{worker.port}"]}]}],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(
            subprocess.Popen(
                [
                    binary,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        return f"http://127.0.0.1:{port}"

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=20)


def test_prometheus_scrapes_the_worker_and_the_stuck_saga_alert_fires(
    make_scenario: Callable[..., Scenario], prometheus: Callable[[Worker], str]
) -> None:
    s = make_scenario(timeout="1s", confirm="1s")  # gives up after 1 + 2 + 4 s without confirmation
    w = s.worker().start()
    base = prometheus(w)
    s.send(s.event("OrderCreated", "stalled-1"), s.event("PaymentAuthorized", "stalled-1"))
    w.wait_saga("stalled-1", lambda b: b["status"] == "failed_needs_manual", timeout=40)
    # Due deadlines are counted at each sweep (0.5 s here): wait for the one after the last transition.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(samples(scrape(w), "saga_tracker_sagas_stuck")) != 1:
        time.sleep(0.2)
    text = scrape(w)
    promtool = subprocess.run([tool("promtool", "prometheus"), "check", "metrics"], input=text, capture_output=True, text=True)
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr
    assert samples(text, "saga_tracker_sagas_stuck") == {'saga_type="order",step=""': 1.0}
    assert samples(text, "saga_tracker_compensations_reemitted_total")['saga_type="order",step="payment"'] == 2.0
    assert samples(text, "saga_tracker_timeouts_total") == {'saga_type="order",step="inventory"': 1.0}
    # ``name[]``: those samples alone, as prometheus-client's own exposition answers it.
    status, only = w.get("/metrics?name%5B%5D=saga_tracker_timeouts_total&name%5B%5D=saga_tracker_step_duration_seconds_bucket")
    named = {line.split("{")[0].split(" ")[0] for line in str(only).splitlines() if line and not line.startswith("#")}
    assert status == 200 and named == {"saga_tracker_timeouts_total", "saga_tracker_step_duration_seconds_bucket"}
    assert samples(str(only), "saga_tracker_timeouts_total") == samples(text, "saga_tracker_timeouts_total")

    deadline = time.monotonic() + 60
    firing: list[dict] = []
    while time.monotonic() < deadline and not firing:
        try:
            status, body = get_json(base + "/api/v1/alerts")
        except OSError:
            status, body = 0, {}
        if status == 200:
            firing = [a for a in body["data"]["alerts"] if a["labels"]["alertname"] == "SagaStuck" and a["state"] == "firing"]
        time.sleep(0.5)
    assert firing, "SagaStuck never fired"
    assert firing[0]["labels"]["saga_type"] == "order" and firing[0]["annotations"]["runbook_url"].endswith("#sagastuck")
    status, body = get_json(base + "/api/v1/alerts")
    names = {a["labels"]["alertname"] for a in body["data"]["alerts"] if a["state"] == "firing"}
    assert "SagaNeedsManualIntervention" in names and "TrackerDown" not in names


def test_gauges_per_worker_sum_to_the_fleet_before_and_after_a_rebalance(scenario: Scenario) -> None:
    s = scenario
    w1, w2 = s.worker("w1").start(), s.worker("w2").start()
    ids = [f"g-{n}" for n in range(12)]
    s.send(*[s.event("ApprovalRequested", i, field="request_id") for i in ids])  # parked: in flight for good

    def in_flight(w: Worker) -> float:
        return samples(scrape(w), "saga_tracker_sagas_in_flight").get(
            'saga_type="approval",status="running",step="approval"', 0.0
        )

    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and in_flight(w1) + in_flight(w2) != 12:
        time.sleep(0.5)
    first, second = in_flight(w1), in_flight(w2)
    assert first + second == 12 and first > 0 and second > 0  # each reports only what it owns
    w2.stop()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and in_flight(w1) != 12:
        time.sleep(0.5)
    assert in_flight(w1) == 12
    ages = samples(scrape(w1), "saga_tracker_oldest_in_flight_age_seconds")
    # Since the requests were sent, a minute or two ago at most (not since the epoch).
    assert 1 < ages['saga_type="approval",step="approval"'] < 300
