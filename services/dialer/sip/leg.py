"""One leg of a callback: the INVITE we send to one number, and the dialog it may create.

Ringing ends in a final response; the leg CANCELs at the ring timeout or when told to stop
(another A number answered, or A hung up while B rang). Once answered, the leg acknowledges,
re-INVITEs, answers the phone's BYE and sends its own (RFC 3261 9, 13, 15).
"""

from __future__ import annotations

import asyncio
import functools
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from services.dialer.backend import Leg
from services.dialer.sip import digest
from services.dialer.sip.message import Message, number_user, params, quoted_string, uri_of
from services.dialer.sip.sdp import Origin
from services.dialer.sip.timers import Timer
from services.dialer.sip.transaction import ClientTransaction, ignore, timeout_response
from services.dialer.sip.ua import Dialog, UserAgent, new_tag, random_hex

# Put in a leg's response queue to wake it: stop ringing and CANCEL; give up waiting.
_STOP = Message(status=0, reason="stop")
_GIVE_UP = Message(status=0, reason="give up")


@dataclass(frozen=True)
class Account:
    username: str
    password: str


@dataclass(frozen=True)
class Caller:
    name: str = ""
    number: str = ""
    # Also assert the identity to a trusted trunk (RFC 3325 P-Asserted-Identity).
    assert_identity: bool = False


def _now() -> datetime:
    return datetime.now(UTC)


# What a call_uuid may look like to be put in a Call-ID as it is (a UUID's hex and dashes).
_CALL_UUID = re.compile(r"[0-9A-Za-z-]{1,64}")


def new_call_id(call_uuid: str, leg: str, host: str) -> str:
    """The Call-ID of one leg: `<call_uuid>-<leg>-<random>@<host>`, where leg is "a0", "a1", …
    (the A numbers in order) or "b".

    The attempt's call_uuid (a random UUID, one per attempt; the `calls` table maps it to the
    task and attempt) lets whoever logs SIP messages — a phone, a trunk, a proxy's trace —
    tell which attempt and leg a message belongs to without our own logs. The random part
    keeps every Call-ID unique even if a call_uuid were ever placed twice, so that a second
    placing shows as a new call rather than as a retransmission (RFC 3261 8.1.1.4).
    """
    prefix = call_uuid if _CALL_UUID.fullmatch(call_uuid) else secrets.token_hex(12)
    return f"{prefix}-{leg}-{random_hex(8)}@{host}"


def _result_of(response: Message, stopped_by: str) -> str:
    """A final non-2xx response as a leg result."""
    if stopped_by == "other":
        return "cancelled"
    status = response.status
    if stopped_by == "timeout" and status in (408, 487):
        return "no_answer"
    if status in (486, 600):
        return "busy"
    if status in (480, 487) or (status == 408 and response.get("Via")):
        return "no_answer"
    if status in (401, 407, 408) or 500 <= status < 600:
        return "error"  # credentials refused, no response at all, or a server failure
    return "rejected"


def _answer_in_dialog(request: Message, sdp_sent: bytes) -> tuple[int, str, bytes]:
    """The answer to a request in one of our dialogs (a BYE once the leg noted it)."""
    if request.method == "BYE":
        return 200, "OK", b""
    if request.method == "INVITE":
        # A session refresh or hold from the phone: answer with the session it already has
        # from us; relaying a changed offer to the other phone is not done.
        if not sdp_sent:
            return 488, "Not Acceptable Here", b""
        return 200, "OK", sdp_sent
    if request.method in ("INFO", "UPDATE", "NOTIFY"):
        return 200, "OK", b""
    return 501, "Not Implemented", b""


