"""The `simulated` telephony backend (services/dialer/simulated.py), with phones that ring
and talk for a few milliseconds."""

from __future__ import annotations

import time

import pytest

from services.dialer.backend import CallPlan, CallReport, Leg
from services.dialer.simulated import DEFAULT_RULES, Rule, SimulatedBackend

RING = 0.01
TALK = 0.02
RULES = (
    Rule(pattern="*486", behaviour="busy", ring_seconds=RING),
    Rule(pattern="*480", behaviour="no_answer"),
    Rule(pattern="*603", behaviour="reject", ring_seconds=RING),
    Rule(pattern="*777", behaviour="answer", ring_seconds=RING * 3, talk_seconds=TALK),
    Rule(pattern="*900", behaviour="answer", ring_seconds=RING, talk_seconds=TALK * 3),
    Rule(pattern="*", behaviour="answer", ring_seconds=RING, talk_seconds=TALK),
)
RING_TIMEOUT = 0.03
ANSWER = "+100"  # rings 0.01 s, talks 0.02 s
SLOW_ANSWER = "+100777"  # rings 0.03 s, talks 0.02 s
LONG_TALK = "+100900"  # rings 0.01 s, talks 0.06 s
BUSY = "+100486"
NO_ANSWER = "+100480"
REJECT = "+100603"
B = "+200"


