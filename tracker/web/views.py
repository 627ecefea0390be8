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

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from importlib import resources
from typing import Any

import aiohttp
import aiohttp.web
import faust
import orjson
from aiokafka.partitioner import DefaultPartitioner
from faust.exceptions import SameNode
from faust.types import TP, TableT
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from tables import Tables
from tracker.core.definitions import Catalog
from tracker.core.events import ACTIONS, CONTROL, Event
from tracker.core.machine import visible_status
from tracker.core.state import SagaState
from tracker.core.summaries import BadQuery, Query, merge_stats, stats
from tracker.generations.registry import Generations
from tracker.ops.metrics import Metrics
from tracker.ops.settings import Settings
from tracker.stream.indexes import Indexes
from tracker.stream.sweeper import Sweeper
from tracker.web.openapi import document as openapi_document

log = logging.getLogger(__name__)

STATIC = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html"}
FANOUT_TIMEOUT = 5.0


def saga_view(catalog: Catalog, state: SagaState) -> dict[str, Any]:
    """The public JSON of one saga: its state plus the user-visible status and step names."""
    out = state.to_dict()
    definition = catalog.definition(state.saga_type, state.version)
    out["current_step"] = None
    if definition is not None:
        out["visible_status"] = visible_status(definition, state)
        for spec, step in zip(definition.steps, out["steps"], strict=False):
            step["name"] = spec.name
            step["compensation"] = spec.compensation.emit if spec.compensation else None
        if state.current is not None:
            out["current_step"] = definition.steps[state.current].name
            pending = definition.steps[state.current]
            out["awaiting"] = {
                "step": pending.name,
                "events": list(pending.completed_by),
                "deadline": state.steps[state.current].due,
            }
    return out


def error(web: Any, status: int, code: str, message: str, **extra: Any) -> Response:
    return web.bytes(orjson.dumps({"error": code, "message": message, **extra}), content_type="application/json", status=status)


def ok(web: Any, body: Any, status: int = 200) -> Response:
    return web.bytes(orjson.dumps(body), content_type="application/json", status=status)


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
        url = assignor._tps_url.get(tp)
        return str(url) if url is not None else None

    def peers(self) -> list[str]:
        """Every worker's URL (this one included), from the shared assignment."""
        assignor: Any = self.app.assignor
        urls = {str(u) for u in assignor._tps_url.values()}
        urls.add(str(self.app.conf.canonical_url))
        return sorted(urls)

    def is_self(self, url: str) -> bool:
        mine = URL(str(self.app.conf.canonical_url))
        other = URL(url)
        return (other.host, other.port) == (mine.host, mine.port)

    async def route(self, web: View, request: Request, key: str, local: Callable[[], Awaitable[Response]]) -> Response:
        url = self.owner(key)
        if url is None:
            return error(web, 503, "unavailable", "the saga's partition has no owner yet (rebalancing)")
        try:
            return await self.app.router._route_req(URL(url), web.web, request)  # type: ignore[attr-defined]
        except SameNode:
            return await local()
        except (TimeoutError, aiohttp.ClientError) as exc:
            return error(web, 503, "unavailable", f"the owning worker did not answer: {type(exc).__name__}")


class BadAction(ValueError):
    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter, self.message = parameter, message


