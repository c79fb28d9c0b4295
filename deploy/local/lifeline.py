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

import shutil
import signal
import sys
import threading

# util-linux's setpriv sets the parent-death signal, then execs the command: the child stays
# our direct child (same pid), and nothing runs between fork and exec in this process. A
# `preexec_fn` would do the same from Python, but it makes subprocess fork() instead of
# vfork(), and fork() runs gRPC's atfork handlers, which deadlocked the launcher (its
# readiness probes use gRPC) now and then: a stack start hung in Popen.
SETPRIV = shutil.which("setpriv")


def with_lifeline(argv: list[str], signum: signal.Signals) -> list[str]:
    """`argv` wrapped so that the child receives `signum` when the thread that starts it
    ends; `argv` as it is where that cannot be promised (not Linux, no setpriv, not the
    main thread: the signal is sent when the *thread* that forked the child ends, so it is
    only set from the main thread, which ends with the process).

    setpriv sets it after Popen's user switch (a change of credentials clears the setting).
    A launcher killed between the fork and setpriv's prctl leaves the child unsignalled:
    the next start finds it in the ledger."""
    if not sys.platform.startswith("linux") or SETPRIV is None:
        return argv
    if threading.current_thread() is not threading.main_thread():
        return argv
    return [SETPRIV, f"--pdeathsig={signal.Signals(signum).name.removeprefix('SIG')}", "--", *argv]
