"""The SIP user agent core of the dialer: builds requests, routes them, matches responses to
client transactions and in-dialog requests to dialogs (RFC 3261 8, 12, 16.12 loose routing).
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.dialer.sip import counters
from services.dialer.sip.message import (
    Address,
    Message,
    ParseError,
    address_of,
    params,
    uri_of,
)
from services.dialer.sip.timers import Timers
from services.dialer.sip.transaction import T1, ClientTransaction, Lingering, timeout_response
from services.dialer.sip.transport import Transport

log = logging.getLogger(__name__)
MESSAGES = counters.MESSAGES

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS"


class _RandomHex:
    """Hex digits from the system's CSPRNG, read 4 KiB at a time: a callback takes a dozen
    tags and branches, and one getrandom() call each was a visible share of its CPU. Still
    unpredictable: a tenant's phone sees our ids and must not guess those of other calls
    (a forged response with the right branch would be taken as the phone's)."""

    def __init__(self, chunk_bytes: int = 4096) -> None:
        self._chunk_bytes = chunk_bytes
        self.reset()

    def reset(self) -> None:
        self._digits = ""
        self._at = 0

    def take(self, count: int) -> str:
        end = self._at + count
        if end > len(self._digits):
            self._digits, self._at, end = secrets.token_hex(self._chunk_bytes), 0, count
        digits, self._at = self._digits[self._at : end], end
        return digits


_random_hex = _RandomHex()
# A forked child must not hand out the digits its parent has handed out or will.
os.register_at_fork(after_in_child=_random_hex.reset)


def random_hex(digits: int) -> str:
    """`digits` hex digits from the CSPRNG (see _RandomHex)."""
    return _random_hex.take(digits)


def new_tag() -> str:
    return _random_hex.take(12)  # 48 random bits (RFC 3261 19.3 asks for 32 at least)


def new_branch() -> str:
    return "z9hG4bK" + _random_hex.take(16)  # the RFC 3261 magic cookie (8.1.1.7)


@dataclass(frozen=True)
class Route:
    """Where numbers matching `pattern` are sent: a SIP proxy, trunk or phone."""

    pattern: str
    proxy: Address
    domain: str


@dataclass
class Dialog:
    """Our side of one dialog, created by a 2xx to our INVITE (RFC 3261 12.1.2)."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_party: str  # From value without the tag
    remote_party: str  # To value without the tag
    remote_target: str  # the peer's Contact URI
    route_set: list[str]
    cseq: int
    # The ACK of each 2xx we received, sent again when that 2xx is retransmitted (13.2.2.4).
    acks: dict[int, bytes] = field(default_factory=dict)
    # Answers to requests the peer sends in this dialog (BYE, re-INVITE): set by its owner.
    on_request: Callable[[Message], tuple[int, str, bytes]] = lambda _: (200, "OK", b"")

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)


class UserAgent:
    def __init__(
        self,
        transport: Transport,
        routes: tuple[Route, ...],
        *,
        user_agent: str = "callback-scheduler",
        t1: float = T1,
    ) -> None:
        self.transport = transport
        self.routes = routes
        self.user_agent = user_agent
        self.t1 = t1
        self.transactions: dict[tuple[str, str], ClientTransaction | Lingering] = {}
        self.dialogs: dict[tuple[str, str, str], Dialog] = {}
        # Responses we sent, by the request's (branch, method): resent when the request is
        # retransmitted (a server transaction's Completed state, RFC 3261 17.2.2).
        self._answered: dict[tuple[str, str], tuple[bytes, float]] = {}
        # Ended transactions and dialogs to drop: (when, which table, key), oldest first.
        self._expiring: deque[tuple[float, int, tuple[str, ...]]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self.retransmissions = 0
        self._timers: Timers | None = None

    @property
    def timers(self) -> Timers:
        """The one timer heap of every transaction and call of this user agent (timers.py),
        on the loop it first runs in."""
        if self._timers is None:
            self._timers = Timers(asyncio.get_running_loop())
        return self._timers

    # --- sending ---------------------------------------------------------------------------

    def route_for(self, number: str) -> Route:
        route = next((r for r in self.routes if fnmatch.fnmatchcase(number, r.pattern)), None)
        if route is None:
            raise LookupError(f"no SIP route for {number!r}")
        return route

    def via(self, branch: str) -> str:
        local = self.transport.local
        alias = ";alias" if self.transport.alias else ""
        return (
            f"SIP/2.0/{self.transport.name} {local.host}:{local.port};branch={branch};rport{alias}"
        )

    def contact(self) -> str:
        local = self.transport.local
        if self.transport.name == "TLS":
            # A SIPS Contact: requests towards us must come over TLS too (RFC 3261 8.1.1.8,
            # RFC 5630 4.1); `transport=tls` would say the same but is deprecated (5630 3.1.3).
            return f"<sips:callback@{local.host}:{local.port}>"
        suffix = ";transport=tcp" if self.transport.name == "TCP" else ""
        return f"<sip:callback@{local.host}:{local.port}{suffix}>"

    def new_request(self, method: str, uri: str, headers: list[tuple[str, str]]) -> Message:
        request = Message(method=method, uri=uri)
        request.headers = [("Via", self.via(new_branch())), ("Max-Forwards", "70"), *headers]
        request.headers.append(("User-Agent", self.user_agent))
        return request

    def send_request(self, request: Message, destination: Address) -> ClientTransaction:
        transaction = self.new_transaction(request, destination)
        self.start(transaction)
        return transaction

    def new_transaction(self, request: Message, destination: Address) -> ClientTransaction:
        """A client transaction built (its request encoded) but not sent: see start."""
        return ClientTransaction(
            request, destination, self.transport.send, self.transport.reliable, self.t1
        )

    def start(self, transaction: ClientTransaction) -> None:
        """Send a transaction's request now and match responses to it from then on."""
        self.transactions[transaction.key] = transaction
        transaction.on_end = self._forget
        transaction.on_linger = self._linger
        transaction.start(self.timers)

    def _forget(self, transaction: ClientTransaction) -> None:
        self.retransmissions += transaction.retransmissions
        if self.transactions.get(transaction.key) is transaction:
            del self.transactions[transaction.key]

    def _linger(self, transaction: ClientTransaction, seconds: float) -> None:
        """Keep only what absorbs the transaction's late copies, for `seconds`."""
        self.retransmissions += transaction.retransmissions
        if self.transactions.get(transaction.key) is not transaction:
            return
        if seconds <= 0:
            del self.transactions[transaction.key]
            return
        self.transactions[transaction.key] = transaction.lingering()
        self.expire_later(self.transactions, transaction.key)

    def expire_later(self, table: dict[Any, Any], key: tuple[str, ...]) -> None:
        """Drop `key` from `table` (transactions or dialogs) 64*T1 from now. One queue in
        time order and one timer for all, not a timer each: a timer handle, its context
        and its bound method per entry were most of the 30,000 objects these held."""
        self._expiring.append((time.monotonic() + 64 * self.t1, id(table), key))
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(64 * self.t1, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = time.monotonic()
        tables: dict[int, dict[Any, Any]] = {
            id(self.transactions): self.transactions,
            id(self.dialogs): self.dialogs,
        }
        while self._expiring and self._expiring[0][0] <= now:
            _, table, key = self._expiring.popleft()
            tables[table].pop(key, None)
        if self._expiring:
            wait = max(self._expiring[0][0] - now, 0.0)
            self._sweeper = asyncio.get_running_loop().call_later(wait, self._sweep)

    def transport_failed(self, destination: Address, error: str) -> None:
        """A connection failed: every transaction towards it ends with a 503 (RFC 3261 8.1.3.1)."""
        for transaction in list(self.transactions.values()):
            if isinstance(transaction, tuple):  # Lingering: nothing left to fail
                continue
            if transaction.destination == destination and transaction.final is None:
                failure = timeout_response(transaction.request, f"Transport Error: {error}")
                failure.status = 503
                transaction.fail(failure)

    def destination_in_dialog(self, dialog: Dialog) -> Address:
        # Loose routing (RFC 3261 12.2.1.1, 16.12): the first Route when there is a route set,
        # otherwise the remote target itself.
        next_hop = uri_of(dialog.route_set[0]) if dialog.route_set else dialog.remote_target
        return address_of(next_hop)

    def in_dialog_request(self, dialog: Dialog, method: str, cseq: int | None = None) -> Message:
        if cseq is None:
            dialog.cseq += 1
            cseq = dialog.cseq
        request = self.new_request(
            method,
            dialog.remote_target,
            [
                ("From", f"{dialog.local_party};tag={dialog.local_tag}"),
                ("To", f"{dialog.remote_party};tag={dialog.remote_tag}"),
                ("Call-ID", dialog.call_id),
                ("CSeq", f"{cseq} {method}"),
            ],
        )
        request.headers.extend(("Route", route) for route in dialog.route_set)
        if method in ("INVITE", "ACK"):
            request.headers.append(("Contact", self.contact()))
        return request

    def send_ack(self, dialog: Dialog, cseq: int, body: bytes = b"") -> None:
        """The ACK of a 2xx: a new transaction of its own, end to end (RFC 3261 13.2.2.4)."""
        ack = self.in_dialog_request(dialog, "ACK", cseq)
        if body:
            ack.headers.append(("Content-Type", "application/sdp"))
            ack.body = body
        data = ack.encode()
        dialog.acks[cseq] = data
        self.transport.send(data, self.destination_in_dialog(dialog))

    # --- receiving ---------------------------------------------------------------------------

    def receive(self, message: Message, source: Address) -> None:
        MESSAGES.received += 1
        try:
            if message.is_request:
                self._request(message, source)
            else:
                self._response(message)
        except (ParseError, ValueError, LookupError) as err:
            log.warning("bad SIP message", extra={"action": "drop", "error": str(err)})

    def _response(self, response: Message) -> None:
        number, method = response.cseq
        transaction = self.transactions.get((response.branch, method))
        if isinstance(transaction, ClientTransaction) and transaction.final is None:
            # A provisional or the first final response: no dialog can have acknowledged a
            # 2xx of this INVITE yet, so the dialog lookup below (two From/To parses) is
            # only for the responses that come after.
            transaction.receive(response)
            return
        if method == "INVITE" and 200 <= response.status < 300:
            key = (response.call_id, params(response.get("From")).get("tag", ""))
            remote_tag = params(response.get("To")).get("tag", "")
            dialog = self.dialogs.get((*key, remote_tag))
            if dialog is not None and number in dialog.acks:
                # A 2xx we already acknowledged: its ACK was lost; send it again.
                self.transport.send(dialog.acks[number], self.destination_in_dialog(dialog))
                return
        if isinstance(transaction, tuple):  # Lingering
            ack, host, port = transaction
            if ack is not None and response.status >= 300:
                self.transport.send(ack, Address(host, port))
        elif transaction is not None:
            transaction.receive(response)

    def _request(self, request: Message, source: Address) -> None:
        branch_key = (request.branch, request.method)
        answered = self._answered.get(branch_key)
        if answered is not None:
            self.transport.send(answered[0], source)  # a retransmitted request
            return
        if request.method == "ACK":
            return  # ACKs of our answers to re-INVITEs need no reply
        remote_tag = params(request.get("From")).get("tag", "")
        local_tag = params(request.get("To")).get("tag", "")
        dialog = self.dialogs.get((request.call_id, local_tag, remote_tag))
        body = b""
        if request.method == "OPTIONS":
            status, reason = 200, "OK"
        elif dialog is None:
            # Out of dialog (no tag) we take no calls; in an unknown dialog, 481 (12.2.2).
            status, reason = (405, "Method Not Allowed") if not local_tag else (481, "No Dialog")
        elif request.method == "CANCEL":
            status, reason = 481, "Call/Transaction Does Not Exist"
        else:
            status, reason, body = dialog.on_request(request)
        self.respond(request, source, status, reason, body)

    def respond(
        self, request: Message, source: Address, status: int, reason: str, body: bytes = b""
    ) -> None:
        response = Message(status=status, reason=reason)
        response.headers = [(name, value) for name, value in request.headers if name == "Via"]
        to = request.get("To")
        if "tag=" not in to and status > 100:
            to = f"{to};tag={new_tag()}"
        response.headers += [
            ("From", request.get("From")),
            ("To", to),
            ("Call-ID", request.call_id),
            ("CSeq", request.get("CSeq")),
        ]
        if status == 405:
            response.headers.append(("Allow", ALLOW))
        if body:
            response.headers += [("Contact", self.contact()), ("Content-Type", "application/sdp")]
            response.body = body
        data = response.encode()
        # Responses go back where the request came from (RFC 3581 rport behaviour).
        self.transport.send(data, source)
        now = time.monotonic()
        key = (request.branch, request.method)
        self._answered.pop(key, None)  # to the end: the dict stays in the order answered
        self._answered[key] = (data, now)
        self._forget_answers(now - 64 * self.t1)

    def _forget_answers(self, before: float) -> None:
        """Forget answers older than `before` (Timer J, 64*T1: a retransmission cannot come
        later). Oldest first, stopping at the first one kept: a few entries per answer. A
        whole pass once over 1,024 answers cost a pass per answer at 200 callbacks a second
        (6,400 answers within 64*T1, each B leg's BYE answered): 9 % of the dialer's CPU."""
        answered = self._answered
        while answered:
            oldest = next(iter(answered))
            if answered[oldest][1] >= before:
                return
            del answered[oldest]
