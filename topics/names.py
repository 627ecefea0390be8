"""Every topic name the tracker uses, derived in one place from the app id and the generation.

A generation's own topics carry its group id (``<app_id>`` for generation 1, ``<app_id>-gN``
after); the decisions and generations topics are shared by all generations. The worker (through
``Settings``), replay and retire all name topics here, so they cannot disagree.
"""

from __future__ import annotations


def group_of(app_id: str, generation: int) -> str:
    """The faust app id of a generation: consumer group and prefix of its own topics."""
    return app_id if generation == 1 else f"{app_id}-g{generation}"


def saga_log(group: str) -> str:
    return f"{group}-saga-log"


def shadow(group: str) -> str:
    """Where a generation that is not promoted sends what it would have emitted."""
    return f"{group}-shadow"


def dead_letters(group: str, override: str = "") -> str:
    return override or f"{group}-dead-letter"


def compensations(app_id: str, override: str = "") -> str:
    return override or f"{app_id}-compensations"


def outcomes(app_id: str, override: str = "") -> str:
    return override or f"{app_id}-outcomes"


def decisions(app_id: str) -> str:
    """Shared by every generation: the timeouts and actions the promoted one took."""
    return f"{app_id}-decisions"


def generations(app_id: str) -> str:
    """Shared, one partition: which generation is promoted, and the workers of each."""
    return f"{app_id}-generations"


def batches(app_id: str) -> str:
    """Shared, one partition, compacted: each batch action's manifest (its sagas, who, why)."""
    return f"{app_id}-batches"


def changelog(group: str, table: str) -> str:
    """faust's name for a table's changelog topic."""
    return f"{group}-{table}-changelog"
