"""Tenant input cannot shape the SIP headers the dialer sends: for every task the api accepts,
the INVITE of each leg carries exactly the headers the dialer means to send, with the caller id
name and numbers as given (escaped, never interpreted).

The INVITE is built by the real code (SipBackend's Callback, OutboundLeg.invite, UserAgent) on a
transport that only captures bytes. The bytes are read back twice: with the dialer's own parser
and, independently of it, by splitting on CRLF and unquoting by hand.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from services.api import validation
from services.common.errors import InvalidInput
from services.dialer.backend import CallPlan
from services.dialer.sip.backend import SipBackend
from services.dialer.sip.callback import Callback
from services.dialer.sip.leg import Account
from services.dialer.sip.message import Address, params, parse, uri_of
from services.dialer.sip.ua import Route, UserAgent
from tests.support.sip_transport import CapturingTransport

DOMAIN = "callback.test"
ATTACK = 'x"\r\nP-Charge-Info: <sip:+15550001111@t>\r\nX: "'


def user_agent() -> tuple[UserAgent, CapturingTransport]:
    transport = CapturingTransport()
    return UserAgent(transport, (Route("*", Address("127.0.0.9", 5060), DOMAIN),)), transport


def invites(plan: CallPlan, account: Account | None, assert_identity: bool) -> list[bytes]:
    """The INVITE of every leg, as the dialer puts it on the wire (one event loop per call:
    a transaction starts its timers on the running loop)."""
    ua, transport = user_agent()

    async def send() -> None:
        callback = Callback(
            ua, plan, account, assert_identity=assert_identity, ring_timeout=60, max_call=60
        )
        callback.start()  # the A legs' INVITEs, built with the callback
        callback.b.send_invite()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(send())
    finally:
        loop.close()
    return transport.sent


# --- independent reading of the bytes -------------------------------------------------------

HEADERS = ["Via", "Max-Forwards", "From", "To", "Call-ID", "CSeq", "Contact", "Allow"]
QUOTED = re.compile(r'"((?:[^"\\\r\n]|\\[^\r\n])*)"')  # RFC 3261 25.1 quoted-string, no LWS


def header_lines(data: bytes) -> tuple[str, list[tuple[str, str]]]:
    """The request line and (name, value) of each header line, read by splitting on CRLF."""
    assert data.endswith(b"\r\n\r\n") and data.count(b"\r\n\r\n") == 1  # no body, one end
    lines = data[:-4].decode("utf-8").split("\r\n")
    for line in lines:
        assert "\r" not in line and "\n" not in line, line  # no bare CR or LF anywhere
        assert not line[:1].isspace(), line  # no continuation line
    fields = []
    for line in lines[1:]:
        match = re.fullmatch(r"([A-Za-z-]+): (.*)", line)
        assert match, line
        fields.append((match.group(1), match.group(2)))
    return lines[0], fields


def sip_user(number: str) -> str:
    """RFC 3261 19.1.2: `#` is escaped in a user part; digits, `+` and `*` are not."""
    return number.replace("#", "%23")


def check_party(value: str, name: str, user: str, *, tagged: bool) -> None:
    """`value` is `"<name quoted>" <sip:user@domain>` (no display name when name is "")."""
    display = ""
    if name:
        match = QUOTED.match(value)
        assert match, value
        assert re.sub(r"\\(.)", r"\1", match.group(1)) == name
        display, value = match.group(0) + " ", value[match.end() + 1 :]
    tail = r";tag=[0-9a-f]+" if tagged else ""
    assert re.fullmatch(rf"<sip:{re.escape(user)}@{re.escape(DOMAIN)}>{tail}", value), value
    assert display or not name


def check_invite(
    data: bytes, callee: str, name: str, caller: str, *, assert_identity: bool
) -> None:
    request_line, fields = header_lines(data)
    uri = f"sip:{sip_user(callee)}@{DOMAIN}"
    assert request_line == f"INVITE {uri} SIP/2.0"
    expected = [*HEADERS, *(["P-Asserted-Identity"] if assert_identity else [])]
    assert [field for field, _ in fields] == [*expected, "User-Agent", "Content-Length"]
    values = dict(fields)
    assert values["To"] == f"<{uri}>"
    assert values["Content-Length"] == "0"
    check_party(values["From"], name, sip_user(caller), tagged=True)
    if assert_identity:
        check_party(values["P-Asserted-Identity"], name, sip_user(caller), tagged=False)
        assert values["From"].startswith(values["P-Asserted-Identity"] + ";tag=")

    # The dialer's own parser reads the same request.
    message = parse(data)
    assert (message.method, message.uri, message.body) == ("INVITE", uri, b"")
    assert [header for header, _ in message.headers] == [field for field, _ in fields]
    assert uri_of(message.get("From")) == f"sip:{sip_user(caller)}@{DOMAIN}"
    assert list(params(message.get("From"))) == ["tag"]
    assert message.get_all("P-Asserted-Identity") == (
        [values["P-Asserted-Identity"]] if assert_identity else []
    )
    assert message.cseq == (1, "INVITE")


# --- what the api accepts ----------------------------------------------------------------------

# Characters that mean something in SIP, alone or mixed into arbitrary text: most names are drawn
# from what the api should accept, the rest from anything at all.
SIP_SPECIAL = "\"\\<>;,:=@?&%#' "
CONTROL = st.sampled_from("\r\n\t\x00\x7f\x85\u2028\u2029\u200b\u202e\ufeff")
QUOTE_OR_BACKSLASH = frozenset('"\\')
names = st.one_of(
    st.text(SIP_SPECIAL + "aZ0éß日", max_size=66),
    st.text(st.characters(categories=["L", "M", "N", "P", "S", "Zs"]), max_size=66),
    st.text(st.one_of(st.sampled_from(SIP_SPECIAL), CONTROL, st.characters())),
)
phone_numbers = st.from_regex(r"\+?[0-9*#]{1,31}", fullmatch=True)
near_numbers = st.text(
    st.one_of(st.sampled_from(SIP_SPECIAL + "+0123456789*#"), CONTROL), max_size=34
)
# Mostly phone numbers, one in ten anything near one: a task has up to six numbers, and one that
# is not a phone number makes the api refuse the task. (one_of would not weigh them evenly.)
numbers = st.integers(0, 9).flatmap(lambda n: near_numbers if n == 0 else phone_numbers)


@st.composite
def accepted_tasks(draw: st.DrawFn) -> tuple[validation.NewTask, dict[str, Any]]:
    params: dict[str, Any] = {"caller_id_name": draw(names)}
    if draw(st.booleans()):
        params["caller_id_number"] = draw(st.one_of(st.just(""), numbers))
    params["extended_a_numbers"] = draw(st.lists(numbers, max_size=3))
    raw = {"a_number": draw(numbers), "b_number": draw(numbers), "callback_params": params}
    try:
        [task] = validation.new_tasks([raw])
    except InvalidInput:
        assume(False)
        raise  # not reached: assume(False) ends the example
    return task, raw


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    accepted=accepted_tasks(),
    account=st.one_of(st.none(), st.just(Account("trunk-user", "secret"))),
    assert_identity=st.booleans(),
)
def test_every_accepted_task_gives_invites_with_exactly_our_headers(
    accepted: tuple[validation.NewTask, dict[str, Any]],
    account: Account | None,
    assert_identity: bool,
) -> None:
    task, raw = accepted
    params = task.callback_params
    quoted = QUOTE_OR_BACKSLASH & set(params.caller_id_name)
    event(f"name with {'a' if quoted else 'no'} quote or backslash")
    plan = CallPlan(
        call_uuid="c1",
        a_numbers=(task.a_number, *params.extended_a_numbers),
        b_number=task.b_number,
        caller_id_name=params.caller_id_name,
        caller_id_number=params.caller_id_number,
    )
    # What the api stored is what the tenant sent: the checks compare with the raw input.
    assert params.caller_id_name == raw["callback_params"].get("caller_id_name", "")

    sent = invites(plan, account, assert_identity)

    caller = params.caller_id_number or (account.username if account else "callback")
    assert len(sent) == len(plan.a_numbers) + 1
    for data, callee in zip(sent, [*plan.a_numbers, plan.b_number], strict=True):
        check_invite(data, callee, params.caller_id_name, caller, assert_identity=assert_identity)


# --- what bypassed the api ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [ATTACK, 'a\\", "evil" <sip:x@y>;tag=1', "\\", "tab\tnul\x00 ls\u2028 nel\x85 end"],
)
def test_a_name_that_bypassed_the_api_stays_inside_its_quotes(name: str) -> None:
    plan = CallPlan("c1", ("+15550001", "*72#"), "2001", caller_id_name=name)

    for data in invites(plan, None, assert_identity=True):
        _, fields = header_lines(data)
        assert [field for field, _ in fields] == [
            *HEADERS,
            "P-Asserted-Identity",
            "User-Agent",
            "Content-Length",
        ]
        from_value = dict(fields)["From"]
        match = QUOTED.match(from_value)
        assert match and from_value[match.end() :].startswith(" <sip:callback@")
        # Line breaks and other controls became spaces; every other character is kept.
        kept = re.sub("[\x00-\x1f\x7f-\x9f\u2028\u2029]", " ", name)
        assert re.sub(r"\\(.)", r"\1", match.group(1)) == kept


@pytest.mark.parametrize(
    "plan",
    [
        CallPlan("c1", ("1001@evil.example",), "2001"),
        CallPlan("c1", ("1001",), "2001;maddr=10.9.9.9"),
        CallPlan("c1", ("1001",), "2001", caller_id_number="1>\r\nP-Charge-Info: <sip:1@t"),
        CallPlan("c1", ("1001", ""), "2001"),
    ],
    ids=["a-host", "b-param", "caller-header", "empty"],
)
async def test_a_number_that_bypassed_the_api_makes_the_call_an_error(plan: CallPlan) -> None:
    ua, transport = user_agent()
    backend = SipBackend(ua, {}, assert_identity=True, ring_timeout_seconds=1, max_call_seconds=1)

    async def connected() -> None:
        raise AssertionError("not connected")

    report = await backend.place_call(plan, connected)

    assert report.outcome == "error"
    assert report.comment.startswith("not a phone number: ")
    assert transport.sent == []  # nothing was sent, malformed or not
