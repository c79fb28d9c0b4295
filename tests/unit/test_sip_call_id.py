"""Each SIP leg's Call-ID names its attempt (the call_uuid) and its leg, so that a phone's or
a trunk's own trace of the messages tells which attempt and leg it saw (bench/chaos.py reads
the sipp phones' traces this way)."""

from __future__ import annotations

import re
import uuid

from services.dialer.backend import CallPlan
from services.dialer.sip.callback import Callback
from services.dialer.sip.leg import new_call_id
from services.dialer.sip.message import Address
from services.dialer.sip.ua import Route, UserAgent
from tests.support.sip_transport import CapturingTransport

CALL_ID = re.compile(r"(?P<uuid>[0-9a-f-]{36})-(?P<leg>a\d+|b)-[0-9a-f]{8}@127\.0\.0\.1")


def test_every_leg_of_a_call_has_its_own_call_id_naming_the_attempt_and_leg() -> None:
    ua = UserAgent(CapturingTransport(), (Route("*", Address("127.0.0.9", 5060), "t"),))
    call_uuid = str(uuid.uuid4())
    plan = CallPlan(call_uuid=call_uuid, a_numbers=("1001", "1002", "1003"), b_number="2001")
    callback = Callback(ua, plan, None, assert_identity=False, ring_timeout=1, max_call=1)
    ids = [leg.call_id for leg in callback.a_legs] + [callback.b.call_id]
    matches = [CALL_ID.fullmatch(call_id) for call_id in ids]
    assert all(matches), ids
    assert [(m["uuid"], m["leg"]) for m in matches if m] == [
        (call_uuid, "a0"),
        (call_uuid, "a1"),
        (call_uuid, "a2"),
        (call_uuid, "b"),
    ]
    assert len(set(ids)) == 4


def test_the_same_call_placed_twice_gets_new_call_ids() -> None:
    call_uuid = str(uuid.uuid4())
    assert new_call_id(call_uuid, "a0", "h") != new_call_id(call_uuid, "a0", "h")


def test_a_call_uuid_unfit_for_a_call_id_is_replaced_by_random_hex() -> None:
    call_id = new_call_id('x"\r\nVia: evil', "b", "h")
    assert re.fullmatch(r"[0-9a-f]{24}-b-[0-9a-f]{8}@h", call_id), call_id
