"""Every error saga-tracker raises on purpose.

    TrackerError                  base of everything below
    ├── DefinitionError           a saga definition is invalid (names file, saga, step, field)
    ├── CorrelationError          an input record cannot be used; ``reason`` is the
    │                             dead-letter reason code (``not_json``, ``no_saga_id``...)
    ├── StateError                a stored saga state cannot be decoded
    ├── PartitionError            a saga-log record for a partition whose state is not open
    │                             on this worker (only while partitions move); dead-lettered
    ├── SettingsError             an environment variable has an invalid value
    ├── BrokerError               the embedded broker could not be started
    └── ReplayError               a replay, promotion or retirement was refused (the message says why)

Anything else escaping the tracker is a bug. The stream agents catch every
exception per record and dead-letter the record, so no error stops a worker.
"""

from __future__ import annotations


class TrackerError(Exception):
    """Base class of every error raised by saga-tracker on purpose."""


class DefinitionError(TrackerError):
    """A saga definition is invalid.

    The message names where: ``file: saga 'order': step 'payment': field 'timeout': ...``.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        saga: str | None = None,
        step: str | None = None,
        field: str | None = None,
    ) -> None:
        self.file, self.saga, self.step, self.field = file, saga, step, field
        self.detail = message
        where = []
        if file:
            where.append(file)
        if saga:
            where.append(f"saga {saga!r}")
        if step:
            where.append(f"step {step!r}")
        if field:
            where.append(f"field {field!r}")
        super().__init__(": ".join([*where, message]))


class CorrelationError(TrackerError):
    """An input record cannot be mapped to a saga; it is dead-lettered with ``reason``."""

    def __init__(self, reason: str, detail: str, event_type: str = "") -> None:
        self.reason = reason
        self.detail = detail
        self.event_type = event_type  # for unknown_event_type: which one (conformance tallies it)
        super().__init__(f"{reason}: {detail}")


class StateError(TrackerError):
    """A stored saga state or internal log record cannot be decoded."""


class PartitionError(TrackerError):
    """A saga-log record arrived for a partition whose saga state is not open here."""

    reason = "partition_not_here"


class SettingsError(TrackerError):
    """An environment variable holds an invalid value (the message names it)."""


class BrokerError(TrackerError):
    """The embedded broker could not be started or did not become ready."""


class ReplayError(TrackerError):
    """A replay, promotion or retirement was refused: the generation exists, is promoted, or
    has not caught up."""
