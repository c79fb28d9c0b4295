"""How a pass shares its claims between the queues with due work."""

from __future__ import annotations

import pytest

from services.dispatcher.scheduler import claim_share
from services.dispatcher.settings import DispatcherSettings


@pytest.mark.parametrize(
    ("due_queues", "share"),
    [(0, 1000), (1, 1000), (2, 500), (3, 333), (5, 200), (6, 200), (1000, 200)],
)
def test_a_pass_is_shared_equally_with_a_floor_per_queue(due_queues: int, share: int) -> None:
    settings = DispatcherSettings.model_construct(claim_pass_size=1000, claim_batch=200)
    assert claim_share(settings, due_queues) == share


def test_the_floor_wins_over_a_small_pass() -> None:
    settings = DispatcherSettings.model_construct(claim_pass_size=100, claim_batch=200)
    assert claim_share(settings, 1) == 200
