"""HTTP endpoints served by every worker (faust web): health, readiness, metrics, saga status."""

from __future__ import annotations

from typing import Any

import faust
import orjson
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

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


def register(app: faust.App, catalog: Catalog, tables: Tables, metrics: Metrics, sweeper: Sweeper) -> None:
    @app.page("/healthz")
    async def healthz(web: View, request: Request) -> Response:
        return _json(web, {"status": "alive"})

    @app.page("/readyz")
    async def readyz(web: View, request: Request) -> Response:
        ready = not sweeper.recovering()
        body = {"ready": ready, "behind": sweeper.behind, "catch_up": sweeper.progress.phase,
                "active_partitions": sweeper.active_partitions()}
        return _json(web, body, 200 if ready else 503)

    @app.page("/metrics")
    async def prometheus(web: View, request: Request) -> Response:
        return web.bytes(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/sagas/{saga_id}")
    @app.table_route(table=tables.sagas, match_info="saga_id")
    async def get_saga(web: View, request: Request, saga_id: str) -> Response:
        raw = tables.sagas.get(saga_id.encode())
        if raw is None:
            return _json(web, {"error": "not_found", "message": f"no saga with id {saga_id!r}"}, 404)
        return _json(web, saga_view(catalog, SagaState.from_dict(orjson.loads(raw))))
