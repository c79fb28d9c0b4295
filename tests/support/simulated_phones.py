"""The phones of the simulated telephony backend in test stacks: numbers choose their
behaviour (DIALER_SIMULATED_RULES, set by stacks.service_env)."""

from __future__ import annotations

SIMULATED_RULES = [
    {"pattern": "*486", "behaviour": "busy", "ring_seconds": 0.05},
    {"pattern": "*480", "behaviour": "no_answer"},
    {"pattern": "*603", "behaviour": "reject", "ring_seconds": 0.05},
    # Long calls, to hold a queue's capacity for a while.
    {"pattern": "*900", "behaviour": "answer", "ring_seconds": 0.05, "talk_seconds": 1.5},
    {"pattern": "*", "behaviour": "answer", "ring_seconds": 0.05, "talk_seconds": 0.1},
]
LONG_CALL_NUMBER = "+15550000900"
BUSY_NUMBER = "+15550000486"
NO_ANSWER_NUMBER = "+15550000480"
REJECT_NUMBER = "+15550000603"
# An ordinary phone of the test stack: answers after 0.05 s and talks for 0.1 s.
ANSWERING_NUMBER = "+15550000100"
OTHER_ANSWERING_NUMBER = "+15550000200"
# A callback that talks for 1.5 s: a call lasts until the first of A and B hangs up, so both
# ends must be long-talking phones.
LONG_CALL = {"a_number": LONG_CALL_NUMBER, "b_number": LONG_CALL_NUMBER}
