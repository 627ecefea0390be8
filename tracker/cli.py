"""The ``saga-tracker`` command: worker, broker, validate, demo, services, and the replay
commands (replay, promote, retire, generations)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from tracker.core.errors import TrackerError
from tracker.kafka import internals


def _validate(files: list[str]) -> int:
    from tracker.core.definitions import Catalog
    from tracker.loader import load_file

    failed = False
    everything = []
    for f in files:
        try:
            defs = load_file(f)
        except TrackerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
            continue
        everything.extend(defs)
        for d in defs:
            print(f"ok: {f}: saga {d.name!r} version {d.version}: {len(d.steps)} steps, topics {', '.join(d.topics)}")
            for w in d.warnings:
                print(f"warning: {f}: {w}", file=sys.stderr)
    if not failed:
        try:
            Catalog.build(everything, file=", ".join(files))
        except TrackerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


def _discover(args: argparse.Namespace) -> int:
    from tracker.discover import discover, text_report
    from tracker.kafka.admin import bootstrap_of
    from tracker.ops.settings import Settings

    settings = Settings.from_env()
    if settings.embedded:
        print("error: discover needs SAGA_TRACKER_BROKER (the demo prints its broker's address)", file=sys.stderr)
        return 2
    topics = [t.strip() for t in args.topics.split(",") if t.strip()]
    if not topics:
        print("error: --topics needs at least one topic", file=sys.stderr)
        return 2
    text, report = asyncio.run(
        discover(
            bootstrap_of(settings.broker),
            topics,
            correlation=args.correlation,
            from_time=args.from_time,
            max_records=args.max_records,
            max_instances=args.max_instances,
            max_bytes=settings.max_event_bytes,
            names=[n.strip() for n in (args.name or "").split(",") if n.strip()],
            margin=args.margin,
        )
    )
    if args.out:
        Path(args.out).write_text(text)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(text_report(report), file=sys.stderr)
        if not args.out:
            print(text, end="")
    if not text:
        print("error: no saga found: no field joins events of several types (try --correlation)", file=sys.stderr)
        return 1
    return 0


def _broker(port: int | None) -> int:
    from tracker.kafka.broker import EmbeddedBroker
    from tracker.ops.processes import stopping_on

    with contextlib.suppress(KeyboardInterrupt), stopping_on(), EmbeddedBroker(port) as broker:
        print(f"embedded broker listening: {broker.url}  (Ctrl-C or SIGTERM stops it; memory only)", flush=True)
        print(f"workers and tools: SAGA_TRACKER_BROKER={broker.url} SAGA_TRACKER_PRODUCER_MAX_BATCH_SIZE=1", flush=True)
        while broker.process is not None and broker.process.poll() is None:
            time.sleep(0.5)
    return 0


def _when(text: str) -> float:
    """Epoch seconds (or milliseconds) or an ISO 8601 time (UTC unless it says otherwise)."""
    from tracker.core.times import parse_time

    try:
        value: float | str = float(text)
    except ValueError:
        value = text.replace("Z", "+00:00")
    moment = parse_time(value)
    if moment is None:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (epoch seconds or ISO 8601)")
    return moment


def _replay(args: argparse.Namespace) -> int:
    from tracker.generations import registry as gens
    from tracker.generations import replay
    from tracker.kafka.admin import bootstrap_of
    from tracker.loader import load_catalog
    from tracker.ops.settings import Settings

    settings = Settings.from_env()
    if settings.embedded:
        print("error: replay needs SAGA_TRACKER_BROKER (the embedded broker keeps nothing)", file=sys.stderr)
        return 2
    bootstrap = bootstrap_of(settings.broker)
    registry = asyncio.run(gens.read_registry(bootstrap, settings.generations))
    if args.verify:
        return _verify(args, settings, registry)
    generation = args.generation or max({1, registry.active, *registry.builds}) + 1
    definitions = tuple(args.definitions) if args.definitions else settings.definitions
    shadow = args.shadow or (bool(args.definitions) and tuple(args.definitions) != settings.definitions)
    new = dataclasses.replace(settings, generation=generation, shadow=shadow, definitions=definitions)
    catalog = load_catalog(list(definitions) or None)
    report = asyncio.run(replay.feed(new, catalog, from_time=args.from_time))
    kind = "shadow generation" if shadow else "generation"
    print(f"{kind} {generation} fed into {new.saga_log}: {report.events} events, {report.decisions} decisions")
    print(f"  ignored {report.ignored}, dead-lettered {report.dead_lettered} (to {new.dead_letters})")
    if report.truncated:
        print(f"  partial sagas (their start is before the window): {len(report.partial)}")
    print(
        f"  next: start its workers with SAGA_TRACKER_GENERATION={generation}" + (" SAGA_TRACKER_SHADOW=true" if shadow else "")
    )
    if definitions != settings.definitions:
        print(f"        and SAGA_TRACKER_DEFINITIONS={','.join(definitions)}")
    print(f"        then: saga-tracker replay --verify --generation {generation}")
    return 0


def _verify(args: argparse.Namespace, settings: Any, registry: Any) -> int:
    from tracker.generations import verify
    from tracker.loader import load_catalog

    other = args.generation or max({1, registry.active, *registry.builds})
    base = args.against or registry.active
    build = registry.builds.get(other, {})
    base_catalog = load_catalog(list(registry.builds.get(base, {}).get("definitions") or settings.definitions) or None)
    other_catalog = load_catalog(list(build.get("definitions") or settings.definitions) or None)
    shadow = bool(build.get("shadow"))
    deadline = time.monotonic() + args.wait
    while True:
        behind = {n: asyncio.run(verify.caught_up(settings, n, cat)) for n, cat in ((base, base_catalog), (other, other_catalog))}
        if not any(behind.values()):
            break
        if time.monotonic() > deadline:
            print(f"error: not caught up after {args.wait:g}s: {behind}", file=sys.stderr)
            return 2
        time.sleep(1)
    while True:  # a table's changelog may trail its committed offsets by a moment
        result = asyncio.run(verify.compare(settings, base, other, base_catalog, other_catalog))
        if result.equal or shadow or time.monotonic() > deadline:
            break
        time.sleep(1)
    if args.json:
        import orjson

        print(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        _print_comparison(result, shadow)
    return 0 if result.equal or shadow else 1


def _print_comparison(r: Any, shadow: bool) -> None:
    print(f"generation {r.base} (promoted) vs {'shadow ' if shadow else ''}generation {r.other}")
    print(f"  digest {r.base}: {r.base_digest}")
    print(f"  digest {r.other}: {r.other_digest}")
    print("  equal" if r.equal else f"  {len(r.differing)} sagas differ")
    statuses = sorted(set(r.counts_before) | set(r.counts_after))
    print("  status counts: " + ", ".join(f"{s} {r.counts_before.get(s, 0)} -> {r.counts_after.get(s, 0)}" for s in statuses))
    if r.partial:
        print(f"  partial sagas in generation {r.other}: {r.partial}")
    for d in r.differing:
        a, b = d["base"] or {}, d["other"] or {}
        print(f"  {d['saga_id']}: {a.get('status')}/{a.get('current')} -> {b.get('status')}/{b.get('current')}")
        if not shadow:
            print(f"    base:  {a}\n    other: {b}")
    if r.would_emit:
        print(f"  compensations generation {r.other} would have emitted: {', '.join(r.would_emit)}")
        print(f"  of which never emitted live: {', '.join(r.new_compensations) or 'none'}")


def _promote(generation: int, force: bool) -> int:
    from tracker.core.errors import ReplayError
    from tracker.generations import registry as gens
    from tracker.generations import verify
    from tracker.kafka.admin import bootstrap_of
    from tracker.loader import load_catalog
    from tracker.ops.settings import Settings

    settings = Settings.from_env()
    bootstrap = bootstrap_of(settings.broker)
    registry = asyncio.run(gens.read_registry(bootstrap, settings.generations))
    build = registry.builds.get(generation)
    if generation != 1 and build is None:
        raise ReplayError(f"generation {generation} was never built (saga-tracker replay builds one)")
    if build is not None and build.get("shadow"):
        raise ReplayError(f"generation {generation} is a shadow run: build a generation without --shadow to switch")
    if build is not None and build.get("state") == "retired":
        raise ReplayError(f"generation {generation} was retired")
    catalog = load_catalog(list((build or {}).get("definitions") or settings.definitions) or None)
    behind = asyncio.run(verify.caught_up(settings, generation, catalog))
    if behind and not force:
        raise ReplayError(f"generation {generation} has not caught up: {behind} (--force promotes anyway)")
    previous = registry.active
    asyncio.run(
        gens.write(bootstrap, settings.generations, "active", {"generation": generation, "previous": previous, "at": time.time()})
    )
    print(f"generation {generation} promoted (was {previous}); roll back with: saga-tracker promote {previous}")
    return 0


def _retire(generation: int) -> int:
    from tracker.generations import retire
    from tracker.ops.settings import Settings

    removed = asyncio.run(retire.retire(Settings.from_env(), generation))
    print(f"generation {generation} retired; removed topics: {', '.join(removed) or 'none'}")
    return 0


def _cleanup(delete: bool) -> int:
    from tracker.generations.upgrades import retired_topics
    from tracker.kafka.admin import bootstrap_of
    from tracker.ops.settings import Settings

    settings = Settings.from_env()
    found = asyncio.run(retired_topics(bootstrap_of(settings.broker), settings.app_id, delete=delete))
    if not found:
        print("nothing to clean up")
    elif delete:
        print(f"deleted: {', '.join(found)}")
    else:
        print(f"no longer used (delete them with --delete once every worker runs this release): {', '.join(found)}")
    return 0


def _generations() -> int:
    from tracker.generations import registry as gens
    from tracker.kafka.admin import bootstrap_of
    from tracker.ops.settings import Settings

    settings = Settings.from_env()
    registry = asyncio.run(gens.read_registry(bootstrap_of(settings.broker), settings.generations))
    now = time.time()
    for n in sorted({1, registry.active, *registry.builds}):
        build = registry.builds.get(n, {})
        workers = [u for u, at in registry.workers.get(n, {}).items() if now - at < gens.FRESH]
        flags = ["promoted"] if n == registry.active else []
        if build.get("shadow"):
            flags.append("shadow")
        print(f"generation {n}: {' '.join(flags) or build.get('state', 'live')}; workers: {', '.join(workers) or 'none'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    internals.install_client_fixes()  # every command's Kafka clients, not only the worker's
    parser = argparse.ArgumentParser(prog="saga-tracker", description="Track choreographed sagas on Kafka.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="run a tracker worker (embedded broker when SAGA_TRACKER_BROKER is unset)")
    b = sub.add_parser("broker", help="run the embedded broker alone")
    b.add_argument("--port", type=int, default=None)
    v = sub.add_parser("validate", help="check saga definition files")
    v.add_argument("files", nargs="+")
    d = sub.add_parser("demo", help="embedded broker + worker + demo services producing traffic")
    d.add_argument("--sagas", type=int, default=40, help="how many sagas to start (default 40)")
    d.add_argument("--rate", type=float, default=4.0, help="sagas started per second")
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--exit-when-done", action="store_true", help="stop once every saga is terminal")
    sv = sub.add_parser("services", help="run the demo services and their traffic against SAGA_TRACKER_BROKER")
    sv.add_argument("--sagas", type=int, default=0, help="sagas to start (0: keep starting them)")
    sv.add_argument("--rate", type=float, default=2.0, help="sagas started per second")
    sv.add_argument("--seed", type=int, default=7)
    r = sub.add_parser("replay", help="rebuild state into a new generation from the input topics; --verify compares")
    r.add_argument("--generation", type=int, default=None, help="generation number (default: the next free one)")
    r.add_argument("--from-time", type=_when, default=None, help="start of the window (default: earliest retained)")
    r.add_argument("--definitions", nargs="+", default=None, help="other definitions: builds a shadow generation")
    r.add_argument("--shadow", action="store_true", help="never promotable; outputs go to <group>-shadow")
    r.add_argument("--verify", action="store_true", help="compare the generation with the promoted one")
    r.add_argument("--against", type=int, default=None, help="with --verify: the generation to compare with")
    r.add_argument("--wait", type=float, default=120.0, help="with --verify: seconds to wait for catch-up")
    r.add_argument("--json", action="store_true", help="with --verify: the report as JSON")
    pr = sub.add_parser("promote", help="make a generation the one that serves and acts")
    pr.add_argument("generation", type=int)
    pr.add_argument("--force", action="store_true", help="even if it has not caught up")
    rt = sub.add_parser("retire", help="delete a generation's own topics (not the promoted one)")
    rt.add_argument("generation", type=int)
    sub.add_parser("generations", help="list generations, the promoted one and their workers")
    dv = sub.add_parser("discover", help="draft saga definitions from the events on existing topics")
    dv.add_argument("--topics", required=True, help="comma-separated topics to read")
    dv.add_argument("--correlation", default=None, help="the correlation key (e.g. data.order_id); default: proposed")
    dv.add_argument("--from-time", type=_when, default=None, help="start of the window (default: earliest retained)")
    dv.add_argument("--max-records", type=int, default=100_000, help="records to read at most (default 100000)")
    dv.add_argument("--max-instances", type=int, default=200_000, help="instances kept at most (memory bound)")
    dv.add_argument("--name", default=None, help="saga names, comma-separated, in the order of their keys")
    dv.add_argument("--margin", type=float, default=1.5, help="timeout = observed p99 x margin (default 1.5)")
    dv.add_argument("--out", default=None, help="write the draft here (default: stdout)")
    dv.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    cl = sub.add_parser("cleanup", help="list the changelog topics of tables earlier releases had (--delete: delete them)")
    cl.add_argument("--delete", action="store_true", help="delete them (every worker must run this release)")
    args = parser.parse_args(argv)
    try:
        if args.command == "validate":
            return _validate(args.files)
        if args.command == "replay":
            return _replay(args)
        if args.command == "promote":
            return _promote(args.generation, args.force)
        if args.command == "retire":
            return _retire(args.generation)
        if args.command == "generations":
            return _generations()
        if args.command == "cleanup":
            return _cleanup(args.delete)
        if args.command == "discover":
            return _discover(args)
        if args.command == "broker":
            return _broker(args.port)
        from tracker.ops.settings import Settings

        settings = Settings.from_env()
        if args.command == "worker":
            from tracker.worker import run

            run(settings)
            return 0
        if args.command == "services":
            from tracker.demo.runner import run_services

            return run_services(settings, sagas=args.sagas, rate=args.rate, seed=args.seed)
        from tracker.demo.runner import run_demo

        return run_demo(settings, sagas=args.sagas, rate=args.rate, seed=args.seed, exit_when_done=args.exit_when_done)
    except TrackerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