class Connected:
    """The on_connected callback, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1


def backend(*, max_call: float = 10.0) -> SimulatedBackend:
    return SimulatedBackend(RULES, ring_timeout_seconds=RING_TIMEOUT, max_call_seconds=max_call)


async def place(
    a: str | tuple[str, ...], b: str = B, *, max_call: float = 10.0
) -> tuple[CallReport, int]:
    numbers = (a,) if isinstance(a, str) else a
    connected = Connected()
    plan = CallPlan(call_uuid="00000000-0000-0000-0000-000000000001", a_numbers=numbers, b_number=b)
    report = await backend(max_call=max_call).place_call(plan, connected)
    return report, connected.calls


def summary(report: CallReport) -> list[tuple[str, str, str]]:
    return [(leg.role, leg.number, leg.result) for leg in report.legs]


def leg(report: CallReport, number: str) -> Leg:
    return next(leg for leg in report.legs if leg.number == number)


# --- A: one number ------------------------------------------------------------------------------


async def test_answered_a_and_b_are_connected() -> None:
    report, connected = await place(ANSWER)

    assert report.outcome == "connected"
    assert report.comment == ""
    assert connected == 1
    assert summary(report) == [("a", ANSWER, "answered"), ("b", B, "answered")]
    assert report.connected_at is not None
    assert report.started < report.connected_at < report.ended
    a, b = report.legs
    assert a.answered is not None and b.answered is not None
    assert a.ended == b.ended == report.ended
    # Both talk 0.02 s: A's rule is not longer than B's, so A is said to hang up.
    assert (a.hangup_by, b.hangup_by) == ("a", "a")
    record = report.as_record()
    assert record["talk_seconds"] >= TALK * 0.9
    assert record["duration_seconds"] >= 2 * RING + TALK * 0.9


async def test_the_side_that_talks_less_hangs_up() -> None:
    a_longer, _ = await place(LONG_TALK, B)
    b_longer, _ = await place(ANSWER, LONG_TALK)

    assert {leg.hangup_by for leg in a_longer.legs} == {"b"}
    assert {leg.hangup_by for leg in b_longer.legs} == {"a"}
    # The call lasts as long as the shorter talker.
    assert a_longer.as_record()["talk_seconds"] < TALK * 3


NOT_ANSWERING = [
    (BUSY, "busy", "busy"),
    (NO_ANSWER, "no_answer", "no_answer"),
    (REJECT, "rejected", "rejected"),
]


@pytest.mark.parametrize(("a_number", "outcome", "result"), NOT_ANSWERING)
async def test_a_that_does_not_answer_ends_the_call(
    a_number: str, outcome: str, result: str
) -> None:
    report, connected = await place(a_number)

    assert report.outcome == f"a_{outcome}"
    assert connected == 0
    # B is never called.
    assert summary(report) == [("a", a_number, result)]
    [a] = report.legs
    assert a.answered is None and a.hangup_by == ""
    assert report.connected_at is None
    assert report.as_record()["talk_seconds"] == 0.0


async def test_no_answer_rings_for_the_ring_timeout() -> None:
    started = time.monotonic()
    report, _ = await place(NO_ANSWER)

    assert time.monotonic() - started >= RING_TIMEOUT * 0.9
    [a] = report.as_record()["legs"]
    assert a["ring_seconds"] == pytest.approx(RING_TIMEOUT, abs=0.002)


async def test_ring_timeout_also_caps_slow_answers() -> None:
    slow = SimulatedBackend(RULES, ring_timeout_seconds=0.01, max_call_seconds=10)
    connected = Connected()
    plan = CallPlan(call_uuid="u", a_numbers=(SLOW_ANSWER,), b_number=B)

    report = await slow.place_call(plan, connected)

    # Answering "after" the timeout is modelled as answering at the timeout.
    assert report.outcome == "connected"
    [a_record, _] = report.as_record()["legs"]
    assert a_record["ring_seconds"] == pytest.approx(0.01, abs=0.002)


# --- A: extended numbers ------------------------------------------------------------------------


async def test_first_a_number_to_answer_takes_the_call_the_others_are_cancelled() -> None:
    report, connected = await place((SLOW_ANSWER, ANSWER, NO_ANSWER))

    assert report.outcome == "connected"
    assert connected == 1
    assert summary(report) == [
        ("a", SLOW_ANSWER, "cancelled"),
        ("a", ANSWER, "answered"),
        ("a", NO_ANSWER, "cancelled"),
        ("b", B, "answered"),
    ]
    winner = leg(report, ANSWER)
    for number in (SLOW_ANSWER, NO_ANSWER):
        cancelled = leg(report, number)
        assert cancelled.hangup_by == "system"
        assert cancelled.answered is None
        # Cancelled when the winner answered.
        assert cancelled.ended == winner.answered
    assert winner.hangup_by in ("a", "b")
    assert winner.ended == report.ended


async def test_a_number_that_failed_before_the_winner_answered_keeps_its_result() -> None:
    # BUSY is found busy after 0.01 s, SLOW_ANSWER answers after 0.03 s.
    report, _ = await place((BUSY, SLOW_ANSWER))

    assert report.outcome == "connected"
    assert summary(report) == [
        ("a", BUSY, "busy"),
        ("a", SLOW_ANSWER, "answered"),
        ("b", B, "answered"),
    ]
    assert leg(report, BUSY).hangup_by == ""


async def test_when_no_a_number_answers_the_outcome_is_the_main_numbers() -> None:
    report, connected = await place((REJECT, BUSY, NO_ANSWER))

    assert report.outcome == "a_rejected"
    assert connected == 0
    assert summary(report) == [
        ("a", REJECT, "rejected"),
        ("a", BUSY, "busy"),
        ("a", NO_ANSWER, "no_answer"),
    ]


# --- B ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("b_number", "outcome", "result"), NOT_ANSWERING)
async def test_b_that_does_not_answer_ends_the_call(
    b_number: str, outcome: str, result: str
) -> None:
    report, connected = await place(ANSWER, b_number)

    assert report.outcome == f"b_{outcome}"
    assert connected == 0
    assert summary(report) == [("a", ANSWER, "answered"), ("b", b_number, result)]
    a, b = report.legs
    # A was answered and waited for B; the system hung it up when B failed.
    assert a.answered is not None and a.hangup_by == "system"
    assert a.ended == b.ended == report.ended
    assert b.answered is None and b.hangup_by == ""
    assert report.connected_at is None
    assert report.as_record()["talk_seconds"] == 0.0


# --- limits -------------------------------------------------------------------------------------


async def test_max_call_duration_cuts_the_call_and_the_system_hangs_up() -> None:
    report, connected = await place(LONG_TALK, LONG_TALK, max_call=0.01)

    assert report.outcome == "connected"
    assert connected == 1
    assert {leg.hangup_by for leg in report.legs} == {"system"}
    # Cut at 0.01 s, well before either side's 0.06 s of talk.
    assert 0.009 <= report.as_record()["talk_seconds"] < TALK * 3


def test_default_rules_choose_behaviour_by_number_ending() -> None:
    default = SimulatedBackend()
    chosen = {
        number: default._rule(number).behaviour
        for number in ("+7999486", "+7999480", "+7999603", "+79990001122", "101")
    }
    assert chosen == {
        "+7999486": "busy",
        "+7999480": "no_answer",
        "+7999603": "reject",
        "+79990001122": "answer",
        "101": "answer",
    }
    assert DEFAULT_RULES[-1].pattern == "*"


def test_first_matching_rule_wins_and_unmatched_numbers_answer() -> None:
    rules = (Rule(pattern="+1*", behaviour="busy"), Rule(pattern="*1", behaviour="reject"))
    sim = SimulatedBackend(rules)
    assert sim._rule("+11").behaviour == "busy"
    assert sim._rule("21").behaviour == "reject"
    assert sim._rule("22").behaviour == "answer"
