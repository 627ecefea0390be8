"""Run a tracker worker: the faust worker, with the embedded broker when no Kafka is configured."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from tables import SAGAS
from topics import names, owned_names
from tracker.app import build
from tracker.generations.upgrades import remove_retired_stores
from tracker.kafka.admin import batch_size_for, bootstrap_of, ensure_topics_sync, is_tansu
from tracker.kafka.broker import EmbeddedBroker
from tracker.kafka.internals import BoundedStopWorker
from tracker.loader import load_catalog
from tracker.ops import heap
from tracker.ops.settings import Settings
from tracker.stream.clean_stop import CleanStop
from tracker.stream.tracking import SendHooks

log = logging.getLogger(__name__)


def thread_ended(args: threading.ExceptHookArgs) -> None:
    """A thread of the worker's that ends with an error says so in one line (the trace at DEBUG).

    faust's consumer runs in a thread whose loop ends with a connection error when the broker is
    gone; Python's default hook printed its stack, which faust's log redirect split into dozens of
    WARNING lines. The worker's own watchdogs and its bounded stop say what it means."""
    name = args.thread.name if args.thread is not None else "?"
    log.error("thread %s ended: %r", name, args.exc_value)
    if args.exc_value is not None:
        log.debug("thread %s ended", name, exc_info=args.exc_value)


def fit_batches(settings: Settings, bootstrap: str) -> Settings:
    """The settings with producer batches that every topic this worker writes takes
    (``batch_size_for``)."""
    written = [*owned_names(settings), names.changelog(settings.group_id, SAGAS)]
    size = asyncio.run(batch_size_for(bootstrap, written, settings.producer_max_batch_size))
    return settings if size == settings.producer_max_batch_size else replace(settings, producer_max_batch_size=size)


def run(settings: Settings, *, hooks: SendHooks | None = None) -> None:
    """Run a worker until it is stopped. ``hooks``: the crash tests' fault injection only."""
    threading.excepthook = thread_ended
    catalog = load_catalog(list(settings.definitions) or None)
    for warning in catalog.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    with ExitStack() as stack:
        url = settings.broker
        if settings.embedded:
            broker = stack.enter_context(EmbeddedBroker())
            url = broker.url
            print(f"embedded broker (Tansu, memory only) at {broker.bootstrap}", file=sys.stderr)
            # The services' topics exist in a real deployment; the embedded broker starts empty.
            ensure_topics_sync(broker.bootstrap, catalog.topics, settings.partitions)
        elif is_tansu(bootstrap_of(url)):
            # `saga-tracker broker` (or any Tansu) behind a URL: the embedded broker's settings apply.
            settings = settings.on_tansu()
            log.warning(
                "the broker at %s is Tansu (the embedded broker): producer batches of %d byte(s), "
                "as its end offsets are wrong for batched records; Apache Kafka is not affected",
                bootstrap_of(url),
                settings.producer_max_batch_size,
            )
        # Read by the feed of every generation: it must exist with the saga log's partitions.
        ensure_topics_sync(bootstrap_of(url), [settings.decisions], settings.partitions, settings.replication_factor)
        settings = fit_batches(settings, bootstrap_of(url))
        tracker = build(settings, catalog, broker_url=url, hooks=hooks)
        remove_retired_stores(Path(tracker.app.conf.tabledir))
        clean = CleanStop(Path(tracker.app.conf.tabledir), tracker.tables.sagas.name)
        tracker.metrics.store_resets.inc(len(clean.begin()))  # before faust opens a store
        log.info("tracking %s on %s", ", ".join(d.key for d in catalog.definitions), bootstrap_of(url))
        # aiokafka logs every (re)assignment at INFO: the generations registry is read by a
        # short-lived consumer every few seconds, which would fill the log with tables.
        logging.getLogger("aiokafka.consumer.subscription_state").setLevel(logging.WARNING)
        worker = BoundedStopWorker(tracker.app, loglevel=settings.log_level.upper(), stop_timeout=settings.stop_timeout)
        # faust's startup spinner, at WARNING and above, sets the root logger to DEBUG and spins
        # on every record: each debug call in faust and aiokafka (one per send) then built a
        # record nobody shows, a tenth of the worker's CPU under load. Workers have no terminal.
        worker.spinner = None
        heap.tune(settings.gc_young_objects)  # last before the loop: the app built is start-up heap
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:  # mode's worker always leaves through sys.exit: 0 when its stop finished
            if exc.code in (0, None):
                clean.end(tracker.state.unconfirmed)
            raise
