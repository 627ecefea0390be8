"""Retire: delete a generation's own topics once it is neither promoted nor running."""

from __future__ import annotations

import time

from topics import names
from tracker.core.errors import ReplayError
from tracker.generations import registry as gens
from tracker.kafka import clients
from tracker.kafka.admin import bootstrap_of
from tracker.ops.settings import Settings


async def retire(settings: Settings, generation: int) -> list[str]:
    """Delete a generation's own topics (never the promoted one's, never shared ones)."""
    bootstrap = bootstrap_of(settings.broker)
    registry = await gens.read_registry(bootstrap, settings.generations)
    if generation == registry.active:
        raise ReplayError(f"generation {generation} is the promoted one; promote another first")
    running = [u for u, at in registry.workers.get(generation, {}).items() if time.time() - at < gens.FRESH]
    if running:
        raise ReplayError(f"generation {generation} still has workers: {', '.join(running)}; stop them first")
    group = names.group_of(settings.app_id, generation)
    admin = clients.admin(bootstrap, purpose="replay")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        shared = {settings.decisions, settings.generations, settings.compensations, settings.outcomes}
        mine = {
            t
            for t in existing
            if t.startswith(group + "-") and t not in shared and not (generation == 1 and _other_generation(settings.app_id, t))
        }
        if mine:
            await admin.delete_topics(sorted(mine))
    finally:
        await admin.close()
    await gens.write(bootstrap, settings.generations, f"generation:{generation}", {"state": "retired", "at": time.time()})
    return sorted(mine)


def _other_generation(app_id: str, topic: str) -> bool:
    rest = topic[len(app_id) + 1 :]
    head = rest.split("-", 1)[0]
    return head.startswith("g") and head[1:].isdigit()
