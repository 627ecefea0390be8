"""HTTP endpoints served by every worker (faust web): health, readiness, metrics, saga status."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import faust
import orjson
from aiokafka.partitioner import DefaultPartitioner
from faust.exceptions import SameNode
from faust.types import TP, TableT
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from tables import Tables
from tracker.definitions import Catalog
from tracker.machine import visible_status
from tracker.metrics import Metrics
from tracker.state import SagaState
from tracker.sweeper import Sweeper


def saga_view(catalog: Catalog, state: SagaState) -> dict[str, Any]:
    """The public JSON of one saga: its state plus the user-visible status and step names."""
    out = state.to_dict()
    definition = catalog.definition(state.saga_type, state.version)
    if definition is not None:
        out["visible_status"] = visible_status(definition, state)
        for spec, step in zip(definition.steps, out["steps"], strict=False):
            step["name"] = spec.name
        if state.current is not None:
            out["current_step"] = definition.steps[state.current].name
    return out


def _json(web: View, body: Any, status: int = 200) -> Response:
    return web.bytes(orjson.dumps(body), content_type="application/json", status=status)


def register(app: faust.App, catalog: Catalog, tables: Tables, metrics: Metrics, sweeper: Sweeper, partitions: int) -> None:
    @app.page("/healthz")
    async def healthz(web: View, request: Request) -> Response:
        return _json(web, {"status": "alive"})

    @app.page("/readyz")
    async def readyz(web: View, request: Request) -> Response:
        ready = not sweeper.recovering()
        body = {
            "ready": ready,
            "behind": sweeper.behind,
            "catch_up": sweeper.progress.phase,
            "active_partitions": sweeper.active_partitions(),
        }
        return _json(web, body, 200 if ready else 503)

    @app.page("/metrics")
    async def prometheus(web: View, request: Request) -> Response:
        return web.bytes(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    router = Router(app, tables.sagas, partitions)

    @app.page("/sagas/{saga_id}")
    async def get_saga(web: View, request: Request, saga_id: str) -> Response:
        async def local() -> Response:
            raw = tables.sagas.get(saga_id.encode())
            if raw is None:
                return _json(web, {"error": "not_found", "message": f"no saga with id {saga_id!r}"}, 404)
            return _json(web, saga_view(catalog, SagaState.from_dict(orjson.loads(raw))))

        return await router.route(web, request, saga_id, local)


class Router:
    """Table routing: answer locally for owned keys, forward to the owner otherwise.

    faust's ``table_route`` asks the producer's metadata for the partition of a key, which
    it lacks until it wrote to the changelog (and the embedded broker sometimes drops);
    the partition is computed here with the producer's own partitioner (murmur2 over the
    configured partition count, as for every saga-log record) and the owner's URL comes
    from the partition assignor, which all workers share.
    """

    def __init__(self, app: faust.App, table: TableT, partitions: int) -> None:
        self.app, self.table = app, table
        self.partitions = list(range(partitions))
        self.partitioner = DefaultPartitioner()

    def owner(self, key: str) -> str | None:
        partition = self.partitioner(key.encode(), self.partitions, self.partitions)
        tp = TP(self.table.changelog_topic.get_topic_name(), partition)
        assignor: Any = self.app.assignor
        return assignor._tps_url.get(tp)

    async def route(self, web: View, request: Request, key: str, local: Callable[[], Awaitable[Response]]) -> Response:
        url = self.owner(key)
        if url is None:
            return _json(web, {"error": "unavailable", "message": "the saga's partition has no owner yet (rebalancing)"}, 503)
        try:
            return await self.app.router._route_req(URL(url), web.web, request)  # type: ignore[attr-defined]
        except SameNode:
            return await local()
        except (TimeoutError, aiohttp.ClientError) as exc:
            return _json(web, {"error": "unavailable", "message": f"the owning worker did not answer: {type(exc).__name__}"}, 503)
