"""The witness floor of `make bench-phone` (bench/phone_floor.py) against two real sipp phones:
every INVITE the bare sender sends is in the phone's own trace, stamped after the second it
was sent at, and every call it placed ends at the phone (the ACK and BYE are taken)."""

from __future__ import annotations

from pathlib import Path

from bench.chaos_sip import read_trace
from bench.phone_floor import witness_floor


def test_every_invite_of_the_floor_reaches_the_phone_and_every_call_ends(tmp_path: Path) -> None:
    rate, seconds = 6, 2
    scenario = {"ring_ms": 10, "talk_ms": 10, "patience_ms": 3000}

    late = witness_floor(["127.0.0.2", "127.0.0.21"], rate, seconds, tmp_path, scenario)

    assert len(late) == rate * seconds
    assert all(0 <= ms < 1000 for ms in late), late
    events = [e for path in tmp_path.rglob("*_messages.log") for e in read_trace(path, "a")]
    byes_answered = {
        e.call_id
        for e in events
        if e.direction == "S" and e.method == "BYE" and "200" in e.first_line
    }
    assert len(byes_answered) == rate * seconds
