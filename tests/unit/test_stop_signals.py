"""A stop signal during a command's coroutine: cancelled and awaited, then ``KeyboardInterrupt``."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
from collections.abc import Iterator

import pytest

from tracker.ops.processes import run, stopping_on


@pytest.fixture
def stops() -> Iterator[None]:
    with stopping_on():
        yield


def test_a_stop_cancels_the_coroutine_and_lets_its_finally_await(stops: None) -> None:
    done: list[str] = []

    async def main() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.Event().wait()  # forever, unless cancelled
        finally:
            await asyncio.sleep(0)  # a clean-up that awaits, as stopping the demo's services does
            done.append("cleaned up")

    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        run(main())
    assert done == ["cleaned up"]


class _SignalWhileBuildingTheLoop(asyncio.DefaultEventLoopPolicy):
    """The CI failure: SIGTERM landed while ``asyncio.run`` was building its loop."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        os.kill(os.getpid(), signal.SIGTERM)  # its handler runs here, before the loop exists
        return super().new_event_loop()


def test_a_stop_while_asyncio_sets_up_closes_the_coroutine_unstarted(stops: None) -> None:
    async def main() -> None:
        raise AssertionError("must not start after a stop")

    coroutine = main()
    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_SignalWhileBuildingTheLoop())
    try:
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            run(coroutine)
    finally:
        asyncio.set_event_loop_policy(previous)
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED  # closed, so no "never awaited"


def test_a_coroutine_that_swallows_the_cancel_still_stops_the_command(stops: None) -> None:
    async def main() -> str:
        os.kill(os.getpid(), signal.SIGINT)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "swallowed"
        return "not cancelled"

    with pytest.raises(KeyboardInterrupt, match="SIGINT"):
        run(main())


def test_without_a_stop_run_returns_the_result_and_outside_run_a_stop_raises_at_once(stops: None) -> None:
    async def main() -> int:
        await asyncio.sleep(0)
        return 7

    assert run(main()) == 7
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        os.kill(os.getpid(), signal.SIGTERM)
