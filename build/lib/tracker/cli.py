"""The ``saga-tracker`` command: worker, broker, validate, demo."""

from __future__ import annotations

import argparse
import sys
import time

from tracker.errors import TrackerError


def _validate(files: list[str]) -> int:
    from tracker.definitions import Catalog
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


def _broker(port: int | None) -> int:
    from tracker.broker import EmbeddedBroker

    with EmbeddedBroker(port) as broker:
        print(f"embedded broker listening: {broker.url}  (Ctrl-C stops it; memory only)", flush=True)
        try:
            while broker.process is not None and broker.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


def main(argv: list[str] | None = None) -> int:
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
    args = parser.parse_args(argv)
    try:
        if args.command == "validate":
            return _validate(args.files)
        if args.command == "broker":
            return _broker(args.port)
        from tracker.settings import Settings

        settings = Settings.from_env()
        if args.command == "worker":
            from tracker.worker import run

            run(settings)
            return 0
        if args.command == "services":
            from tracker.demo import run_services

            return run_services(settings, sagas=args.sagas, rate=args.rate, seed=args.seed)
        from tracker.demo import run_demo

        return run_demo(settings, sagas=args.sagas, rate=args.rate, seed=args.seed, exit_when_done=args.exit_when_done)
    except TrackerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
