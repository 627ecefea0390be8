"""HTTP API and web page, served by every worker (faust web).

Reads: ``GET /sagas/{id}`` is routed to the worker owning the saga's partition. ``GET /sagas``
and ``GET /sagas/stats`` fan out to every worker (each scans the summaries of the partitions
it owns) and merge: no global table to keep consistent, and each worker reads only its own
RocksDB. Writes: operator actions become control records on the saga log, applied by the
track agent like everything else. Errors are JSON with a status; never a stack trace.

Generations: a worker of a generation that is not promoted forwards ``/sagas`` requests
to a worker of the promoted one (falling back to its own state for reads when none
answers), so a promotion switches the read model without a failed request. Every
response says which generation answered (``X-Saga-Generation``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import aiohttp.web
import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tracker.core.conformance import merge as merge_conformance
from tracker.core.flow import merge
from tracker.core.summaries import BadQuery, Query
from tracker.generations.registry import Generations
from tracker.web.api import FANOUT_TIMEOUT, Api
from tracker.web.batches import RESUME_EVERY
from tracker.web.definitions import definitions_view
from tracker.web.openapi import document as openapi_document
from tracker.web.responses import error, ok

log = logging.getLogger(__name__)

STATIC = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html"}


def guarded(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """Any unexpected error is a JSON 500 without the stack trace (which goes to the log)."""

    async def run(self: View, request: Request, **kwargs: Any) -> Response:
        try:
            return await handler(self, request, **kwargs)
        except Exception:
            log.exception("%s %s failed", request.method, request.url)
            return error(self, 500, "internal_error", "the request failed; the worker log has the details")

    run.__name__ = handler.__name__
    return run


@aiohttp.web.middleware
async def json_errors(request: aiohttp.web.Request, handler: Any) -> aiohttp.web.StreamResponse:
    """aiohttp's own errors (unknown path, wrong method) in the API's JSON shape."""
    try:
        response: aiohttp.web.StreamResponse = await handler(request)
        return response
    except aiohttp.web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(exc.status, "bad_request")
        return aiohttp.web.json_response({"error": code, "message": exc.reason}, status=exc.status)


GENERATION = "X-Saga-Generation"
FORWARDED = "X-Saga-Tracker-Forwarded"
HOP_HEADERS = ("Authorization", "Content-Type", "Accept")


def promoted_generation(generations: Generations) -> Callable[..., Awaitable[aiohttp.web.StreamResponse]]:
    """Middleware: answer read-model requests from the promoted generation."""
    session: dict[str, aiohttp.ClientSession] = {}

    async def forward(request: aiohttp.web.Request, url: str) -> aiohttp.web.Response:
        if "s" not in session:
            session["s"] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FANOUT_TIMEOUT))
        headers = {k: request.headers[k] for k in HOP_HEADERS if k in request.headers}
        headers[FORWARDED] = "1"
        body = await request.read()
        async with session["s"].request(request.method, url + request.path_qs, headers=headers, data=body) as r:
            payload = await r.read()
            out = aiohttp.web.Response(body=payload, status=r.status, content_type=r.content_type)
            out.headers[GENERATION] = r.headers.get(GENERATION, str(generations.registry.active))
            return out

    @aiohttp.web.middleware
    async def middleware(request: aiohttp.web.Request, handler: Any) -> aiohttp.web.StreamResponse:
        peer = generations.active_peer()
        if peer is not None and request.path.startswith(("/sagas", "/batches")) and FORWARDED not in request.headers:
            try:
                return await forward(request, peer)
            except (TimeoutError, aiohttp.ClientError) as exc:
                if request.method != "GET":  # an action must reach the generation that acts
                    return aiohttp.web.json_response(
                        {"error": "unavailable", "message": f"the promoted generation did not answer: {exc!r}"}, status=503
                    )
                log.warning("promoted generation at %s did not answer (%r): serving this generation's state", peer, exc)
        response: aiohttp.web.StreamResponse = await handler(request)
        if GENERATION not in response.headers:
            response.headers[GENERATION] = str(generations.generation)
        return response

    return middleware


def register(app: faust.App, api: Api, generations: Generations) -> None:
    web_app: Any = app.web.web_app  # type: ignore[attr-defined]
    web_app.middlewares.append(json_errors)
    web_app.middlewares.append(promoted_generation(generations))

    def page(path: str) -> Callable[[type[View]], type[View]]:
        return app.page(path)  # type: ignore[return-value]

    def read(view: View, request: Request) -> Response | None:
        return api.read_denied(view, request)

    @page("/healthz")
    class Healthz(View):
        @guarded
        async def get(self, request: Request) -> Response:
            return ok(self, {"status": "alive"})

    @page("/readyz")
    class Readyz(View):
        @guarded
        async def get(self, request: Request) -> Response:
            ready = api.worker.ready()
            body = {
                "ready": ready,
                "active_partitions": api.worker.active_partitions(),
                "generation": generations.generation,
                "promoted": generations.registry.active,
                "shadow": generations.shadow,
                **api.lag(),
            }
            return ok(self, body, 200 if ready else 503)

    @page("/metrics")
    class Metrics(View):
        @guarded
        async def get(self, request: Request) -> Response:
            # ``name[]``: only these families, as prometheus-client's own exposition offers (a
            # poller of one counter then costs the worker no gauges, seeks or index placement).
            names = parse_qs(request.query_string).get("name[]", [])
            api.metrics.flush()  # the tallied counts, whichever families are asked for
            registry = api.metrics.registry.restricted_registry(names) if names else api.metrics.registry
            return self.bytes(generate_latest(registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @page("/openapi.json")
    class OpenApi(View):
        @guarded
        async def get(self, request: Request) -> Response:
            return ok(self, openapi_document())

    @page("/")
    class Index(View):
        @guarded
        async def get(self, request: Request) -> Response:
            return static(self, "index.html")

    @page("/static/{name}")
    class Static(View):
        @guarded
        async def get(self, request: Request, name: str) -> Response:
            return static(self, name)

    def parse(view: View, request: Request) -> Query | Response:
        try:
            return Query.parse(dict(request.query), api.catalog)
        except BadQuery as exc:
            return error(view, 400, "bad_request", exc.message, parameter=exc.parameter)

    @page("/sagas")
    class Sagas(View):
        @guarded
        async def get(self, request: Request) -> Response:
            if denied := read(self, request):
                return denied
            query = parse(self, request)
            if not isinstance(query, Query):
                return query
            params = query.to_params(cursor=request.query.get("cursor"))
            pages, missing = await api.fan_out(request, "/internal/sagas", params, lambda: api.local_page(query))
            items, cursor = query.merge(pages)
            return ok(self, {"items": items, "next_cursor": cursor, "partial": bool(missing), "missing_workers": missing})

    @page("/definitions")
    class Definitions(View):
        @guarded
        async def get(self, request: Request) -> Response:
            return read(self, request) or ok(self, definitions_view(api.catalog))

    @page("/sagas/stats")
    class Stats(View):
        @guarded
        async def get(self, request: Request) -> Response:
            if denied := read(self, request):
                return denied
            parts, missing = await api.fan_out(request, "/internal/stats", {}, api.local_stats)
            merged = merge(parts)
            merged["conformance"] = merge_conformance(p.get("conformance", {}) for p in parts)
            merged["workers"] = [p["lag"] for p in parts]
            merged["behind"] = any(p["lag"]["behind"] for p in parts)
            merged.update(partial=bool(missing), missing_workers=missing)
            return ok(self, merged)

    # What one worker answers for its own partitions; the public endpoints fan out to these.
    @page("/internal/sagas")
    class InternalSagas(View):
        @guarded
        async def get(self, request: Request) -> Response:
            if denied := read(self, request):
                return denied
            query = parse(self, request)
            return ok(self, await api.local_page(query)) if isinstance(query, Query) else query

    @page("/internal/stats")
    class InternalStats(View):
        @guarded
        async def get(self, request: Request) -> Response:
            return read(self, request) or ok(self, await api.local_stats())

    @page("/sagas/actions")
    class BatchActions(View):
        @guarded
        async def post(self, request: Request) -> Response:
            return await api.act_batch(self, request)

    @page("/batches/{batch}")
    class Batch(View):
        @guarded
        async def get(self, request: Request, batch: str) -> Response:
            return read(self, request) or await api.batch_status(self, request, batch)

    @page("/internal/match")
    class InternalMatch(View):
        @guarded
        async def get(self, request: Request) -> Response:
            if denied := read(self, request):
                return denied
            params = dict(request.query)
            cap = params.pop("cap", "")
            try:
                query = Query.parse(params, api.catalog)
            except BadQuery as exc:
                return error(self, 400, "bad_request", exc.message, parameter=exc.parameter)
            if not cap.isdigit():
                return error(self, 400, "bad_request", "cap must be a whole number", parameter="cap")
            return ok(self, await api.local_match(query, int(cap)))

    @page("/internal/batches/{batch}")
    class InternalBatch(View):
        @guarded
        async def get(self, request: Request, batch: str) -> Response:
            if denied := read(self, request):
                return denied
            found = await api.batches.find(batch)
            if found is None:
                return error(self, 404, "not_found", f"no batch with id {batch[:100]!r}")
            return ok(self, await api.local_batch(found))

    @app.timer(RESUME_EVERY)
    async def resume_batches() -> None:
        try:
            await api.resume()
        except Exception:  # the next round tries again
            log.exception("resuming pending batch actions failed")

    @page("/sagas/{saga_id}")
    class Saga(View):
        @guarded
        async def get(self, request: Request, saga_id: str) -> Response:
            if denied := read(self, request):
                return denied

            async def local() -> Response:
                found = api.local_saga(saga_id)
                if found is None:
                    return error(self, 404, "not_found", f"no saga with id {saga_id!r}")
                return ok(self, found)

            return await api.router.route(self, request, saga_id, local)

    @page("/sagas/{saga_id}/actions")
    class Actions(View):
        @guarded
        async def post(self, request: Request, saga_id: str) -> Response:
            return await api.act(self, request, saga_id)


def static(view: Any, name: str) -> Response:
    if name not in STATIC:  # a fixed list: no path ever reaches the file system
        return error(view, 404, "not_found", "no such file")
    body = (resources.files("tracker.web") / "static" / name).read_bytes()
    response: Response = view.bytes(body, content_type=STATIC[name])
    return response
