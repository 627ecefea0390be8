"""The read model's data: local answers for the partitions this worker owns, the fan-out that
merges every worker's, and operator actions queued on the saga log.

Depends on the worker only through ``Worker`` and ``LocalIndexes`` below (the composition in
``tracker.app`` passes ``tracker.stream.status.WorkerStatus`` and the local indexes).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Protocol

import aiohttp
import aiohttp.web
import faust
import orjson
from faust.types import TableT
from faust.web import Request, Response
from yarl import URL

from tracker.core.definitions import Catalog
from tracker.core.events import CONTROL, Event
from tracker.core.machine import visible_status
from tracker.core.state import SagaState
from tracker.core.summaries import Query, stats
from tracker.ops.metrics import Metrics
from tracker.ops.settings import Settings
from tracker.web.actions import MAX_BODY, BadAction, parse_action
from tracker.web.responses import error, ok
from tracker.web.routing import Router

log = logging.getLogger(__name__)
FANOUT_TIMEOUT = 5.0


class Worker(Protocol):
    """What the read model asks of this worker (``tracker.stream.status.WorkerStatus``)."""

    def active_partitions(self) -> list[int]: ...

    def recovering(self) -> bool: ...

    def ready(self) -> bool: ...

    def lag(self) -> dict[str, Any]: ...


class Summaries(Protocol):
    def summaries(self) -> Iterable[dict[str, Any]]: ...


class LocalIndexes(Protocol):
    """The summaries index of each partition this worker owns (``tracker.stream.indexes``)."""

    async def refresh(self, partitions: Iterable[int]) -> None: ...

    def cached(self, partition: int) -> Summaries | None: ...


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


class Api:
    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        catalog: Catalog,
        sagas: TableT,
        indexes: LocalIndexes,
        metrics: Metrics,
        worker: Worker,
        saga_log: faust.TopicT,
        state: Callable[[bytes], bytes | None] | None = None,
    ) -> None:
        """``state``: a saga's newest state row, the row cache first (``StateCache.get``);
        the table's by default."""
        self.app, self.settings, self.catalog, self.indexes = app, settings, catalog, indexes
        self.state = state or sagas.get
        self.metrics, self.worker, self.saga_log = metrics, worker, saga_log
        self.router = Router(app, sagas, settings.partitions)

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
        active = self.worker.active_partitions()
        if not self.worker.recovering():  # a rebuild during recovery would index half a partition
            await self.indexes.refresh(active)
        # Taken after the last await: an index closed by a rebalance meanwhile is not read.
        indexes = [i for i in map(self.indexes.cached, active) if i is not None]
        return (row for index in indexes for row in index.summaries())

    async def local_page(self, query: Query) -> list[dict[str, Any]]:
        return query.select(await self.local_rows(), time.time())

    async def local_stats(self) -> dict[str, Any]:
        return {**stats(await self.local_rows(), time.time()), "lag": self.lag()}

    def lag(self) -> dict[str, Any]:
        return self.worker.lag()

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
        declared = request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            return error(web, 413, "payload_too_large", f"an action's body is at most {MAX_BODY} bytes", parameter="body")
        try:
            # aiohttp stops reading past its client_max_size (MAX_BODY, set in tracker.app) and raises.
            raw = await request.read()
        except aiohttp.web.HTTPRequestEntityTooLarge:
            return error(web, 413, "payload_too_large", f"an action's body is at most {MAX_BODY} bytes", parameter="body")
        try:
            details, key = parse_action(raw, request.headers.get("Idempotency-Key"))
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
