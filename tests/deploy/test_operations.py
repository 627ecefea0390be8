"""Alert rules, dashboard and deployment files, checked offline with the real tools."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from tables import Tables
from tests.tools import tool
from tracker.loader import builtin_paths
from tracker.ops.metrics import Metrics, StateCollector

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def run(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def exported_metric_names() -> set[str]:
    registry = CollectorRegistry()
    Metrics(registry)
    names = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(s.name for s in family.samples)
    collector = StateCollector(lambda: {})
    names.update(f.name for f in collector.describe())
    # Counters are exposed with _total; histograms with _bucket/_sum/_count.
    return names | {n + suffix for n in names for suffix in ("_total", "_bucket", "_sum", "_count")}


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())["groups"] for r in g["rules"]]


def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    promtool = tool("promtool")
    assert "SUCCESS: 9 rules found" in run(promtool, "check", "rules", "alerts.yml", cwd=DEPLOY / "prometheus")
    out = run(promtool, "test", "rules", "alerts_test.yml", cwd=DEPLOY / "prometheus")
    assert "SUCCESS" in out
    tested = set(re.findall(r"alertname: (\w+)", (DEPLOY / "prometheus/alerts_test.yml").read_text()))
    assert tested == {r["alert"] for r in alert_rules()}  # every rule has unit tests
    run(promtool, "check", "config", "prometheus.yml", cwd=DEPLOY / "prometheus")


def test_every_alert_has_a_severity_and_a_runbook_section() -> None:
    runbook = (ROOT / "docs/runbook.md").read_text()
    headings = {h.strip().lower() for h in re.findall(r"^## (.+)$", runbook, re.M)}
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        url = rule["annotations"]["runbook_url"]
        assert url == f"docs/runbook.md#{rule['alert'].lower()}" and rule["alert"].lower() in headings, rule["alert"]


def test_rules_and_dashboard_use_only_metrics_the_tracker_exports() -> None:
    known = exported_metric_names()
    texts = [(DEPLOY / "prometheus/alerts.yml").read_text(), (DEPLOY / "grafana/saga-tracker.json").read_text()]
    used = {m for text in texts for m in re.findall(r"saga_tracker_[a-z_]+", text)}
    assert used and used <= known, used - known


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    import json

    dashboard = json.loads((DEPLOY / "grafana/saga-tracker.json").read_text())
    exprs = [(p["id"], t["refId"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 14 and all(p["targets"] for p in dashboard["panels"])
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("started", "outcomes", "stuck", "oldest", "compensation", "lag", "dead letters"):
        assert topic in titles
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:panel{pid}:{ref.lower()}", "expr": expr} for pid, ref, expr in exprs],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(exprs)} rules found" in run(tool("promtool"), "check", "rules", str(path))


def test_compose_file_follows_the_compose_specification() -> None:
    run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml"))
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert {"kafka", "topic-init", "tracker-1", "tracker-2", "prometheus", "alertmanager", "grafana", "demo-services"} <= set(
        compose["services"]
    )
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:")
    assert compose["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    # The topic-init job creates every changelog the tracker declares, compacted.
    init = "\n".join(compose["services"]["topic-init"]["command"])
    tables = re.search(r"for t in ([a-z ]+); do\n\s+create \"saga-tracker-\$\$t-changelog\" cleanup.policy=compact", init)
    assert tables is not None and set(tables.group(1).split()) == set(Tables.__dataclass_fields__)


def test_kubernetes_manifests_are_valid_and_complete() -> None:
    manifests = sorted((DEPLOY / "k8s").glob("*.yaml"))
    out = run(tool("kubernetes-validate"), "--strict", *map(str, manifests))
    assert "ERROR" not in out
    kinds = {d["kind"] for m in manifests for d in yaml.safe_load_all(m.read_text())}
    assert kinds == {"StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget"}
    sts = yaml.safe_load((DEPLOY / "k8s/statefulset.yaml").read_text())
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and sts["spec"]["volumeClaimTemplates"]
    assert sts["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def test_configmap_holds_the_shipped_definitions() -> None:
    configmap = yaml.safe_load((DEPLOY / "k8s/configmap.yaml").read_text())
    assert configmap["data"] == {p.name: p.read_text() for p in builtin_paths()}


def test_dockerfile_runs_non_root_with_state_on_a_volume() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 10001$", text, re.M) and 'VOLUME ["/data"]' in text
    assert "python:3.11-slim" in text and "SAGA_TRACKER_DATA_DIR=/data" in text
