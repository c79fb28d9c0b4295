"""`make stop`: stop the `make run` of this state folder, or what a killed one left running.

A running launcher gets SIGTERM and stops its children in order, as on Ctrl-C; without one,
the processes its ledger lists (and a PostgreSQL still serving the folder) are stopped here.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

from deploy.local.ledger import Ledger, StateFolderBusy
from deploy.local.stack import StackError, StackSettings, clean_up_leftovers

log = logging.getLogger("stack")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = StackSettings()
    if not settings.state_dir.is_dir():
        log.info("nothing to stop: %s does not exist", settings.state_dir)
        return 0
    ledger = Ledger(settings.state_dir)
    deadline = time.monotonic() + 60
    asked: int | None = None
    while True:
        try:
            ledger.acquire()
            break
        except StateFolderBusy:
            launcher = ledger.launcher()
            if launcher is not None and asked != launcher.pid:
                log.info("stopping make run (launcher pid %d)", launcher.pid)
                os.kill(launcher.pid, signal.SIGTERM)
                asked = launcher.pid
            if time.monotonic() > deadline:
                log.error("the launcher of %s did not stop within 60 s", settings.state_dir)
                return 1
            time.sleep(0.1)
    try:
        lines = clean_up_leftovers(ledger, settings)
    except StackError as err:
        log.error("%s", err)
        return 1
    finally:
        ledger.release()
    for line in lines:
        log.info("%s", line)
    if asked is None and not lines:
        log.info("nothing to stop in %s", settings.state_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
