"""The short `make chaos`: a couple of thousand tasks while every kind of part is killed at
least once (api, a dispatcher, a dialer, the notifier, NATS; PostgreSQL crashed), then every
invariant of bench/chaos.py: all tasks finished, no (task, attempt) dialed twice, no queue
over its limit, every webhook delivered in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import KINDS, ChaosOptions, run
from tests.support.stacks import StateDirFactory


@pytest.mark.timeout(400)
def test_invariants_hold_while_parts_are_killed(make_state_dir: StateDirFactory) -> None:
    state_dir: Path = make_state_dir("chaos")
    figures = run(
        ChaosOptions(
            tasks=1500,
            duration=40.0,
            seed=7,
            down_seconds=(0.3, 1.5),
            between_seconds=(0.5, 2.0),
            quiescence_timeout=180.0,
            state_dir=state_dir,
        )
    )
    text = "\n".join(figures.lines)
    assert figures.ok, text
    assert all(figures.kills.get(kind, 0) >= 1 for kind in KINDS), figures.kills