class OutboundLeg:
    def __init__(
        self,
        ua: UserAgent,
        role: str,
        number: str,
        caller: Caller,
        account: Account | None,
        call_id: str,
    ) -> None:
        self.ua = ua
        self.role = role
        self.number = number
        self.account = account
        # Numbers and the name come from the task (tenant input, checked by the api): they are
        # checked and escaped here again, so that no value can add a header, a URI parameter
        # or a host, whatever reached the database (ValueError: the callback is an error).
        callee = number_user(number)
        route = ua.route_for(number)
        self.destination = route.proxy
        self.request_uri = f"sip:{callee}@{route.domain}"
        if caller.number:
            user = number_user(caller.number)
        else:
            user = (account.username if account else "") or "callback"
        display = f"{quoted_string(caller.name)} " if caller.name else ""
        self.local_party = f"{display}<sip:{user}@{route.domain}>"
        self.assert_identity = caller.assert_identity
        self.call_id = call_id  # see new_call_id
        self.local_tag = new_tag()
        self.cseq = 0
        self.origin = Origin(int(random_hex(8), 16) >> 1, ua.transport.local.host)
        self.transaction: ClientTransaction | None = None
        self.dialog: Dialog | None = None
        self.sdp_sent = b""  # our session description towards this phone, last sent
        self.answer_sdp = b""  # the phone's SDP in its 2xx
        # What the call record keeps.
        self.result = ""
        self.final_response = ""
        self.ring_started: datetime | None = None
        self.answered: datetime | None = None
        self.ended: datetime | None = None
        self.hangup_by = ""
        self.teardown_confirmed = False
        self.remote_hangup = asyncio.Event()
        self.on_remote_hangup: Callable[[], None] = lambda: None
        self._stopped_by = ""
        self._invite_sent = False

    # --- ringing ---------------------------------------------------------------------------

    def prepare_invite(self) -> None:
        """Build (and encode) the first INVITE ahead of time: `ring` then only sends it."""
        if self.transaction is None:
            self.transaction = self.ua.new_transaction(self._invite_request(), self.destination)
            self.transaction.on_provisional = self._provisional

    def send_invite(self) -> None:
        """Send the first INVITE now (built by prepare_invite, or here)."""
        self.prepare_invite()
        assert self.transaction is not None
        if not self._invite_sent:
            self._invite_sent = True
            self.ua.start(self.transaction)

    def invite(self, authorization: tuple[str, str] | None = None) -> None:
        request = self._invite_request(authorization)
        transaction = self.ua.new_transaction(request, self.destination)
        transaction.on_provisional = self._provisional
        self.transaction = transaction
        self.ua.start(transaction)

    def _provisional(self, response: Message) -> None:
        """A 1xx to our INVITE: noted here, without waking `ring` (it waits for the final
        response), unless the leg was stopped before the phone rang: its CANCEL waits for
        the first provisional response (RFC 3261 9.1)."""
        if response.status in (180, 183) and self.ring_started is None:
            self.ring_started = _now()
        if self._stopped_by and self.transaction is not None:
            self.transaction.responses.put_nowait(response)

    def _invite_request(self, authorization: tuple[str, str] | None = None) -> Message:
        self.cseq += 1
        headers = [
            ("From", f"{self.local_party};tag={self.local_tag}"),
            ("To", f"<{self.request_uri}>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.cseq} INVITE"),
            ("Contact", self.ua.contact()),
            ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"),
        ]
        if self.assert_identity:
            headers.append(("P-Asserted-Identity", self.local_party))
        if authorization:
            headers.append(authorization)
        return self.ua.new_request("INVITE", self.request_uri, headers)

    def stop(self, why: str) -> None:
        """Stop ringing ("timeout" or "other"): the leg CANCELs once the phone rings."""
        if self._invite_sent and self.transaction is not None and not self._stopped_by:
            self._stopped_by = why
            self.transaction.responses.put_nowait(_STOP)

    async def ring(self, ring_timeout: float) -> bool:
        """Ring until answered (True) or a final failure (False); CANCEL after the timeout."""
        timers = self.ua.timers
        self.send_invite()  # unless the callback's start sent it already
        # Timers post into the response queue rather than wrapping each wait in wait_for:
        # no task per response, which matters with a thousand calls ringing at once.
        ring_timer = timers.call_later(ring_timeout, self.stop, "timeout")
        give_up: Timer | None = None
        cancel_sent = False
        try:
            while True:
                transaction = self.transaction
                assert transaction is not None
                response = await transaction.responses.get()
                if response is _GIVE_UP:
                    # No final response 64*T1 after the CANCEL: the INVITE is taken as
                    # cancelled and its transaction destroyed (RFC 3261 9.1); in Proceeding
                    # it has no timer of its own left to end it, and would stay forever.
                    given_up = timeout_response(transaction.request, "No Final Response")
                    transaction.fail(given_up)
                    return self._final(given_up)
                if response is _STOP or (self._stopped_by and response.status < 200):
                    if not cancel_sent and transaction.provisional is not None:
                        # CANCEL only after a provisional response (RFC 3261 9.1).
                        self._cancel(transaction)
                        cancel_sent = True
                    if give_up is None:
                        # Once stopped, the INVITE must end within 64*T1 (RFC 3261 9.1).
                        give_up = timers.call_later(
                            64 * self.ua.t1 + 1, transaction.responses.put_nowait, _GIVE_UP
                        )
                    continue
                if response.status < 200:
                    continue  # after the CANCEL; noted by _provisional
                if response.status in (401, 407) and self._authenticate(response):
                    continue
                return self._final(response)
        finally:
            timers.cancel(ring_timer)
            if give_up is not None:
                timers.cancel(give_up)

    def _authenticate(self, challenge: Message) -> bool:
        """Send the INVITE again with credentials, once (RFC 3261 22.2)."""
        if self.account is None or self.cseq > 1:
            return False
        header = "WWW-Authenticate" if challenge.status == 401 else "Proxy-Authenticate"
        fields = digest.parse_challenge(challenge.get(header))
        if not digest.supported(fields):
            return False
        value = digest.authorization(
            fields,
            method="INVITE",
            uri=self.request_uri,
            username=self.account.username,
            password=self.account.password,
        )
        name = "Authorization" if challenge.status == 401 else "Proxy-Authorization"
        self.invite((name, value))
        return True

    def _cancel(self, transaction: ClientTransaction) -> None:
        """CANCEL: same Request-URI, Call-ID, From, To, CSeq number and Via branch as the
        INVITE, a transaction of its own (RFC 3261 9.1)."""
        invite = transaction.request
        cancel = Message(method="CANCEL", uri=invite.uri)
        cancel.headers = [
            ("Via", invite.get("Via")),
            ("Max-Forwards", "70"),
            ("From", invite.get("From")),
            ("To", invite.get("To")),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq[0]} CANCEL"),
        ]
        cancel.headers.extend((n, v) for n, v in invite.headers if n == "Route")
        self.ua.send_request(cancel, transaction.destination)

    def _final(self, response: Message) -> bool:
        self.final_response = f"{response.status} {response.reason}".strip()
        if response.status >= 300:
            self.result = _result_of(response, self._stopped_by)
            self.ended = _now()
            return False
        self._make_dialog(response)
        self.answered = _now()
        self.ring_started = self.ring_started or self.answered
        self.answer_sdp = response.body
        if self._stopped_by == "other":
            # Answered just as another A number won (or the caller gave up): not wanted.
            self.result = "cancelled"
            return False
        self.result = "answered"
        return True

    def _make_dialog(self, response: Message) -> None:
        """The dialog of a 2xx (RFC 3261 12.1.2): remote tag, target and reversed route set."""
        to = response.get("To")
        routes = response.get_all("Record-Route")
        routes.reverse()
        dialog = Dialog(
            call_id=self.call_id,
            local_tag=self.local_tag,
            remote_tag=params(to).get("tag", ""),
            local_party=self.local_party,
            remote_party=to.split(";tag=")[0],
            remote_target=uri_of(response.get("Contact")) or self.request_uri,
            route_set=routes,
            cseq=self.cseq,
        )
        dialog.on_request = self._in_dialog_request
        self.dialog = dialog
        self.ua.dialogs[dialog.key] = dialog

    # --- in the dialog ---------------------------------------------------------------------

    def ack(self, sdp: bytes = b"") -> None:
        assert self.dialog is not None
        if sdp:
            self.sdp_sent = sdp
        self.ua.send_ack(self.dialog, self.dialog.cseq, sdp)

    async def reinvite(self, sdp: bytes) -> Message:
        """Offer new media in the dialog; a 2xx is acknowledged at once (RFC 3261 14.1)."""
        assert self.dialog is not None
        request = self.ua.in_dialog_request(self.dialog, "INVITE")
        request.headers.append(("Content-Type", "application/sdp"))
        request.body = sdp
        transaction = self.ua.send_request(request, self.ua.destination_in_dialog(self.dialog))
        transaction.on_provisional = ignore  # only the final response is awaited
        response = await transaction.responses.get()
        if response.status < 300:
            self.sdp_sent = sdp
            self.ua.send_ack(self.dialog, request.cseq[0])
        return response

    async def hang_up(self, by: str) -> None:
        """Send BYE; the teardown is confirmed by the phone's 2xx (RFC 3261 15.1.1)."""
        if self.dialog is None or self.ended is not None:
            return
        self.hangup_by = by
        request = self.ua.in_dialog_request(self.dialog, "BYE")
        transaction = self.ua.send_request(request, self.ua.destination_in_dialog(self.dialog))
        transaction.on_provisional = ignore  # only the final response is awaited
        response = await transaction.responses.get()
        self.teardown_confirmed = response.status < 300
        self.ended = _now()
        self._forget_dialog()

    def _in_dialog_request(self, request: Message) -> tuple[int, str, bytes]:
        if request.method == "BYE" and self.ended is None:
            self.ended = _now()
            self.teardown_confirmed = True  # we answer it with this 200
            self.remote_hangup.set()
            self.on_remote_hangup()
            self._forget_dialog()
        return _answer_in_dialog(request, self.sdp_sent)

    def _forget_dialog(self) -> None:
        dialog = self.dialog
        if dialog is None:
            return
        # Kept a while to answer retransmissions (2xx again -> ACK again), then dropped; by
        # then it answers on its own, without the leg: bound to the leg, it kept the whole
        # callback (legs, transactions, messages) alive for 64*T1 after its end, 6,400
        # callbacks at 200 a second, and the dialer's full garbage collections grew to
        # 100-430 ms over a 30 s run (each one a pause of every call in progress).
        dialog.on_request = functools.partial(_answer_in_dialog, sdp_sent=self.sdp_sent)
        self.ua.expire_later(self.ua.dialogs, dialog.key)

    def record(self) -> Leg:
        return Leg(
            role=self.role,
            number=self.number,
            result=self.result or "error",
            ring_started=self.ring_started,
            answered=self.answered,
            ended=self.ended,
            hangup_by=self.hangup_by,
            sip_call_id=self.call_id,
            final_response=self.final_response,
            teardown_confirmed=self.teardown_confirmed,
        )
