"""The task life cycle rules (services/dispatcher/lifecycle.py): pure functions, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.dispatcher.lifecycle import (
    A_LEG_FAILURES,
    EVENT_AFTER,
    EVENT_BEFORE,
    EVENT_BEFORE_AGAIN,
    EVENT_SUCCESS,
    EVENT_URL_FIELDS,
    OUTCOME_COMMENTS,
    Redial,
    Resolution,
    describe,
    event_id,
    resolve_attempt,
    resolve_outside_window,
    resolve_undialed,
    start_event,
)

OUTCOMES = sorted(OUTCOME_COMMENTS)
# outside_window is no call at all (the dialer did not start it): resolve_outside_window.
FAILURES = [outcome for outcome in OUTCOMES if outcome not in ("connected", "outside_window")]


def resolve(
    outcome: str, *, attempt: int, try_count: int, pause: int = 60, comment: str = ""
) -> Resolution:
    return resolve_attempt(
        outcome=outcome,
        comment=comment,
        attempt=attempt,
        try_count=try_count,
        try_again_pause=pause,
    )


# --- resolve_attempt ----------------------------------------------------------------------------


@pytest.mark.parametrize(("attempt", "try_count"), [(1, 1), (1, 3), (2, 3), (3, 3), (50, 50)])
def test_connected_finishes_with_success_whatever_tries_are_left(
    attempt: int, try_count: int
) -> None:
    assert resolve("connected", attempt=attempt, try_count=try_count) == Resolution(
        status="finished",
        finish_result="success",
        finish_comment="A and B were connected",
        retry_after=None,
        events=(EVENT_SUCCESS, EVENT_AFTER),
    )


@pytest.mark.parametrize("outcome", FAILURES)
def test_failure_with_tries_left_is_delayed_by_the_pause(outcome: str) -> None:
    resolution = resolve(outcome, attempt=1, try_count=3, pause=90)

    assert resolution.status == "delayed"
    assert resolution.finish_result == ""
    assert resolution.retry_after == 90
    # Webhooks for a retry go out when it starts (before_again), not when it is planned.
    assert resolution.events == ()
    assert resolution.finish_comment == (
        f"{OUTCOME_COMMENTS[outcome]} (attempt 1 of 3); next attempt in 90 s"
    )


@pytest.mark.parametrize("outcome", FAILURES)
def test_failure_of_the_last_try_finishes_with_failed(outcome: str) -> None:
    resolution = resolve(outcome, attempt=3, try_count=3)

    assert resolution == Resolution(
        status="finished",
        finish_result="failed",
        finish_comment=f"{OUTCOME_COMMENTS[outcome]} (3 attempts made)",
        retry_after=None,
        events=(EVENT_AFTER,),
        caller_failed=outcome in A_LEG_FAILURES,
    )


def test_single_try_says_one_attempt() -> None:
    resolution = resolve("a_busy", attempt=1, try_count=1)

    assert (resolution.status, resolution.finish_result) == ("finished", "failed")
    assert resolution.finish_comment == "A was busy (1 attempt made)"


@pytest.mark.parametrize(
    ("attempt", "try_count", "status"),
    [(1, 2, "delayed"), (2, 2, "finished"), (49, 50, "delayed"), (50, 50, "finished")],
)
def test_the_last_try_is_the_try_count(attempt: int, try_count: int, status: str) -> None:
    assert resolve("b_busy", attempt=attempt, try_count=try_count).status == status


def test_an_attempt_beyond_the_try_count_still_finishes() -> None:
    """A late result (e.g. after a lost attempt) never schedules an attempt past try_count."""
    resolution = resolve("a_no_answer", attempt=4, try_count=3)

    assert (resolution.status, resolution.finish_result) == ("finished", "failed")
    assert resolution.retry_after is None


def test_zero_pause_retries_at_once() -> None:
    resolution = resolve("a_busy", attempt=1, try_count=2, pause=0)

    assert (resolution.status, resolution.retry_after) == ("delayed", 0)
    assert resolution.finish_comment.endswith("next attempt in 0 s")


def test_the_backend_comment_wins_over_the_generic_one() -> None:
    delayed = resolve("error", attempt=1, try_count=2, comment="SIP trunk refused: 403")
    failed = resolve("error", attempt=2, try_count=2, comment="SIP trunk refused: 403")

    assert delayed.finish_comment.startswith("SIP trunk refused: 403 (attempt 1 of 2)")
    assert failed.finish_comment == "SIP trunk refused: 403 (2 attempts made)"


def test_a_lost_attempt_is_a_failed_attempt() -> None:
    assert resolve("lost", attempt=1, try_count=2).status == "delayed"
    last = resolve("lost", attempt=2, try_count=2)
    assert (last.status, last.finish_result) == ("finished", "failed")
    assert "lost" in last.finish_comment


# --- describe, start_event, event ids -----------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "words"),
    [
        ("connected", "A and B were connected"),
        ("a_busy", "A was busy"),
        ("a_no_answer", "A did not answer"),
        ("a_rejected", "A rejected the call"),
        ("b_busy", "B was busy"),
        ("b_no_answer", "B did not answer"),
        ("b_rejected", "B rejected the call"),
        ("error", "the call could not be placed"),
    ],
)
def test_describe_puts_each_outcome_in_words(outcome: str, words: str) -> None:
    assert describe(outcome) == words


def test_describe_prefers_the_given_comment() -> None:
    assert describe("a_busy", "line 2 busy") == "line 2 busy"
    assert describe("a_busy", "") == "A was busy"


def test_describe_an_unknown_outcome_readably() -> None:
    assert describe("queue_deleted") == "queue deleted"


def test_outcome_comments_have_no_underscores() -> None:
    for outcome, words in OUTCOME_COMMENTS.items():
        assert words and "_" not in words, outcome


def test_start_event_is_before_then_before_again() -> None:
    assert start_event(1) == EVENT_BEFORE
    assert [start_event(n) for n in (2, 3, 50)] == [EVENT_BEFORE_AGAIN] * 3


def test_event_id_names_task_attempt_and_event() -> None:
    assert event_id(17, 2, EVENT_BEFORE_AGAIN) == "17:2:before_again"
    ids = {event_id(t, a, e) for t in (1, 12) for a in (1, 2, 21) for e in EVENT_URL_FIELDS}
    assert len(ids) == 2 * 3 * 4


def test_every_event_has_its_url_field() -> None:
    assert EVENT_URL_FIELDS == {
        "before": "url_before",
        "before_again": "url_before_again",
        "success": "url_success",
        "after": "url_after",
    }


def test_an_attempt_that_placed_no_call_is_dialed_again_without_spending_a_try() -> None:
    step = resolve_undialed(attempt=1, redials=0, max_redials=5)

    assert isinstance(step, Redial)


@pytest.mark.parametrize("attempt", [1, 3])
def test_after_the_last_redial_the_task_finishes_failed_saying_no_call_was_placed(
    attempt: int,
) -> None:
    step = resolve_undialed(attempt=attempt, redials=5, max_redials=5)

    assert isinstance(step, Resolution)
    assert (step.status, step.finish_result) == ("finished", "failed")
    assert step.finish_comment.startswith(f"not dialed: no call was placed for attempt {attempt}")
    assert "after 6 dial requests" in step.finish_comment
    assert "spent no try" in step.finish_comment
    assert step.events == ("after",)  # the task ends: its `after` webhook goes out


def test_with_no_redials_allowed_a_lost_request_ends_the_task_at_once() -> None:
    step = resolve_undialed(attempt=2, redials=0, max_redials=0)

    assert isinstance(step, Resolution)
    assert "after 1 dial request " in step.finish_comment


# --- retries of the A leg (try_count_caller) ----------------------------------------------------

A_LEG = ["a_busy", "a_no_answer", "a_rejected", "error", "lost"]
B_LEG = ["b_busy", "b_no_answer", "b_rejected"]


def resolve_caller(
    outcome: str,
    *,
    attempt: int,
    failures: int,
    try_count: int = 5,
    limit: int = 3,
    pause: int = 60,
    pause_caller: int = 7,
) -> Resolution:
    return resolve_attempt(
        outcome=outcome,
        comment="",
        attempt=attempt,
        try_count=try_count,
        try_again_pause=pause,
        try_count_caller=limit,
        try_again_pause_caller=pause_caller,
        caller_failures=failures,
    )


def test_every_failure_belongs_to_one_leg() -> None:
    assert sorted(A_LEG + B_LEG) == FAILURES


@pytest.mark.parametrize("outcome", FAILURES)
def test_off_is_the_first_revision_exactly(outcome: str) -> None:
    """try_count_caller 0: A-leg failures so far change nothing, and the pause and the
    comment are try_count's, as before the A-leg counter existed."""
    for failures in (0, 4, 49):
        off = resolve_caller(outcome, attempt=2, failures=failures, limit=0, pause_caller=7)
        assert off == Resolution(
            status="delayed",
            finish_result="",
            finish_comment=f"{OUTCOME_COMMENTS[outcome]} (attempt 2 of 5); next attempt in 60 s",
            retry_after=60,
            events=(),
            caller_failed=outcome in A_LEG,
        )
    last = resolve_caller(outcome, attempt=5, failures=4, limit=0)
    assert last.finish_comment == f"{OUTCOME_COMMENTS[outcome]} (5 attempts made)"


