"""What a launcher started, kept in its state folder, so that the next one can clean it up.

A running launcher holds an exclusive lock on `<state dir>/stack.lock`; the kernel drops the
lock when the launcher dies, however it dies, so "the lock is free" means "no launcher is
using this folder". `<state dir>/processes.json` lists every child with its start time: a pid
alone could have been reused by an unrelated program since, the pair cannot.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import psutil

LOCK_FILE = "stack.lock"
LEDGER_FILE = "processes.json"
# psutil derives start times from clock ticks (10 ms); the same process always gives the same.
_SAME_START = 0.05


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    started: float
    # How to stop it gently (postgres: SIGINT, its fast shutdown; the rest: SIGTERM).
    stop_signal: int = int(signal.SIGTERM)

    @classmethod
    def of(cls, name: str, pid: int, stop_signal: int = int(signal.SIGTERM)) -> ProcessRecord:
        return cls(name, pid, psutil.Process(pid).create_time(), stop_signal)

    def process(self) -> psutil.Process | None:
        """The live process this record names, or None (exited, a zombie, or a reused pid)."""
        try:
            process = psutil.Process(self.pid)
            if abs(process.create_time() - self.started) > _SAME_START:
                return None
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.NoSuchProcess:
            return None
        return process


class StateFolderBusy(RuntimeError):
    """Another live launcher holds the state folder."""


class Ledger:
    """The lock and the process list of one state folder."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LEDGER_FILE
        self._lock: IO[bytes] | None = None
        self._records: list[ProcessRecord] = []
        self._launcher: ProcessRecord | None = None
        self._wrote = False

    @property
    def held(self) -> bool:
        return self._lock is not None

    def acquire(self) -> None:
        """Take the folder's lock, or raise StateFolderBusy naming the launcher that has it."""
        lock = (self.state_dir / LOCK_FILE).open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            owner = self.launcher()
            who = "another launcher" if owner is None else f"launcher pid {owner.pid}"
            raise StateFolderBusy(
                f"the state folder {self.state_dir} is in use by {who} (a `make run` still "
                "running): stop it first (Ctrl-C in its terminal, or `make stop`), or give this "
                "one its own folder with STATE_DIR=<folder>"
            ) from None
        self._lock = lock
        self._launcher = ProcessRecord.of("launcher", os.getpid())

    def release(self) -> None:
        """Forget the processes (all stopped) and drop the lock."""
        if self._lock is None:
            return
        self._records = []
        # An earlier launcher's list stays when this one never wrote its own: it failed while
        # cleaning up, and the next start must still know what is left.
        if self._wrote:
            self.path.unlink(missing_ok=True)
            self._wrote = False
        self._lock.close()
        self._lock = None

    def launcher(self) -> ProcessRecord | None:
        """The launcher recorded in the file, if it is still running."""
        records = self._read("launcher")
        return next((r for r in records if r.process() is not None), None)

    def leftovers(self) -> list[ProcessRecord]:
        """Recorded children that still run (only meaningful while holding the lock)."""
        return [record for record in self._read("processes") if record.process() is not None]

    def save(self) -> None:
        """Write the list as it is now (this launcher, no children yet after a start), so that
        `make stop` can find the launcher while it is still starting."""
        self._write()

    def add(self, record: ProcessRecord) -> None:
        self._records.append(record)
        self._write()

    def remove(self, pid: int) -> None:
        self._records = [r for r in self._records if r.pid != pid]
        self._write()

    def _read(self, key: str) -> list[ProcessRecord]:
        try:
            entries = json.loads(self.path.read_text())[key]
            if isinstance(entries, dict):
                entries = [entries]
            return [ProcessRecord(**entry) for entry in entries]
        except (OSError, ValueError, LookupError, TypeError):
            return []  # no file, or one this code did not write: nothing to go on

    def _write(self) -> None:
        if self._lock is None or self._launcher is None:
            return
        data = {
            "launcher": asdict(self._launcher),
            "processes": [asdict(record) for record in self._records],
        }
        # Written whole then renamed: a launcher killed mid-write leaves the old list, not half.
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=1))
        temporary.replace(self.path)
        self._wrote = True


def stop_all(records: Iterable[ProcessRecord], grace: float) -> list[ProcessRecord]:
    """Stop the processes gently, SIGKILL what still runs after `grace` seconds, and return
    what survived even that (not ours to kill: another user's, say)."""
    running = [record for record in records if record.process() is not None]
    for record in running:
        _signal(record, record.stop_signal)
    left = _wait_gone(running, grace)
    for record in left:
        _signal(record, signal.SIGKILL)
    return _wait_gone(left, 5.0)


def _signal(record: ProcessRecord, signum: int) -> None:
    process = record.process()
    if process is not None:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signum)


def _wait_gone(records: list[ProcessRecord], timeout: float) -> list[ProcessRecord]:
    deadline = time.monotonic() + timeout
    while True:
        left = [record for record in records if record.process() is not None]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)
