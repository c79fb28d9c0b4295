"""The `simulated` telephony backend: phones that answer, ring out, refuse or are busy,
chosen per number by glob patterns, in real time. The embedded default of `make run`.

Default rules (first match wins; override with DIALER_SIMULATED_RULES, a JSON list):
numbers ending in 486 are busy, in 480 do not answer, in 603 reject the call
(the SIP codes for each); every other number answers after 1 s and talks for 3 s.

A rule may be random: `behaviours` ({"answer": 8, "busy": 1, ...}) picks the behaviour of
each dial by weight, and `ring_seconds_max` / `talk_seconds_max` draw the durations uniformly
from [ring_seconds, ring_seconds_max] and [talk_seconds, talk_seconds_max].
DIALER_SIMULATED_SEED makes a dialer's draws reproducible. Every dial is logged by the
backend itself (`"action": "simulated_dial"` with the call_uuid), a record of what the
phones saw that is independent of the dialer's own bookkeeping.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import random
import re
from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.dialer.backend import CallPlan, CallReport, Leg, OnConnected, limit

log = logging.getLogger(__name__)

Behaviour = Literal["answer", "busy", "no_answer", "reject"]


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pattern: str
    behaviour: Behaviour = "answer"
    # Until the phone answers, is found busy or rejects; no_answer rings for the ring timeout.
    ring_seconds: float = 1.0
    talk_seconds: float = 3.0
    # Random phones: the behaviour of each dial by weight, durations drawn uniformly.
    behaviours: dict[Behaviour, float] | None = None
    ring_seconds_max: float | None = Field(default=None, ge=0)
    talk_seconds_max: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> Rule:
        if self.ring_seconds_max is not None and self.ring_seconds_max < self.ring_seconds:
            raise ValueError("ring_seconds_max is below ring_seconds")
        if self.talk_seconds_max is not None and self.talk_seconds_max < self.talk_seconds:
            raise ValueError("talk_seconds_max is below talk_seconds")
        if self.behaviours is not None and (
            not self.behaviours
            or min(self.behaviours.values()) < 0
            or sum(self.behaviours.values()) <= 0
        ):
            raise ValueError("behaviours needs non-negative weights, not all zero")
        return self

    def draw(self, rng: random.Random) -> Rule:
        """This rule with its random parts decided for one dial (a fixed rule as it is)."""
        if (
            self.behaviours is None
            and self.ring_seconds_max is None
            and (self.talk_seconds_max is None)
        ):
            return self
        behaviour = self.behaviour
        if self.behaviours is not None:
            names = list(self.behaviours)
            behaviour = rng.choices(names, weights=[self.behaviours[n] for n in names])[0]
        ring = self.ring_seconds
        if self.ring_seconds_max is not None:
            ring = rng.uniform(self.ring_seconds, self.ring_seconds_max)
        talk = self.talk_seconds
        if self.talk_seconds_max is not None:
            talk = rng.uniform(self.talk_seconds, self.talk_seconds_max)
        return Rule(pattern=self.pattern, behaviour=behaviour, ring_seconds=ring, talk_seconds=talk)


DEFAULT_RULES = (
    Rule(pattern="*486", behaviour="busy", ring_seconds=0.5),
    Rule(pattern="*480", behaviour="no_answer"),
    Rule(pattern="*603", behaviour="reject", ring_seconds=1.0),
    Rule(pattern="*"),
)

ANY_NUMBER_ANSWERS = Rule(pattern="*")  # where no rule matches

_LEG_RESULT = {"answer": "answered", "busy": "busy", "no_answer": "no_answer", "reject": "rejected"}
_OUTCOME = {"busy": "busy", "no_answer": "no_answer", "reject": "rejected"}


class _Ring(NamedTuple):
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
        seed: int | None = None,
    ) -> None:
        # Compiled once: fnmatchcase per rule and dial was a tenth of a busy dialer's time.
        self._rules = tuple((re.compile(fnmatch.translate(r.pattern)).match, r) for r in rules)
        self._rng = random.Random(seed)
        self._ring_timeout = ring_timeout_seconds
        self._max_call = max_call_seconds

    def _rule(self, number: str) -> Rule:
        return next((rule for matches, rule in self._rules if matches(number)), ANY_NUMBER_ANSWERS)

    def _ring(self, number: str, ring_timeout: float) -> _Ring:
        rule = self._rule(number).draw(self._rng)
        seconds = ring_timeout if rule.behaviour == "no_answer" else rule.ring_seconds
        return _Ring(number, rule, min(seconds, ring_timeout))

    def prepare_call(self, plan: CallPlan) -> None:
        pass  # nothing to build ahead

    def reserve_start(self, at: float) -> float:
        return at  # no cap

    def start_call(self, call_uuid: str) -> None:
        pass  # the simulated phones are "dialed" by place_call

    def forget_call(self, call_uuid: str) -> None:
        pass

    async def place_call(self, plan: CallPlan, on_connected: OnConnected) -> CallReport:
        started = datetime.now(UTC)
        log.info(
            "simulated phones dialed",
            extra={"action": "simulated_dial", "call_uuid": plan.call_uuid, "a": plan.a_numbers},
        )
        ring_timeout = limit(plan.ring_timeout, self._ring_timeout)
        max_call = limit(plan.max_call, self._max_call)
        rings = [self._ring(number, ring_timeout) for number in plan.a_numbers]
        answering = [r for r in rings if r.rule.behaviour == "answer"]
        winner = min(answering, key=lambda r: r.seconds) if answering else None
        wait = winner.seconds if winner else max(r.seconds for r in rings)
        await _wait(wait)
        a_answered = started + timedelta(seconds=wait)
        if winner is None:
            primary = rings[0].rule.behaviour
            return CallReport(
                outcome=f"a_{_OUTCOME[primary]}",
                comment="",
                started=started,
                ended=datetime.now(UTC),
                legs=_a_legs(rings, None, started),
            )

        b = self._ring(plan.b_number, ring_timeout)
        await _wait(b.seconds)
        b_end = datetime.now(UTC)
        if b.rule.behaviour != "answer":
            b_leg = Leg("b", b.number, _LEG_RESULT[b.rule.behaviour], a_answered, None, b_end)
            return CallReport(
                outcome=f"b_{_OUTCOME[b.rule.behaviour]}",
                comment="",
                started=started,
                ended=b_end,
                legs=(*_a_legs(rings, winner, started, b_end, "system"), b_leg),
            )

        connected_at = b_end
        await on_connected()
        talk = min(winner.rule.talk_seconds, b.rule.talk_seconds, max_call)
        await _wait(talk)
        ended = datetime.now(UTC)
        if talk >= max_call:
            hangup_by = "system"
        elif winner.rule.talk_seconds <= b.rule.talk_seconds:
            hangup_by = "a"
        else:
            hangup_by = "b"
        b_leg = Leg("b", b.number, "answered", a_answered, connected_at, ended, hangup_by)
        return CallReport(
            outcome="connected",
            comment="",
            started=started,
            ended=ended,
            legs=(*_a_legs(rings, winner, started, ended, hangup_by), b_leg),
            connected_at=connected_at,
        )


async def _wait(seconds: float) -> None:
    """Let simulated time pass; phones set to answer at once (benchmarks) do not yield to
    the event loop for nothing."""
    if seconds > 0:
        await asyncio.sleep(seconds)


def _a_legs(
    rings: list[_Ring],
    winner: _Ring | None,
    started: datetime,
    winner_ended: datetime | None = None,
    winner_hangup_by: str = "",
) -> tuple[Leg, ...]:
    """The A legs, once the call is over: the one that answered (if any) ended with the
    call, those still ringing then were cancelled, the others ended by themselves."""
    return tuple(_a_leg(ring, winner, started, winner_ended, winner_hangup_by) for ring in rings)


def _a_leg(
    ring: _Ring,
    winner: _Ring | None,
    started: datetime,
    winner_ended: datetime | None,
    winner_hangup_by: str,
) -> Leg:
    if winner is not None and ring is winner:
        answered = started + timedelta(seconds=ring.seconds)
        return Leg("a", ring.number, "answered", started, answered, winner_ended, winner_hangup_by)
    if winner is not None and (ring.rule.behaviour == "answer" or ring.seconds > winner.seconds):
        # Still ringing when another A number answered: cancelled.
        ended = started + timedelta(seconds=winner.seconds)
        return Leg("a", ring.number, "cancelled", started, None, ended, "system")
    ended = started + timedelta(seconds=ring.seconds)
    return Leg("a", ring.number, _LEG_RESULT[ring.rule.behaviour], started, None, ended)