@pytest.mark.parametrize("outcome", A_LEG)
def test_an_a_leg_failure_counts_and_waits_the_callers_pause(outcome: str) -> None:
    resolution = resolve_caller(outcome, attempt=2, failures=1, pause=60, pause_caller=7)
    assert resolution == Resolution(
        status="delayed",
        finish_result="",
        finish_comment=(
            f"{OUTCOME_COMMENTS[outcome]} (attempt 2 of 5, try_count; A-leg try 2 of 3, "
            "try_count_caller); next attempt in 7 s (try_again_pause_caller)"
        ),
        retry_after=7,
        events=(),
        caller_failed=True,
    )


@pytest.mark.parametrize("outcome", A_LEG)
def test_the_last_a_leg_try_finishes_failed_whatever_try_count_says(outcome: str) -> None:
    resolution = resolve_caller(outcome, attempt=3, failures=2, try_count=50, limit=3)
    assert resolution == Resolution(
        status="finished",
        finish_result="failed",
        finish_comment=f"{OUTCOME_COMMENTS[outcome]} (3 of 3 A-leg tries, try_count_caller)",
        retry_after=None,
        events=(EVENT_AFTER,),
        caller_failed=True,
    )


def test_a_single_a_leg_try() -> None:
    resolution = resolve_caller("a_no_answer", attempt=1, failures=0, limit=1)
    assert (resolution.status, resolution.finish_result) == ("finished", "failed")
    assert resolution.finish_comment == "A did not answer (1 of 1 A-leg tries, try_count_caller)"


