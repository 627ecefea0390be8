"""Routing: which worker answers for a saga, and every worker's URL for fan-out queries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import faust
from faust.exceptions import SameNode
from faust.types import TP, TableT
from faust.web import Request, Response, View
from yarl import URL

from tracker.kafka import internals
from tracker.kafka.partitioner import partition_of
from tracker.web.responses import error


class Router:
    """Table routing: answer locally for owned keys, forward to the owner otherwise.

    faust's ``table_route`` asks the producer's metadata for the partition of a key, which
    it lacks until it wrote to the changelog (and the embedded broker sometimes drops);
    the partition is computed here with the producer's partitioner (``partition_of``, as for
    every saga-log record) and the owner's URL comes from the partition assignment, which all
    workers share.
    """

    def __init__(self, app: faust.App, table: TableT, partitions: int) -> None:
        self.app, self.changelog, self.partitions = app, str(table.changelog_topic.get_topic_name()), partitions

    def owner(self, key: str) -> str | None:
        tp = TP(self.changelog, partition_of(key, self.partitions))
        url = internals.worker_urls(self.app).get(tp)
        return str(url) if url is not None else None

    def peers(self) -> list[str]:
        """Every worker's URL (this one included), from the shared assignment."""
        urls = {str(u) for u in internals.worker_urls(self.app).values()}
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
            response: Response = await internals.route_request(self.app, URL(url), web, request)
            return response
        except SameNode:
            return await local()
        except (TimeoutError, aiohttp.ClientError) as exc:
            return error(web, 503, "unavailable", f"the owning worker did not answer: {type(exc).__name__}")
