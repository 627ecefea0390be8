"""Definitions: YAML and Python build the same thing; errors name file, saga, step, field."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.unit.sagas import order_saga
from tracker.core.definitions import Catalog, FieldRef, parse_duration
from tracker.core.errors import DefinitionError
from tracker.loader import builtin_paths, load_catalog, load_file, parse_text

MINIMAL = """
sagas:
  - name: refund
    topics: [refunds]
    start: RefundRequested
    correlation: {saga_id: data.refund_id}
    steps:
      - name: request
        completed_by: RefundRequested
        compensation: {emit: CancelRefund, confirmed_by: RefundCancelled}
      - name: payout
        completed_by: [RefundPaid]
        failed_by: [RefundRejected]
        timeout: 90s
        compensation: none
"""


def test_shipped_definitions_load_without_warnings() -> None:
    catalog = load_catalog()
    assert set(catalog.current) == {"order_fulfilment", "task_assignment"}
    assert catalog.warnings() == []
    order = catalog.current["order_fulfilment"]
    assert [s.name for s in order.steps] == ["order", "payment", "inventory", "shipping"]
    assert [s.compensation.emit for s in order.steps if s.compensation] == [
        "CancelOrder",
        "RefundPayment",
        "ReleaseStock",
        "CancelShipment",
    ]
    task = catalog.current["task_assignment"]
    notification = task.steps[task.step_index("notification")]
    assert notification.compensation is not None and notification.compensation.semantic
    assert [str(r) for r in task.correlation.event_type] == ["type", "header:ce_type"]
    assert [str(r) for r in task.correlation.event_id] == ["id", "event_id", "header:ce_id"]


def test_yaml_and_python_build_equal_definitions() -> None:
    [from_yaml] = parse_text(MINIMAL, file="refund.yaml")
    assert from_yaml.steps[1].timeout == 90 and from_yaml.steps[1].compensation is None
    assert from_yaml.steps[1].pending_status == "PENDING_PAYOUT"
    assert from_yaml.correlation.saga_id == (FieldRef("field", ("data", "refund_id")),)
    assert from_yaml.warnings == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1.5h", 5400),
        ("250ms", 0.25),
        ("2d", 172800),
        (45, 45),
        ("none", None),
    ],
)
def test_durations(text: object, expected: float | None) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["soon", "-5s", 0, True, "5 parsecs"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def _broken(old: str, new: str) -> str:
    assert old in MINIMAL
    return MINIMAL.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "saga", "step", "field", "message"),
    [
        (
            _broken("        timeout: 90s", "        timeout: 90s\n        retries: 3"),
            "refund",
            "payout",
            "retries",
            "unknown field",
        ),
        (_broken("timeout: 90s", "timeout: soon"), "refund", "payout", "timeout", "duration"),
        (
            _broken("    topics: [refunds]\n", "    topics: [refunds]\n    colour: blue\n"),
            "refund",
            None,
            "colour",
            "unknown field",
        ),
        (_broken("completed_by: [RefundPaid]", "completed_by: []"), "refund", "payout", "completed_by", "must not be empty"),
        (
            _broken("failed_by: [RefundRejected]", "failed_by: [RefundRequested]"),
            "refund",
            "payout",
            "failed_by",
            "already means",
        ),
        (
            _broken("{emit: CancelRefund, confirmed_by: RefundCancelled}", "{emit: CancelRefund}"),
            "refund",
            "request",
            "confirmed_by",
            "required",
        ),
        (
            _broken("{emit: CancelRefund, confirmed_by: RefundCancelled}", "{emit: X, confirmed_by: Y, undo: Z}"),
            "refund",
            "request",
            "compensation.undo",
            "unknown field",
        ),
        (_broken("    start: RefundRequested", "    start: RefundPaid"), "refund", None, "start", "only complete the first step"),
        (
            _broken("correlation: {saga_id: data.refund_id}", "correlation: {saga_id: 'data..id'}"),
            "refund",
            None,
            "correlation.saga_id",
            "invalid field path",
        ),
        (_broken("        compensation: none\n", ""), "refund", "payout", "compensation", "required"),
    ],
)
def test_errors_name_file_saga_step_and_field(text: str, saga: str, step: str | None, field: str, message: str) -> None:
    with pytest.raises(DefinitionError) as info:
        parse_text(text, file="refund.yaml")
    err = info.value
    assert (err.file, err.saga, err.step, err.field) == ("refund.yaml", saga, step, field)
    assert message in str(err) and str(err).startswith("refund.yaml: saga 'refund'")


def test_duplicate_yaml_keys_and_bad_yaml_are_errors() -> None:
    with pytest.raises(DefinitionError, match=r"duplicate key 'name'"):
        parse_text(MINIMAL.replace("  - name: refund\n", "  - name: refund\n    name: again\n"), file="f.yaml")
    with pytest.raises(DefinitionError, match=r"f\.yaml: not valid YAML"):
        parse_text("sagas: [", file="f.yaml")
    with pytest.raises(DefinitionError, match=r"f\.yaml: field 'sagas'"):
        parse_text("sagas: []", file="f.yaml")


def test_irreversible_step_not_last_warns() -> None:
    text = MINIMAL.replace("compensation: {emit: CancelRefund, confirmed_by: RefundCancelled}", "compensation: none")
    [d] = parse_text(text, file="f.yaml")
    assert len(d.warnings) == 1 and "step 'request' is irreversible" in d.warnings[0]


def test_an_event_type_on_a_topic_belongs_to_one_saga() -> None:
    [a] = parse_text(MINIMAL, file="a.yaml")
    [b] = parse_text(MINIMAL.replace("name: refund", "name: other"), file="b.yaml")
    with pytest.raises(DefinitionError, match="also used by saga 'refund'"):
        Catalog.build([a, b])


def test_versions_are_kept_and_the_last_one_starts_new_sagas() -> None:
    [v1] = parse_text(MINIMAL, file="f.yaml")
    [v2] = parse_text(
        MINIMAL.replace("timeout: 90s", "timeout: 2m").replace("name: refund", "name: refund\n    version: 2"), file="f.yaml"
    )
    catalog = Catalog.build([v1, v2])
    assert catalog.definition("refund") is v2 and catalog.definition("refund", "1") is v1
    with pytest.raises(DefinitionError, match="declared twice"):
        Catalog.build([v1, v1])


def test_python_dataclasses_are_validated_too() -> None:
    with pytest.raises(DefinitionError, match="saga 'order': step 'payment': field 'timeout'"):
        base = order_saga()
        steps = list(base.steps)
        steps[1] = steps[1].__class__("payment", completed_by=("PaymentAuthorized",), timeout=-1)
        order_saga(steps=tuple(steps))


def test_validate_command(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(MINIMAL)
    bad.write_text(_broken("timeout: 90s", "timeout: whenever"))
    ok = subprocess.run(
        [sys.executable, "-m", "tracker", "validate", str(good), *map(str, builtin_paths())], capture_output=True, text=True
    )
    assert ok.returncode == 0 and "ok:" in ok.stdout and "saga 'refund'" in ok.stdout
    failed = subprocess.run([sys.executable, "-m", "tracker", "validate", str(bad)], capture_output=True, text=True)
    assert failed.returncode == 1
    assert f"{bad}: saga 'refund': step 'payout': field 'timeout'" in failed.stderr


def test_load_file_reports_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="cannot read"):
        load_file(tmp_path / "missing.yaml")
    (tmp_path / "latin.yaml").write_bytes(textwrap.dedent(MINIMAL).encode() + b"# \xff\n")
    with pytest.raises(DefinitionError, match="cannot read"):
        load_file(tmp_path / "latin.yaml")
