"""The `simulated` telephony backend (services/dialer/simulated.py), with phones that ring
and talk for a few milliseconds."""

from __future__ import annotations

import logging
import random
from collections import Counter

import pytest

from services.dialer import simulated
from services.dialer.backend import CallPlan, CallReport, Leg
from services.dialer.simulated import DEFAULT_RULES, Rule, SimulatedBackend

RING = 0.01
TALK = 0.02
# A talker no call in these tests waits for (`waits` shows what a call waited for).
VERY_LONG = 2.0
RULES = (
    Rule(pattern="*486", behaviour="busy", ring_seconds=RING),
    Rule(pattern="*480", behaviour="no_answer"),
    Rule(pattern="*603", behaviour="reject", ring_seconds=RING),
    Rule(pattern="*777", behaviour="answer", ring_seconds=RING * 3, talk_seconds=TALK),
    Rule(pattern="*900", behaviour="answer", ring_seconds=RING, talk_seconds=TALK * 3),
    Rule(pattern="*999", behaviour="answer", ring_seconds=RING, talk_seconds=VERY_LONG),
    Rule(pattern="*", behaviour="answer", ring_seconds=RING, talk_seconds=TALK),
)
RING_TIMEOUT = 0.03
ANSWER = "+100"  # rings 0.01 s, talks 0.02 s
SLOW_ANSWER = "+100777"  # rings 0.03 s, talks 0.02 s
LONG_TALK = "+100900"  # rings 0.01 s, talks 0.06 s
VERY_LONG_TALK = "+100999"  # rings 0.01 s, talks 2 s
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


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The seconds of every wait the simulated phones asked for, in order (still waited):
    how long a call was to last, whatever a busy machine makes of its sleeps."""
    asked: list[float] = []
    wait = simulated._wait

    async def recorded(seconds: float) -> None:
        asked.append(seconds)
        await wait(seconds)

    monkeypatch.setattr(simulated, "_wait", recorded)
    return asked


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


async def test_the_side_that_talks_less_hangs_up(waits: list[float]) -> None:
    a_longer, _ = await place(VERY_LONG_TALK, B)
    b_longer, _ = await place(ANSWER, VERY_LONG_TALK)

    assert {leg.hangup_by for leg in a_longer.legs} == {"b"}
    assert {leg.hangup_by for leg in b_longer.legs} == {"a"}
    # The call lasts as long as the shorter talker (0.02 s), not the longer one (2 s): each
    # call waited for A's ringing, B's, then 0.02 s of talk (what it waited for, not a clock
    # against an upper bound).
    assert waits == [RING, RING, TALK] * 2
    assert a_longer.as_record()["talk_seconds"] >= TALK * 0.9


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


async def test_no_answer_rings_for_the_ring_timeout(waits: list[float]) -> None:
    report, _ = await place(NO_ANSWER)

    assert waits == [RING_TIMEOUT]
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


async def test_max_call_duration_cuts_the_call_and_the_system_hangs_up(
    waits: list[float],
) -> None:
    report, connected = await place(VERY_LONG_TALK, VERY_LONG_TALK, max_call=0.01)

    assert report.outcome == "connected"
    assert connected == 1
    assert {leg.hangup_by for leg in report.legs} == {"system"}
    # Cut at 0.01 s, long before either side's 2 s of talk: the talk it waited for.
    assert waits == [RING, RING, 0.01]
    assert report.as_record()["talk_seconds"] >= 0.009


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


# --- random phones ------------------------------------------------------------------------------

RANDOM_RULE = Rule(
    pattern="*",
    behaviours={"answer": 6, "busy": 2, "reject": 1, "no_answer": 1},
    ring_seconds=0.001,
    ring_seconds_max=0.005,
    talk_seconds=0.001,
    talk_seconds_max=0.005,
)


def draws(seed: int, count: int = 400) -> list[Rule]:
    rng = random.Random(seed)
    return [RANDOM_RULE.draw(rng) for _ in range(count)]


def test_random_rule_draws_behaviours_by_weight_and_durations_in_range() -> None:
    drawn = draws(seed=7)

    counts = Counter(rule.behaviour for rule in drawn)
    assert set(counts) == {"answer", "busy", "reject", "no_answer"}
    # Weights 6:2:1:1 over 400 draws: answer is the clear majority, busy above reject.
    assert counts["answer"] > 400 * 0.45
    assert counts["busy"] > counts["reject"]
    assert all(0.001 <= rule.ring_seconds <= 0.005 for rule in drawn)
    assert all(0.001 <= rule.talk_seconds <= 0.005 for rule in drawn)
    assert len({rule.ring_seconds for rule in drawn}) > 300  # really drawn, not one value


def test_the_seed_makes_draws_reproducible() -> None:
    assert draws(seed=1) == draws(seed=1)
    assert draws(seed=1) != draws(seed=2)


def test_a_fixed_rule_is_not_drawn() -> None:
    fixed = Rule(pattern="*", behaviour="busy", ring_seconds=0.2)
    assert fixed.draw(random.Random(0)) is fixed


@pytest.mark.parametrize(
    "bad",
    [
        {"ring_seconds": 1.0, "ring_seconds_max": 0.5},
        {"talk_seconds": 1.0, "talk_seconds_max": 0.5},
        {"behaviours": {}},
        {"behaviours": {"answer": 0}},
        {"behaviours": {"answer": -1, "busy": 2}},
        {"behaviours": {"ringing": 1}},
    ],
)
def test_random_rules_are_validated(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Rule.model_validate({"pattern": "*", **bad})


async def test_seeded_backends_place_the_same_calls() -> None:
    async def outcomes(seed: int) -> list[str]:
        phones = SimulatedBackend((RANDOM_RULE,), ring_timeout_seconds=0.01, seed=seed)
        found = []
        for index in range(30):
            plan = CallPlan(call_uuid=f"call-{index}", a_numbers=("+1",), b_number="+2")
            found.append((await phones.place_call(plan, Connected())).outcome)
        return found

    first = await outcomes(3)
    assert first == await outcomes(3)
    assert "connected" in first and len(set(first)) > 1


async def test_the_backend_logs_every_dial_with_its_call_uuid(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="services.dialer.simulated")
    await place(BUSY)
    dials = [r for r in caplog.records if getattr(r, "action", None) == "simulated_dial"]
    assert [getattr(r, "call_uuid", None) for r in dials] == [
        "00000000-0000-0000-0000-000000000001"
    ]


# --- the task's own limits (callback_params.ring_timeout, call_duration) ------------------------


async def test_task_ring_timeout_shortens_the_ring(waits: list[float]) -> None:
    plan = CallPlan(call_uuid="u", a_numbers=(NO_ANSWER,), b_number=B, ring_timeout=0.01)

    report = await backend().place_call(plan, Connected())

    assert report.outcome == "a_no_answer"
    # The task's 0.01 s, not the backend's 0.03 s.
    assert waits == [0.01]


async def test_task_ring_timeout_applies_to_b(waits: list[float]) -> None:
    plan = CallPlan(call_uuid="u", a_numbers=(ANSWER,), b_number=NO_ANSWER, ring_timeout=0.02)

    report = await backend().place_call(plan, Connected())

    assert report.outcome == "b_no_answer"
    assert waits == [RING, 0.02]


async def test_task_ring_timeout_cannot_lengthen_the_backends(waits: list[float]) -> None:
    plan = CallPlan(call_uuid="u", a_numbers=(NO_ANSWER,), b_number=B, ring_timeout=5.0)

    await backend().place_call(plan, Connected())

    assert waits == [RING_TIMEOUT]


async def test_task_call_duration_ends_the_talk(waits: list[float]) -> None:
    plan = CallPlan(call_uuid="u", a_numbers=(VERY_LONG_TALK,), b_number=B, max_call=0.01)

    report = await backend(max_call=10.0).place_call(plan, Connected())

    assert report.outcome == "connected"
    assert waits == [RING, RING, 0.01]
    # Hung up by the scheduler at the limit, not by a phone.
    assert {leg.hangup_by for leg in report.legs} == {"system"}


async def test_task_call_duration_cannot_lengthen_the_backends(waits: list[float]) -> None:
    plan = CallPlan(call_uuid="u", a_numbers=(VERY_LONG_TALK,), b_number=B, max_call=60.0)

    report = await backend(max_call=0.01).place_call(plan, Connected())

    assert waits == [RING, RING, 0.01]
    assert {leg.hangup_by for leg in report.legs} == {"system"}