def parse_action(raw: bytes, idempotency_key: str | None) -> tuple[dict[str, Any], str]:
    """An action request body -> (the control record's action, its idempotency key);
    raises ``BadAction`` naming the parameter."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadAction("body", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadAction("body", "the body must be a JSON object")
    action = body.get("action")
    if not isinstance(action, str) or action not in ACTIONS:
        raise BadAction("action", f"action must be one of {', '.join(ACTIONS)}")
    actor, reason = body.get("actor"), body.get("reason", "")
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 200:
        raise BadAction("actor", "actor (who acts) is required, at most 200 characters")
    if not isinstance(reason, str) or len(reason) > 2000:
        raise BadAction("reason", "reason must be text of at most 2000 characters")
    if action in ("resolve", "force_compensation") and not reason.strip():
        raise BadAction("reason", f"{action} needs a reason")
    details: dict[str, Any] = {"action": action, "actor": actor.strip(), "reason": reason}
    if action == "extend_deadline":
        seconds = body.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 30 * 86400:
            raise BadAction("seconds", "seconds must be a number between 0 and 30 days")
        details["seconds"] = seconds
    key = idempotency_key or body.get("id") or uuid.uuid4().hex
    if not isinstance(key, str) or not 0 < len(key) <= 200:
        raise BadAction("id", "the idempotency key must be 1 to 200 characters")
    return details, key


class Api:
    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        catalog: Catalog,
        tables: Tables,
        indexes: Indexes,
        metrics: Metrics,
        sweeper: Sweeper,
        saga_log: faust.TopicT,
        state: Callable[[bytes], bytes | None] | None = None,
    ) -> None:
        """``state``: a saga's newest state row, the row cache first (``Changelog.get``);
        the table's by default."""
        self.app, self.settings, self.catalog, self.tables, self.indexes = app, settings, catalog, tables, indexes
        self.state = state or tables.sagas.get
        self.metrics, self.sweeper, self.saga_log = metrics, sweeper, saga_log
        self.router = Router(app, tables.sagas, settings.partitions)

    # --- auth --------------------------------------------------------------------------------

    @staticmethod
    def _bearer(request: Request) -> bytes:
        header = request.headers.get("Authorization", "")
        return header[7:].strip().encode() if header[:7].lower() == "bearer " else b""

    def _matches(self, given: bytes, *tokens: str) -> bool:
        # Constant time: compare with every configured token, whatever matched before.
        results = [hmac.compare_digest(given, t.encode()) for t in tokens if t]
        return any(results)

    def read_denied(self, web: Any, request: Request) -> Response | None:
        if not self.settings.read_token:
            return None
        if self._matches(self._bearer(request), self.settings.read_token, self.settings.action_token):
            return None
        return error(web, 401, "unauthorized", "this endpoint needs 'Authorization: Bearer <read token>'")

    # --- local data --------------------------------------------------------------------------

    def local_saga(self, saga_id: str) -> dict[str, Any] | None:
        raw = self.state(saga_id.encode())
        return None if raw is None else saga_view(self.catalog, SagaState.from_dict(orjson.loads(raw)))

    async def local_rows(self) -> Iterator[dict[str, Any]]:
        """The summary rows of the partitions active here (indexed first if they just moved
        here), streamed: list and stats queries make one pass and keep a page or counts."""
        active = self.sweeper.active_partitions()
        if not self.sweeper.recovering():  # a rebuild during recovery would index half a partition
            await self.indexes.refresh(active)
        # Taken after the last await: an index closed by a rebalance meanwhile is not read.
        indexes = [i for i in map(self.indexes.cached, active) if i is not None]
        return (row for index in indexes for row in index.summaries())

    async def local_page(self, query: Query) -> list[dict[str, Any]]:
        return query.select(await self.local_rows(), time.time())

    async def local_stats(self) -> dict[str, Any]:
        return {**stats(await self.local_rows(), time.time()), "lag": self.lag()}

    def lag(self) -> dict[str, Any]:
        lags = self.sweeper.progress.lags
        return {
            "worker": str(self.app.conf.canonical_url),
            "behind": self.sweeper.behind,
            "catch_up": self.sweeper.progress.phase,
            "input_lag": {f"{tp.topic}/{tp.partition}": n for tp, n in sorted(lags.items())},
        }

    async def fan_out(
        self, request: Request, path: str, params: dict[str, str], local: Callable[[], Awaitable[Any]]
    ) -> tuple[list[Any], list[str]]:
        """Ask every worker; returns their answers and the workers that did not answer."""
        headers = {"Authorization": request.headers["Authorization"]} if "Authorization" in request.headers else {}

        async def ask(url: str) -> Any:
            if self.router.is_self(url):
                return await local()
            client: Any = self.app.http_client
            async with client.get(
                URL(url).with_path(path), params=params, headers=headers, timeout=aiohttp.ClientTimeout(total=FANOUT_TIMEOUT)
            ) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"{url} answered {resp.status}")
                return orjson.loads(await resp.read())

        peers = self.router.peers()
        answers = await asyncio.gather(*(ask(u) for u in peers), return_exceptions=True)
        good, missing = [], []
        for url, answer in zip(peers, answers, strict=True):
            if isinstance(answer, BaseException):
                log.warning("fan-out to %s failed: %r", url, answer)
                missing.append(url)
            else:
                good.append(answer)
        return good, missing

    # --- actions -----------------------------------------------------------------------------

    async def act(self, web: Any, request: Request, saga_id: str) -> Response:
        if not self.settings.action_token:
            return error(web, 403, "actions_disabled", "operator actions are disabled: set SAGA_TRACKER_ACTION_TOKEN")
        if not self._matches(self._bearer(request), self.settings.action_token):
            return error(web, 401, "unauthorized", "actions need 'Authorization: Bearer <action token>'")
        try:
            details, key = parse_action(await request.read(), request.headers.get("Idempotency-Key"))
        except BadAction as exc:
            return error(web, 400, "bad_request", exc.message, parameter=exc.parameter)
        try:
            saga = await self.find(saga_id, request)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return error(web, 503, "unavailable", f"the owning worker did not answer: {type(exc).__name__}")
        if saga is None:
            return error(web, 404, "not_found", f"no saga with id {saga_id!r}")
        event = Event(
            saga_id=saga_id,
            saga_type=saga["saga_type"],
            id=f"action:{key}",
            type="OperatorAction",
            time=time.time(),
            kind=CONTROL,
            version=saga["version"],
            action=details,
        )
        await self.saga_log.send(key=saga_id.encode(), value=orjson.dumps(event.to_dict()))
        log.info("operator action %s on %s by %s queued as %s", details["action"], saga_id, details["actor"], event.id)
        return ok(web, {"accepted": True, "id": event.id, "saga_id": saga_id, "action": details["action"]}, 202)

    async def find(self, saga_id: str, request: Request) -> dict[str, Any] | None:
        url = self.router.owner(saga_id)
        if url is None or self.router.is_self(url):
            return self.local_saga(saga_id)
        headers = {"Authorization": f"Bearer {self.settings.action_token}"}
        client: Any = self.app.http_client
        async with client.get(
            URL(url).with_path(f"/sagas/{saga_id}"), headers=headers, timeout=aiohttp.ClientTimeout(total=FANOUT_TIMEOUT)
        ) as resp:
            return orjson.loads(await resp.read()) if resp.status == 200 else None


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
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "bad_request")
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
        if peer is not None and request.path.startswith("/sagas") and FORWARDED not in request.headers:
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
            ready = api.sweeper.ready()
            body = {
                "ready": ready,
                "active_partitions": api.sweeper.active_partitions(),
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
            return self.bytes(generate_latest(api.metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

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

    @page("/sagas/stats")
    class Stats(View):
        @guarded
        async def get(self, request: Request) -> Response:
            if denied := read(self, request):
                return denied
            parts, missing = await api.fan_out(request, "/internal/stats", {}, api.local_stats)
            merged = merge_stats(parts)
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
