"""Settings come from the environment, once, frozen; the README documents every one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tracker.core.errors import SettingsError
from tracker.ops.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_and_embedded_broker_tuning() -> None:
    s = Settings.from_env({})
    assert s.embedded and s.producer_max_batch_size == 1 and s.session_timeout == 6.0
    assert s.compensations == "saga-tracker-compensations" and s.saga_log == "saga-tracker-saga-log"
    real = Settings.from_env(
        {
            "SAGA_TRACKER_BROKER": "kafka://k:9092",
            "SAGA_TRACKER_PARTITIONS": "12",
            "SAGA_TRACKER_DEFINITIONS": "a.yaml, b.yaml",
            "SAGA_TRACKER_SWEEP_INTERVAL": "0.25",
        }
    )
    assert not real.embedded and real.producer_max_batch_size == 262_144 and real.session_timeout == 30.0
    assert real.producer_linger_ms == 5.0
    assert real.partitions == 12 and real.definitions == ("a.yaml", "b.yaml") and real.sweep_interval == 0.25
    with pytest.raises(dataclasses.FrozenInstanceError):
        real.partitions = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SAGA_TRACKER_PARTITIONS": "four"}, "SAGA_TRACKER_PARTITIONS='four'"),
        ({"SAGA_TRACKER_PARTITIONS": "0"}, "SAGA_TRACKER_PARTITIONS must be at least 1"),
        ({"SAGA_TRACKER_BROKER": "localhost:9092"}, "kafka://"),
        ({"SAGA_TRACKER_WEB_PORT": "70000"}, "WEB_PORT"),
        ({"SAGA_TRACKER_PRODUCER_LINGER_MS": "-1"}, "PRODUCER_LINGER_MS must not be negative"),
        ({"SAGA_TRACKER_GC_YOUNG_OBJECTS": "-1"}, "GC_YOUNG_OBJECTS must not be negative"),
        ({"SAGA_TRACKER_PRODUCER_MAX_BATCH_SIZE": "0"}, "PRODUCER_MAX_BATCH_SIZE must be at least 1"),
        ({"SAGA_TRACKER_COMMIT_INTERVAL": "0"}, "COMMIT_INTERVAL must be positive"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_readme_documents_every_setting_and_the_two_commands() -> None:
    text = README.read_text()
    for variable, default, meaning in Settings.documentation():
        assert f"| `{variable}` | `{default}` | {meaning} |" in text, variable
    assert "make demo" in text and "make test" in text
