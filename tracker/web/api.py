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

from tables import rows
from tracker.core.conformance import Conformance
from tracker.core.definitions import Catalog
from tracker.core.events import CONTROL, Event
from tracker.core.machine import visible_status
from tracker.core.state import SagaState
from tracker.core.summaries import BadQuery, Query
from tracker.kafka.partitioner import partition_of
from tracker.ops.metrics import Metrics
from tracker.ops.settings import Settings
from tracker.web.actions import MAX_BODY, BadAction, parse_action
from tracker.web.batches import RESUME_AFTER, Batches, batch_id, control_id, manifest, outcome, report
from tracker.web.responses import error, ok
from tracker.web.routing import Router

log = logging.getLogger(__name__)
FANOUT_TIMEOUT = 5.0
YIELD_EVERY = 500  # sagas decoded between two turns of the event loop (a batch holds up to 10,000)


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

    def stats(self, partitions: Iterable[int], now: float) -> dict[str, Any]: ...


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
        batches: Batches,
        conformance: Conformance,
        state: Callable[[bytes], bytes | None] | None = None,
    ) -> None:
        """``state``: a saga's newest state row, the row cache first (``StateCache.get``);
        the table's by default."""
        self.app, self.settings, self.catalog, self.indexes = app, settings, catalog, indexes
        self.state = state or sagas.get
        self.metrics, self.worker, self.saga_log, self.batches = metrics, worker, saga_log, batches
        self.conformance = conformance
        self.router = Router(app, sagas, settings.partitions)
        self._queueing: set[asyncio.Task[None]] = set()  # batches being queued (kept from the collector)

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
        return None if raw is None else saga_view(self.catalog, rows.decode(raw))

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
        active = self.worker.active_partitions()
        if not self.worker.recovering():
            await self.indexes.refresh(active)
        figures = self.indexes.stats(active, time.time())
        return {**figures, "conformance": self.conformance.figures(), "lag": self.lag()}

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

    async def action_request(self, web: Any, request: Request) -> tuple[dict[str, Any], str, bytes] | Response:
        """An action request's (action, idempotency key, raw body), or the refusal: actions off,
        a wrong token, a body too large or not an action."""
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
        return details, key, raw

    async def control(self, saga_id: str, saga_type: str, version: str, event_id: str, details: dict[str, Any]) -> None:
        """Queue one control record on the saga log (applied by the saga's writer, in order)."""
        event = Event(
            saga_id=saga_id,
            saga_type=saga_type,
            id=event_id,
            type="OperatorAction",
            time=time.time(),
            kind=CONTROL,
            version=version,
            action=details,
        )
        await self.saga_log.send(key=saga_id.encode(), value=orjson.dumps(event.to_dict()))

    async def act(self, web: Any, request: Request, saga_id: str) -> Response:
        asked = await self.action_request(web, request)
        if not isinstance(asked, tuple):
            return asked
        details, key, _ = asked
        try:
            saga = await self.find(saga_id, request)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return error(web, 503, "unavailable", f"the owning worker did not answer: {type(exc).__name__}")
        if saga is None:
            return error(web, 404, "not_found", f"no saga with id {saga_id!r}")
        event_id = f"action:{key}"
        await self.control(saga_id, saga["saga_type"], saga["version"], event_id, details)
        log.info("operator action %s on %s by %s queued as %s", details["action"], saga_id, details["actor"], event_id)
        return ok(web, {"accepted": True, "id": event_id, "saga_id": saga_id, "action": details["action"]}, 202)

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

    # --- batch actions (see ``batches``) -------------------------------------------------------

    async def local_match(self, query: Query, cap: int) -> dict[str, Any]:
        """How many sagas here match, and the first ``cap`` of them (id, type, version)."""
        count, now = 0, time.time()
        sagas: list[dict[str, Any]] = []
        for row in await self.local_rows():
            if query.matches(row, now):
                count += 1
                if len(sagas) < cap:
                    sagas.append({"saga_id": row["saga_id"], "saga_type": row["saga_type"], "version": row["version"]})
        return {"count": count, "sagas": sagas}

    def mine(self, found: dict[str, Any]) -> list[list[str]]:
        """The sagas of a batch whose partition is active here."""
        active = set(self.worker.active_partitions())
        return [s for s in found["sagas"] if partition_of(s[0], self.settings.partitions) in active]

    async def local_batch(self, found: dict[str, Any]) -> dict[str, Any]:
        """What became of each saga of a batch that this worker owns (each one's state read and
        decoded: the event loop gets a turn every ``YIELD_EVERY`` sagas)."""
        out: dict[str, Any] = {"applied": [], "rejected": [], "pending": []}
        for n, (saga_id, _, _) in enumerate(self.mine(found)):
            if n and n % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            raw = self.state(saga_id.encode())
            kind, why = outcome(None if raw is None else rows.data(raw), control_id(found["batch_id"], saga_id))
            if kind == "rejected":
                out["rejected"].append({"saga_id": saga_id, "reason": why})
            else:
                out[kind].append(saga_id)
        return out

    async def act_batch(self, web: Any, request: Request) -> Response:
        asked = await self.action_request(web, request)
        if not isinstance(asked, tuple):
            return asked
        details, key, raw = asked
        dry_run = orjson.loads(raw).get("dry_run", False)
        if not isinstance(dry_run, bool):
            return error(web, 400, "bad_request", "dry_run must be true or false", parameter="dry_run")
        try:
            query = Query.parse(dict(request.query), self.catalog)
        except BadQuery as exc:
            return error(web, 400, "bad_request", exc.message, parameter=exc.parameter)
        cap = self.settings.batch_max_sagas
        params = {k: v for k, v in query.to_params().items() if k not in ("sort", "order", "limit")}
        parts, missing = await self.fan_out(
            request, "/internal/match", {**params, "cap": str(cap + 1)}, lambda: self.local_match(query, cap + 1)
        )
        if missing:  # its sagas would be left out without anyone knowing
            return error(web, 503, "unavailable", f"workers did not answer, so the match is incomplete: {', '.join(missing)}")
        matched = sum(p["count"] for p in parts)
        if dry_run:
            return ok(web, {"dry_run": True, "matched": matched, "cap": cap, "filter": params})
        if matched > cap:
            return error(
                web,
                400,
                "too_many",
                f"the filter matches {matched} sagas, more than the {cap} one batch may act on "
                "(SAGA_TRACKER_BATCH_MAX_SAGAS): narrow it, or act in several batches",
                parameter="filter",
            )
        if matched == 0:
            return error(web, 400, "nothing_matches", "no saga matches this filter", parameter="filter")
        batch = batch_id(key)
        found = await self.batches.find(batch)
        if found is None:  # a retried request (same idempotency key) queues nothing twice
            found = manifest(batch, details, params, (s for p in parts for s in p["sagas"]))
            await self.batches.record(found)  # before any control record: the batch cannot be lost
            task = asyncio.get_running_loop().create_task(self.queue(found, found["sagas"]))
            self._queueing.add(task)
            task.add_done_callback(self._queueing.discard)
            log.info("batch %s: %s of %d sagas by %s queued", batch, details["action"], found["matched"], details["actor"])
        body = {"batch_id": batch, "matched": found["matched"], "action": found["action"]["action"]}
        return ok(web, body, 202)

    async def queue(self, found: dict[str, Any], sagas: list[list[str]]) -> None:
        """One control record per saga; the action says which batch it belongs to."""
        details = {**found["action"], "batch": found["batch_id"]}
        try:
            for saga_id, saga_type, version in sagas:
                await self.control(saga_id, saga_type, version, control_id(found["batch_id"], saga_id), details)
        except Exception:  # the rest is queued again by the sagas' owners (``resume``)
            log.exception("batch %s: queueing stopped; the pending sagas are queued again later", found["batch_id"])

    async def batch_status(self, web: Any, request: Request, batch: str) -> Response:
        found = await self.batches.find(batch)
        if found is None:
            return error(web, 404, "not_found", f"no batch with id {batch[:100]!r}")
        parts, missing = await self.fan_out(request, f"/internal/batches/{batch}", {}, lambda: self.local_batch(found))
        return ok(web, report(found, parts, missing))

    async def resume(self) -> None:
        """Queue again the control records of this worker's sagas still pending in a batch
        older than ``RESUME_AFTER`` (the worker that queued it may have died half-way); a
        batch with nothing pending here is not looked at again until partitions move."""
        if self.worker.recovering():
            return
        await self.batches.refresh()
        partitions = tuple(sorted(self.worker.active_partitions()))
        for found in self.batches.open(time.time()):
            key = (found["batch_id"], partitions)
            if key in self.batches.settled:
                continue
            pending = set((await self.local_batch(found))["pending"])
            if not pending:
                self.batches.settled.add(key)
                continue
            log.warning(
                "batch %s: %d sagas here still pending after %.0fs: queued again", found["batch_id"], len(pending), RESUME_AFTER
            )
            await self.queue(found, [s for s in found["sagas"] if s[0] in pending])
