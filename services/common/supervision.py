"""Workers of a service process: one that dies takes the process down with it."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


def exit_when_failed(task: asyncio.Task[None]) -> None:
    """Done-callback for a long-running worker task: if it failed, exit, so that the
    orchestrator restarts the process rather than leaving it healthy-looking but idle."""
    if not task.cancelled() and task.exception() is not None:
        log.error("worker died", exc_info=task.exception(), extra={"action": "crash"})
        raise SystemExit(1)
