"""Waiting for something that must happen: polling with a deadline that only bounds a failure
(a wait that ends in time asserts nothing)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

POLL_SECONDS = 0.05
# The default bound of a wait for something that must happen. Generous: on a loaded machine
# slowness must not turn into a failure, and a wait that ends in time asserts nothing.
WAIT_SECONDS = 60.0

_T = TypeVar("_T")


def wait_for(predicate: Callable[[], _T | None], timeout: float, what: str) -> _T:
    """Poll `predicate` every 0.05 s until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL_SECONDS)


async def wait_for_async(predicate: Callable[[], _T | None], within: float, what: str) -> _T:
    """wait_for, yielding to the event loop between polls (NATS keeps reading)."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(POLL_SECONDS)


async def wait_for_awaitable(
    predicate: Callable[[], Awaitable[_T | None]], within: float, what: str
) -> _T:
    deadline = time.monotonic() + within
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}: {value!r}")
        await asyncio.sleep(POLL_SECONDS)
