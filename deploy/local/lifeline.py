"""Tie a child process's life to the launcher's: the kernel signals it when the launcher dies.

Linux's parent-death signal (prctl PR_SET_PDEATHSIG) is chosen over a supervisor process
because nothing has to survive to deliver it: a SIGKILL of the launcher (an OOM kill, a closed
terminal, a script's `kill -9`) cannot skip it, and there is no second process that could be
killed in its place. It covers direct children only, which is why the embedded PostgreSQL runs
as one (see embedded_postgres.py) instead of being detached by `pg_ctl`. Whatever it still
misses (another OS, a child started from a thread that ended) is found by the next start in the
state folder's ledger (ledger.py).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def parent_death_hook(signum: signal.Signals) -> Callable[[], None] | None:
    """A `preexec_fn` for subprocess.Popen that makes the child receive `signum` when this
    process dies; None where that cannot be promised (not Linux, not the main thread).

    The signal is sent when the *thread* that forked the child ends, so it is only set from
    the main thread, which ends with the process.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def hook() -> None:
        # Runs in the child between fork and exec, after Popen's user switch (a change of
        # credentials clears the setting, so it must come after). No imports, no locks here.
        prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
        if os.getppid() != parent:
            # The launcher died before the setting took effect: nobody would ever signal us.
            os.kill(os.getpid(), signal.SIGKILL)

    return hook
