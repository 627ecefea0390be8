"""Every Kafka topic the tracker reads or writes, declared in one place.

All of them carry raw bytes: the tracker decodes JSON itself, so a value that is not
JSON is dead-lettered instead of being thrown into the stream by faust.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faust

from tracker.core.definitions import Catalog

if TYPE_CHECKING:  # settings name topics through ``topics.names``: imported here for types only
    from tracker.ops.settings import Settings

RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


@dataclass(frozen=True)
class Topics:
    sources: faust.TopicT  # the services' existing topics, as named by the definitions, and decisions
    saga_log: faust.TopicT  # this generation's: service events re-keyed by saga id, timeouts, operator actions
    compensations: faust.TopicT
    outcomes: faust.TopicT
    dead_letters: faust.TopicT
    decisions: faust.TopicT  # shared by generations: timeouts and actions the promoted one took
    shadow: faust.TopicT  # this generation's would-be outputs while it is not promoted


def owned_names(settings: Settings) -> list[str]:
    """The topics the tracker creates and writes (all but the sources), in ``Topics``' order:
    what ``declare`` makes them from, and what a worker fits its producer's batches to."""
    return [
        settings.saga_log,
        settings.compensations,
        settings.outcomes,
        settings.dead_letters,
        settings.decisions,
        settings.shadow_outputs,
    ]


def declare(app: faust.App, settings: Settings, catalog: Catalog) -> Topics:
    def owned(name: str) -> faust.TopicT:
        # Created by the tracker with its partition count; keyed by saga id (outputs too,
        # so a saga's events stay in order for consumers and replay).
        return app.topic(name, partitions=settings.partitions, replicas=settings.replication_factor, internal=True, **RAW)

    saga_log, compensations, outcomes, dead_letters, decisions, shadow = (owned(n) for n in owned_names(settings))
    return Topics(
        sources=app.topic(*catalog.topics, settings.decisions, **RAW),
        saga_log=saga_log,
        compensations=compensations,
        outcomes=outcomes,
        dead_letters=dead_letters,
        decisions=decisions,
        shadow=shadow,
    )
