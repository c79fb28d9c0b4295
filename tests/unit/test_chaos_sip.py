"""The SIP chaos run's reading of the phones' traces (bench/chaos_sip.py): a retransmitted
INVITE is one transaction, a second INVITE of the same attempt and leg is caught, and a
call's interval at the phones runs from its first INVITE to its first BYE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.chaos_sip import CallRow, ChaosPhones, check_sip_invariants, legs_seen
from tests.sip.phones import Phone

UUID = "738ebcd9-7694-47ac-beba-c3654302c6ea"
OTHER = "0f8b7a52-2b1e-4d0e-9a57-5b8f0f4c1d11"


def entry(at: str, direction: str, first_line: str, call_id: str, cseq: str, branch: str) -> str:
    what = (
        "UDP message received [400] bytes :"
        if direction == "R"
        else "UDP message sent (400 bytes):"
    )
    return (
        f"----------------------------------------------- 2026-12-04 {at}\n{what}\n\n"
        f"{first_line}\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\n"
        f"To: <sip:+15550000001@127.0.0.2>{';tag=1' if 'SIP/2.0 ' in first_line else ''}\n"
        f"Call-ID: {call_id}\nCSeq: {cseq}\nContent-Length: 0\n\n\n"
    )


def call(uuid: str, start: int, branch: str, *, retransmit: bool = False) -> str:
    """A leg: INVITE (maybe twice), 200, ACK, and our BYE a second later."""
    call_id = f"{uuid}-a0-1a2b3c4d@127.0.0.1"
    invite = ("INVITE sip:+15550000001@127.0.0.2 SIP/2.0", call_id, "1 INVITE", branch)
    lines = [entry(f"18:00:{start:02d}.000000", "R", *invite)]
    if retransmit:
        lines.append(entry(f"18:00:{start:02d}.500000", "R", *invite))
    lines += [
        entry(f"18:00:{start:02d}.600000", "S", "SIP/2.0 200 OK", call_id, "1 INVITE", branch),
        entry(f"18:00:{start:02d}.700000", "R", "ACK sip:x SIP/2.0", call_id, "1 ACK", "z9hG4bKa"),
        entry(
            f"18:00:{start + 1:02d}.500000", "R", "BYE sip:x SIP/2.0", call_id, "3 BYE", "z9hG4bKb"
        ),
        entry(f"18:00:{start + 1:02d}.500100", "S", "SIP/2.0 200 OK", call_id, "3 BYE", "z9hG4bKb"),
    ]
    return "".join(lines)


def phones_with(tmp_path: Path, trace: str) -> ChaosPhones:
    workdir = tmp_path / "a"
    workdir.mkdir()
    (workdir / "phone_1_messages.log").write_text(trace)
    phones = ChaosPhones(tmp_path)
    phones.phones["a"] = Phone("127.0.0.2", 5060, None, workdir)  # type: ignore[arg-type]
    return phones


def run_checks(phones: ChaosPhones, calls: list[CallRow], limit: int = 1) -> list[str]:
    failures: list[str] = []

    def check(ok: bool, text: str) -> None:
        if not ok:
            failures.append(text)

    task: dict[str, Any] = {"id": 7, "name": "chaos-1", "status": "finished", "attempts": 2}
    task |= {"try_count": 2, "finish_result": "failed"}
    check_sip_invariants([task], calls, {1: limit}, phones, lambda _: None, check)
    return failures


def test_a_retransmitted_invite_is_one_transaction(tmp_path: Path) -> None:
    phones = phones_with(
        tmp_path, call(UUID, 0, "z9hG4bK1", retransmit=True) + call(OTHER, 5, "z9hG4bK2")
    )
    legs, strays = legs_seen(phones.traces())
    assert not strays
    leg = legs[f"{UUID}-a0-1a2b3c4d@127.0.0.1"]
    assert (leg.call_uuid, leg.leg, len(leg.invites), leg.invite_copies) == (UUID, "a0", 1, 2)
    assert leg.outcome == "200 OK"
    assert (leg.start, leg.end) == (leg.first, leg.bye)
    failures = run_checks(phones, [CallRow(UUID, 7, 1, 1), CallRow(OTHER, 7, 2, 1)])
    assert failures == []


def test_an_attempt_invited_twice_and_overlapping_calls_are_caught(tmp_path: Path) -> None:
    # Two call_uuids of the same attempt (a redial), rung at overlapping times.
    phones = phones_with(tmp_path, call(UUID, 0, "z9hG4bK1") + call(OTHER, 1, "z9hG4bK2"))
    failures = run_checks(phones, [CallRow(UUID, 7, 1, 1), CallRow(OTHER, 7, 1, 1)])
    assert any("INVITEd twice" in f for f in failures), failures
    assert any("rang no phone" in f for f in failures), failures  # attempts 2, one rang
    assert any("over their concurrent_task_limit" in f for f in failures), failures


def test_a_call_no_row_knows_is_reported(tmp_path: Path) -> None:
    phones = phones_with(tmp_path, call(UUID, 0, "z9hG4bK1"))
    failures = run_checks(phones, [])
    assert any("no calls row knows: 1" in f for f in failures), failures


def test_a_call_rung_at_another_tasks_number_is_reported(tmp_path: Path) -> None:
    # The phone was called at task chaos-1's number; the calls row names task 8 (chaos-2).
    phones = phones_with(tmp_path, call(UUID, 0, "z9hG4bK1"))
    task: dict[str, Any] = {"id": 8, "name": "chaos-2", "status": "finished", "attempts": 1}
    task |= {"try_count": 1, "finish_result": "failed"}
    failures: list[str] = []
    check_sip_invariants(
        [task],
        [CallRow(UUID, 8, 1, 1)],
        {1: 1},
        phones,
        lambda _: None,
        lambda ok, text: None if ok else failures.append(text),
    )
    assert any("belongs to another task" in f for f in failures), failures
