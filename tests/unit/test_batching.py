"""Coalescer: what is submitted during a write goes out together in the next one; a failed
write fails only its own batch."""

from __future__ import annotations

import asyncio
import gc

import pytest

from services.dialer.batching import Coalescer


async def test_items_submitted_during_a_write_go_out_together_next() -> None:
    writes: list[list[int]] = []
    first_write_started = asyncio.Event()
    release_first_write = asyncio.Event()

    async def write(items: list[int]) -> None:
        writes.append(items)
        if len(writes) == 1:
            first_write_started.set()
            await release_first_write.wait()

    batches = Coalescer(write, max_batch=3)
    runner = asyncio.create_task(batches.run())
    first = asyncio.create_task(batches.submit(0))
    await first_write_started.wait()
    later = [asyncio.create_task(batches.submit(i)) for i in range(1, 6)]
    await asyncio.sleep(0)  # let them queue up behind the write in progress
    release_first_write.set()
    await asyncio.gather(first, *later)
    runner.cancel()

    assert writes == [[0], [1, 2, 3], [4, 5]]


async def test_a_failed_write_fails_its_own_submitters_only() -> None:
    async def write(items: list[str]) -> None:
        if "bad" in items:
            raise RuntimeError("database down")

    batches = Coalescer(write, max_batch=10)
    runner = asyncio.create_task(batches.run())
    with pytest.raises(RuntimeError, match="database down"):
        await batches.submit("bad")
    await batches.submit("good")  # the writer goes on
    runner.cancel()


async def test_items_not_waited_for_are_written_in_order_and_a_failure_is_not_left_unread() -> None:
    writes: list[list[str]] = []
    failed = asyncio.Event()

    async def write(items: list[str]) -> None:
        writes.append(items)
        if "bad" in items:
            failed.set()
            raise RuntimeError("database down")

    unread: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unread.append(context))
    batches = Coalescer(write, max_batch=10)
    runner = asyncio.create_task(batches.run())
    batches.submit_nowait("bad")
    await failed.wait()
    await batches.submit("good")  # the writer goes on
    runner.cancel()
    gc.collect()  # an exception never read is reported when its future is collected

    assert writes == [["bad"], ["good"]]
    assert unread == []


async def test_drain_returns_once_everything_submitted_is_written_or_failed() -> None:
    writes: list[list[str]] = []
    release = asyncio.Event()

    async def write(items: list[str]) -> None:
        await release.wait()
        writes.append(items)
        if "bad" in items:
            raise RuntimeError("database down")

    batches = Coalescer(write, max_batch=2)
    runner = asyncio.create_task(batches.run())
    for item in ("a", "bad", "c"):
        batches.submit_nowait(item)
    drained = asyncio.create_task(batches.drain())
    await asyncio.sleep(0)
    assert not drained.done()  # nothing written yet
    release.set()
    await drained
    runner.cancel()

    assert writes == [["a", "bad"], ["c"]]