@pytest.mark.parametrize("outcome", B_LEG)
def test_a_b_leg_failure_keeps_the_a_leg_count_and_waits_try_again_pause(outcome: str) -> None:
    """A answered: no A-leg try is spent, even with a single one left."""
    resolution = resolve_caller(outcome, attempt=3, failures=2, limit=3, pause=60)
    assert resolution == Resolution(
        status="delayed",
        finish_result="",
        finish_comment=(
            f"{OUTCOME_COMMENTS[outcome]} (attempt 3 of 5, try_count); "
            "next attempt in 60 s (try_again_pause)"
        ),
        retry_after=60,
        events=(),
        caller_failed=False,
    )


def test_the_a_leg_count_goes_on_down_from_where_a_b_leg_failure_left_it() -> None:
    """a_busy, b_busy, a_busy, a_busy with 3 A-leg tries: the fourth attempt is the last."""
    failures = 0
    statuses = []
    for attempt, outcome in enumerate(["a_busy", "b_busy", "a_busy", "a_busy"], 1):
        resolution = resolve_caller(outcome, attempt=attempt, failures=failures, limit=3)
        failures += resolution.caller_failed
        statuses.append(resolution.status)
    assert statuses == ["delayed", "delayed", "delayed", "finished"]
    assert failures == 3
    assert resolution.finish_comment == "A was busy (3 of 3 A-leg tries, try_count_caller)"


@pytest.mark.parametrize("outcome", ["b_no_answer", "a_busy"])
def test_try_count_still_ends_the_task_and_is_named(outcome: str) -> None:
    resolution = resolve_caller(outcome, attempt=5, failures=1, try_count=5, limit=3)
    assert (resolution.status, resolution.finish_result) == ("finished", "failed")
    assert resolution.finish_comment == f"{OUTCOME_COMMENTS[outcome]} (5 attempts made, try_count)"
    assert resolution.caller_failed == (outcome in A_LEG)


def test_when_both_counters_run_out_together_the_a_leg_one_is_named() -> None:
    resolution = resolve_caller("a_busy", attempt=3, failures=2, try_count=3, limit=3)
    assert resolution.finish_comment == "A was busy (3 of 3 A-leg tries, try_count_caller)"


@pytest.mark.parametrize("limit", [0, 3])
def test_a_connected_call_spends_no_a_leg_try(limit: int) -> None:
    resolution = resolve_caller("connected", attempt=2, failures=2, limit=limit)
    assert (resolution.status, resolution.finish_result) == ("finished", "success")
    assert not resolution.caller_failed


def test_a_call_outside_its_window_gives_the_attempt_back_and_waits_at_the_closing() -> None:
    closed_at = datetime(2026, 12, 5, 18, tzinfo=UTC)
    resolution = resolve_outside_window(attempt=2, comment="", closed_at=closed_at)
    assert resolution == Resolution(
        "delayed_interval",
        "",
        "not dialed: the calling window had closed; attempt 2 spent no try and waits for "
        "the window to open",
        None,
        (),
        unspent=True,
        run_at=closed_at,
    )
    # No closing reported (a dialer that left it out): due as it was, the claim decides.
    assert resolve_outside_window(attempt=1, comment="", closed_at=None).run_at is None
