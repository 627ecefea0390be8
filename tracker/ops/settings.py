"""All configuration, read once from the environment into a frozen object.

Every variable is ``SAGA_TRACKER_*``; the README's configuration table is generated
from ``Settings.documentation()`` so the two cannot drift.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from topics import names
from tracker.core.errors import SettingsError

PREFIX = "SAGA_TRACKER_"


def _doc(text: str, **kw: Any) -> Any:
    return field(metadata={"doc": text}, **kw)


@dataclass(frozen=True)
class Settings:
    broker: str = _doc(
        "Kafka bootstrap URL(s), e.g. `kafka://kafka-0:9092;kafka-1:9092`. Empty: start the embedded broker.", default=""
    )
    app_id: str = _doc("Application id: consumer group and prefix of every internal topic.", default="saga-tracker")
    definitions: tuple[str, ...] = _doc(
        "Comma-separated YAML files or directories of saga definitions. Empty: the shipped ones.", default=()
    )
    data_dir: str = _doc("Directory for RocksDB table state (keep it on a volume).", default="./data")
    partitions: int = _doc(
        "Partitions of the tracker's internal topics (saga log, tables, outputs). Fixes the parallelism.", default=4
    )
    replication_factor: int = _doc("Replication factor of the internal topics.", default=1)
    web_host: str = _doc("Address the HTTP server binds to.", default="127.0.0.1")
    web_port: int = _doc("Port of the HTTP server (metrics, health, read model).", default=6066)
    canonical_url: str = _doc(
        "URL other workers use to reach this one (table routing). Default `http://<web_host>:<web_port>`.", default=""
    )
    compensation_topic: str = _doc(
        "Topic the tracker emits compensation events to. Default `<app_id>-compensations`.", default=""
    )
    outcome_topic: str = _doc(
        "Topic for saga outcome events (completed, compensated, failed). Default `<app_id>-outcomes`.", default=""
    )
    dead_letter_topic: str = _doc(
        "Topic for input that cannot be used. Default `<group>-dead-letter` (see GENERATION).", default=""
    )
    generation: int = _doc(
        "State generation this worker belongs to. Each has its own consumer group, saga log and changelog "
        "topics, named `<app_id>` for generation 1 and `<app_id>-g<N>` after (see Replay). Only the promoted "
        "generation fires timeouts and emits to the services.",
        default=1,
    )
    follow_generations: bool = _doc(
        "Follow the generations registry (promotions, forwarding reads to the promoted generation). "
        "Always on for generation 2 and up; generation 1 can turn it off when no replay is ever run.",
        default=True,
    )
    shadow: bool = _doc(
        "A shadow generation (replay with changed definitions): never promoted, its would-be outputs go to "
        "`<group>-shadow`, and it decides timeouts in event time.",
        default=False,
    )
    max_event_bytes: int = _doc("Larger input records are dead-lettered as `oversized`.", default=1_048_576)
    sweep_interval: float = _doc("Seconds between scans of the deadline index.", default=1.0)
    lag_threshold: int = _doc(
        "After catching up, a worker is 'behind' (fires no timeouts) while an input partition "
        "has more unprocessed records than this.",
        default=100,
    )
    session_timeout: float = _doc("Kafka consumer session timeout, seconds (embedded broker: 6).", default=30.0)
    heartbeat_interval: float = _doc("Kafka consumer heartbeat interval, seconds (embedded broker: 1).", default=3.0)
    rebalance_timeout: float = _doc("Kafka consumer rebalance timeout, seconds (embedded broker: 10).", default=60.0)
    producer_max_batch_size: int = _doc(
        "Producer batch size in bytes. A worker starts with it lowered to the smallest `max.message.bytes` "
        "of the topics it writes that exist (Kafka's default: 1 MiB). aiokafka has one request at a time "
        "in flight to a broker, with one batch per partition in it: with Kafka's own default of 16 KiB the "
        "changelog records of a checkpoint leave 16 KiB per partition per round trip, and the worker waits "
        "behind them (bench/README.md). "
        "With the embedded broker the default is 1: it reports wrong end offsets for batched records.",
        default=262_144,
    )
    producer_linger_ms: float = _doc(
        "Milliseconds the producer waits to fill a batch (Apache Kafka 4's default, 5). faust sends "
        "records one by one, so without it every changelog record is a batch and a request of its own "
        "(bench/README.md has the measured gain). "
        "Ignored with a batch size of 1: nothing to batch, it would only delay a record no other follows.",
        default=5.0,
    )
    commit_interval: float = _doc(
        "Seconds between two checkpoints (faust's commit interval, its default): each writes the saga rows "
        "changed since the last one, sends the outputs they decided, and commits the input. An output leaves "
        "at the checkpoint after its decision, so this bounds how long it waits; shorter costs more row "
        "writes when sagas change several times within it.",
        default=2.8,
    )
    state_cache_rows: int = _doc(
        "Most saga state rows kept in memory between commits (Kafka Streams' record cache): a saga that "
        "changes several times between two commits writes its row and changelog record once, also when its "
        "changes send outputs: an output waits for the commit and leaves after its row's changelog record. "
        "Rows of uncommitted input only, so "
        "a crash loses nothing the input does not bring back. About 2-3 KB a row. 0: write every change.",
        default=5000,
    )
    hot_sagas: int = _doc(
        "Most saga states kept decoded in memory between their events, the sagas changed least "
        "recently leaving first: a saga in flight is then decoded once, not once per event "
        "(saga_tracker_hot_state_reads_total shows hits and misses). About 6-8 KB a saga. 0: none.",
        default=5000,
    )
    gc_young_objects: int = _doc(
        "Objects allocated (net) before Python's collector scans the youngest generation (Python's "
        "default, 700, is tuned for short scripts). A scan walks every young object still alive, and "
        "a worker keeps the states of the sagas in flight (SAGA_TRACKER_HOT_SAGAS) for thousands of "
        "events, while it makes almost no cycles: a larger value lets more of them go before any "
        "scan, for a longer pause when one comes (~0.1-0.2 s at this value). The heap built at "
        "start-up is frozen out of every scan too (bench/README.md has the measured gain). 0: "
        "Python's defaults, nothing frozen.",
        default=200_000,
    )
    fetch_max_bytes: int = _doc(
        "Most bytes the broker returns per partition per fetch, for input and for restoring the saga "
        "state from its changelog. Larger restores faster (bench/README.md has the figures) "
        "at the cost of memory while behind: up to this much per assigned partition is buffered.",
        default=8 << 20,
    )
    stall_timeout: float = _doc(
        "Seconds records may wait for the broker (producing), or sit unconsumed in this worker's "
        "partitions, before the worker exits (code 70) to be restarted rather than hang. "
        "0 disables; set it where something restarts workers (the Kubernetes manifest: 120).",
        default=0.0,
    )
    stop_timeout: float = _doc(
        "Seconds a worker's stop on SIGTERM or SIGINT may take (stop consuming, flush, commit) before it "
        "logs what it could not finish and exits 1; well under Kubernetes' 30 s grace period. 0: unbounded.",
        default=20.0,
    )
    standby_replicas: int = _doc("Standby replicas of each table kept by other workers for fast failover.", default=1)
    action_token: str = _doc("Bearer token required for operator actions. Unset: actions are disabled. Never logged.", default="")
    batch_max_sagas: int = _doc(
        "Most sagas one batch action (POST /sagas/actions) may act on; a filter matching more is refused (400).",
        default=10_000,
    )
    read_token: str = _doc(
        "Bearer token required for read endpoints (the action token is accepted too). Unset: reads are open.", default=""
    )
    log_level: str = _doc("Log level: debug, info, warning, error.", default="info")

    @property
    def embedded(self) -> bool:
        return not self.broker

    @property
    def compensations(self) -> str:
        return names.compensations(self.app_id, self.compensation_topic)

    @property
    def outcomes(self) -> str:
        return names.outcomes(self.app_id, self.outcome_topic)

    @property
    def group_id(self) -> str:
        """The faust app id of this generation: consumer group and prefix of its own topics."""
        return names.group_of(self.app_id, self.generation)

    @property
    def dead_letters(self) -> str:
        return names.dead_letters(self.group_id, self.dead_letter_topic)

    @property
    def saga_log(self) -> str:
        return names.saga_log(self.group_id)

    @property
    def shadow_outputs(self) -> str:
        return names.shadow(self.group_id)

    @property
    def decisions(self) -> str:
        return names.decisions(self.app_id)

    @property
    def generations(self) -> str:
        return names.generations(self.app_id)

    @property
    def batches(self) -> str:
        return names.batches(self.app_id)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = PREFIX + f.name.upper()
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            raw = raw.strip()
            try:
                if f.type == "int":
                    values[f.name] = int(raw)
                elif f.type == "float":
                    values[f.name] = float(raw)
                elif f.type == "bool":
                    if raw.lower() not in ("1", "true", "yes", "0", "false", "no"):
                        raise ValueError(raw)
                    values[f.name] = raw.lower() in ("1", "true", "yes")
                elif f.type == "tuple[str, ...]":
                    values[f.name] = tuple(p.strip() for p in raw.split(",") if p.strip())
                else:
                    values[f.name] = raw
            except ValueError:
                raise SettingsError(f"{name}={raw!r}: expected {f.type}") from None
        settings = cls(**values)
        if not settings.broker:
            settings = settings.on_tansu(env)
        settings.check()
        return settings

    def on_tansu(self, env: Mapping[str, str] | None = None) -> Settings:
        """These settings for Tansu, the embedded broker (started here, or found behind a URL): one
        record per producer batch, as its end offsets are wrong for batched records, and short group
        timeouts, as it holds every join for half the session timeout (``shared/BROKER.md``). What
        the environment sets explicitly is kept. Apache Kafka needs none of this."""
        env = os.environ if env is None else env
        tansu: dict[str, Any] = {
            "producer_max_batch_size": 1,
            "session_timeout": 6.0,
            "heartbeat_interval": 1.0,
            "rebalance_timeout": 10.0,
        }
        if (PREFIX + "PRODUCER_MAX_BATCH_SIZE") in env and env[PREFIX + "PRODUCER_MAX_BATCH_SIZE"].strip():
            return self  # batches chosen by hand: the rest too
        chosen = {k: v for k, v in tansu.items() if not env.get(PREFIX + k.upper(), "").strip()}
        return replace(self, **chosen)

    def check(self) -> None:
        for name in (
            "partitions",
            "replication_factor",
            "max_event_bytes",
            "lag_threshold",
            "generation",
            "fetch_max_bytes",
            "batch_max_sagas",
            "producer_max_batch_size",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{PREFIX}{name.upper()} must be at least 1")
        if not 0 < self.web_port < 65536:
            raise SettingsError(f"{PREFIX}WEB_PORT must be a port number")
        if self.hot_sagas < 0:
            raise SettingsError(f"{PREFIX}HOT_SAGAS must not be negative")
        if self.gc_young_objects < 0:
            raise SettingsError(f"{PREFIX}GC_YOUNG_OBJECTS must not be negative")
        if self.state_cache_rows < 0:
            raise SettingsError(f"{PREFIX}STATE_CACHE_ROWS must not be negative")
        if self.producer_linger_ms < 0:
            raise SettingsError(f"{PREFIX}PRODUCER_LINGER_MS must not be negative")
        if self.commit_interval <= 0:
            raise SettingsError(f"{PREFIX}COMMIT_INTERVAL must be positive")
        if self.sweep_interval <= 0 or self.session_timeout <= 0:
            raise SettingsError(f"{PREFIX}SWEEP_INTERVAL and {PREFIX}SESSION_TIMEOUT must be positive")
        if self.broker and not self.broker.startswith(("kafka://", "aiokafka://")):
            raise SettingsError(f"{PREFIX}BROKER must look like kafka://host:9092, got {self.broker!r}")

    @classmethod
    def documentation(cls) -> list[tuple[str, str, str]]:
        """(variable, default, meaning) rows for the README."""
        rows = []
        for f in fields(cls):
            default = f.default
            shown = ",".join(default) if isinstance(default, tuple) else str(default)
            rows.append((PREFIX + f.name.upper(), shown, f.metadata["doc"]))
        return rows
