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

    def internal_names(self) -> list[str]:
        owned = (self.saga_log, self.compensations, self.outcomes, self.dead_letters, self.decisions, self.shadow)
        return [t.get_topic_name() for t in owned]


def declare(app: faust.App, settings: Settings, catalog: Catalog) -> Topics:
    def owned(name: str) -> faust.TopicT:
        # Created by the tracker with its partition count; keyed by saga id (outputs too,
        # so a saga's events stay in order for consumers and replay).
        return app.topic(name, partitions=settings.partitions, replicas=settings.replication_factor, internal=True, **RAW)

    return Topics(
        sources=app.topic(*catalog.topics, settings.decisions, **RAW),
        saga_log=owned(settings.saga_log),
        compensations=owned(settings.compensations),
        outcomes=owned(settings.outcomes),
        dead_letters=owned(settings.dead_letters),
        decisions=owned(settings.decisions),
        shadow=owned(settings.shadow_outputs),
    )
