"""Child.wait_async(): every backend, cancellation, several waiters, no thread per child."""

from __future__ import annotations

import asyncio
import threading

import pytest

import portclone
from portclone import Backend


def test_wait_async_returns_the_status(portclone_backend: Backend) -> None:
    async def main() -> list:  # type: ignore[type-arg]
        children = [portclone.clone(lambda code=code: code) for code in range(5)]
        children.append(portclone.spawn(["sh", "-c", "kill -TERM $$"]))
        return list(await asyncio.gather(*(c.wait_async() for c in children)))

    assert asyncio.run(main()) == [0, 1, 2, 3, 4, -15]


def test_cancelling_leaves_the_child_running_and_waitable(portclone_backend: Backend) -> None:
    async def main() -> tuple:  # type: ignore[type-arg]
        child = portclone.spawn(["sleep", "60"])
        waiter = asyncio.ensure_future(child.wait_async())
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        running = child.poll()
        child.kill()
        return running, await child.wait_async()

    assert asyncio.run(main()) == (None, -9)


def test_several_waiters_of_one_child_all_wake(portclone_backend: Backend) -> None:
    async def main() -> list:  # type: ignore[type-arg]
        child = portclone.spawn(["sleep", "0.2"])
        return list(await asyncio.gather(*(child.wait_async() for _ in range(3))))

    assert asyncio.run(main()) == [0, 0, 0]


@pytest.mark.requires("linux", "pidfd")
def test_many_children_need_no_thread() -> None:
    """Through the pidfd: 200 children at once, no thread started (an asyncio child
    watcher may start one per child); bench/bench_async.py measures 1,000."""

    async def main() -> int:
        children = [portclone.spawn(["sleep", "0.3"]) for _ in range(200)]
        waits = [asyncio.ensure_future(c.wait_async()) for c in children]
        most = threading.active_count()
        while not all(w.done() for w in waits):
            most = max(most, threading.active_count())
            await asyncio.sleep(0.01)
        assert [w.result() for w in waits] == [0] * 200
        return most

    before = threading.active_count()
    assert asyncio.run(main()) == before
