"""The `simulated` telephony backend: phones that answer, ring out, refuse or are busy,
chosen per number by glob patterns, in real time. The embedded default of `make run`.

Default rules (first match wins; override with DIALER_SIMULATED_RULES, a JSON list):
numbers ending in 486 are busy, in 480 do not answer, in 603 reject the call
(the SIP codes for each); every other number answers after 1 s and talks for 3 s.
"""

from __future__ import annotations

import asyncio
import fnmatch
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from services.dialer.backend import CallPlan, CallReport, Leg, OnConnected

Behaviour = Literal["answer", "busy", "no_answer", "reject"]


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pattern: str
    behaviour: Behaviour = "answer"
    # Until the phone answers, is found busy or rejects; no_answer rings for the ring timeout.
    ring_seconds: float = 1.0
    talk_seconds: float = 3.0


DEFAULT_RULES = (
    Rule(pattern="*486", behaviour="busy", ring_seconds=0.5),
    Rule(pattern="*480", behaviour="no_answer"),
    Rule(pattern="*603", behaviour="reject", ring_seconds=1.0),
    Rule(pattern="*"),
)

_LEG_RESULT = {"answer": "answered", "busy": "busy", "no_answer": "no_answer", "reject": "rejected"}
_OUTCOME = {"busy": "busy", "no_answer": "no_answer", "reject": "rejected"}


@dataclass(frozen=True)
class _Ring:
    number: str
    rule: Rule
    # How long until this phone's ringing ends (answer, busy, reject, or the ring timeout).
    seconds: float


class SimulatedBackend:
    name = "simulated"

    def __init__(
        self,
        rules: tuple[Rule, ...] = DEFAULT_RULES,
        *,
        ring_timeout_seconds: float = 30.0,
        max_call_seconds: float = 3600.0,
    ) -> None:
        self._rules = rules
        self._ring_timeout = ring_timeout_seconds
        self._max_call = max_call_seconds

    def _rule(self, number: str) -> Rule:
        return next(
            (rule for rule in self._rules if fnmatch.fnmatchcase(number, rule.pattern)),
            Rule(pattern="*"),
        )

    def _ring(self, number: str) -> _Ring:
        rule = self._rule(number)
        seconds = self._ring_timeout if rule.behaviour == "no_answer" else rule.ring_seconds
        return _Ring(number, rule, min(seconds, self._ring_timeout))

    async def place_call(self, plan: CallPlan, on_connected: OnConnected) -> CallReport:
        started = datetime.now(UTC)
        rings = [self._ring(number) for number in plan.a_numbers]
        answering = [r for r in rings if r.rule.behaviour == "answer"]
        winner = min(answering, key=lambda r: r.seconds) if answering else None
        wait = winner.seconds if winner else max(r.seconds for r in rings)
        await asyncio.sleep(wait)
        a_answered = started + timedelta(seconds=wait)
        a_legs = tuple(_a_leg(r, winner, started) for r in rings)
        if winner is None:
            primary = rings[0].rule.behaviour
            return CallReport(
                outcome=f"a_{_OUTCOME[primary]}",
                comment="",
                started=started,
                ended=datetime.now(UTC),
                legs=a_legs,
            )

        b = self._ring(plan.b_number)
        await asyncio.sleep(b.seconds)
        b_end = datetime.now(UTC)
        if b.rule.behaviour != "answer":
            a_leg = _replace_end(a_legs, winner.number, b_end, "system")
            b_leg = Leg("b", b.number, _LEG_RESULT[b.rule.behaviour], a_answered, None, b_end)
            return CallReport(
                outcome=f"b_{_OUTCOME[b.rule.behaviour]}",
                comment="",
                started=started,
                ended=b_end,
                legs=(*a_leg, b_leg),
            )

        connected_at = b_end
        await on_connected()
        talk = min(winner.rule.talk_seconds, b.rule.talk_seconds, self._max_call)
        await asyncio.sleep(talk)
        ended = datetime.now(UTC)
        if talk >= self._max_call:
            hangup_by = "system"
        elif winner.rule.talk_seconds <= b.rule.talk_seconds:
            hangup_by = "a"
        else:
            hangup_by = "b"
        a_final = _replace_end(a_legs, winner.number, ended, hangup_by)
        b_leg = Leg("b", b.number, "answered", a_answered, connected_at, ended, hangup_by)
        return CallReport(
            outcome="connected",
            comment="",
            started=started,
            ended=ended,
            legs=(*a_final, b_leg),
            connected_at=connected_at,
        )


def _a_leg(ring: _Ring, winner: _Ring | None, started: datetime) -> Leg:
    if winner is not None and ring is winner:
        return Leg("a", ring.number, "answered", started, started + timedelta(seconds=ring.seconds))
    if winner is not None and (ring.rule.behaviour == "answer" or ring.seconds > winner.seconds):
        # Still ringing when another A number answered: cancelled.
        ended = started + timedelta(seconds=winner.seconds)
        return Leg("a", ring.number, "cancelled", started, None, ended, "system")
    ended = started + timedelta(seconds=ring.seconds)
    return Leg("a", ring.number, _LEG_RESULT[ring.rule.behaviour], started, None, ended)


def _replace_end(legs: tuple[Leg, ...], number: str, ended: datetime, by: str) -> tuple[Leg, ...]:
    return tuple(
        Leg(leg.role, leg.number, leg.result, leg.ring_started, leg.answered, ended, by)
        if leg.number == number and leg.result == "answered"
        else leg
        for leg in legs
    )
