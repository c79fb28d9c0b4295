"""sipp playing phones: UAS scenarios built per test, one sipp process per phone address.

A phone's own verdict counts: sipp exits 0 only when every call it was told to expect went
through its scenario, including the checks on what the controller sent (`check_it` regexps:
a black-hole answer in A's first ACK, B's media in the re-INVITE, A's media in B's ACK).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Literal

from tests.support.ports import free_port_block

Behaviour = Literal["answer", "busy", "no_answer", "reject"]
# "a": answers with an offer, then takes a re-INVITE (flow IV's A side).
# "b": answers with an offer; its ACK brings the other phone's answer.
# "a_dropped": answers, is acknowledged with a black hole, then gets our BYE (B failed).
# "a_hangs_up_early": answers, is acknowledged, then hangs up itself while B still rings.
Role = Literal["a", "b", "a_dropped", "a_hangs_up_early"]
Hangup = Literal["phone", "controller"]
# What a ringing phone does with a CANCEL. "487": 200 to the CANCEL, then 487 to the INVITE
# (after `late_487_ms`). "silence": sends nothing more at all, neither the CANCEL's 200 nor the
# INVITE's 487 (its scenario ends there). "answer": its 200 to the INVITE crosses the CANCEL
# (after the CANCEL's 200, as the caller cannot tell); it then expects our ACK (a black
# hole) and our BYE.
OnCancel = Literal["487", "silence", "answer"]

_RESPONSE_HEAD = """SIP/2.0 {status}
      [last_Via:]
      [last_From:]
      {to}
      [last_Call-ID:]
      {cseq}
      Contact: <sip:phone@[local_ip]:[local_port];transport=[transport]>
"""
_TAGGED_TO = "[last_To:];tag=[pid]SIPpTag01[call_number]"
_SDP = """Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=phone 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio {media_port} {profile} 0
      a=rtpmap:0 PCMU/8000
{attributes}"""


def _send(head: str, body: str = "Content-Length: 0\n", retrans: bool = False) -> str:
    attribute = ' retrans="500"' if retrans else ""
    return f"  <send{attribute}><![CDATA[\n      {head}      {body}    ]]></send>\n"


def _response(
    status: str,
    *,
    tagged: bool = True,
    sdp: bool = False,
    extra: str = "",
    media_port: int | None = None,
    stream: Stream | None = None,
) -> str:
    head = _RESPONSE_HEAD.format(
        status=status, to=_TAGGED_TO if tagged else "[last_To:]", cseq="[last_CSeq:]"
    )
    port = "[media_port]" if media_port is None else str(media_port)
    stream = stream or Stream()
    attributes = "".join(f"      {line}\n" for line in stream.attributes)
    body = (
        _SDP.format(media_port=port, profile=stream.profile, attributes=attributes)
        if sdp
        else "Content-Length: 0\n"
    )
    return _send(head + extra, body, retrans=sdp)


@dataclass(frozen=True)
class Stream:
    """The audio stream a phone offers (in its 200 OK) and answers with (to a re-INVITE):
    its transport profile and attribute lines after `a=rtpmap:0 PCMU/8000`, e.g. RTP/SAVP
    with an `a=crypto` line (RFC 4568)."""

    profile: str = "RTP/AVP"
    attributes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Media:
    """Real audio for a phone: its SDP offers `port` on the phone's address (a socket the test
    owns, so the test sees what the other phone sends there), and once the call is connected
    sipp streams the raw PCMU file `audio` (loops forever) as RTP from its own media socket
    to the address of the SDP it received from the controller: in the re-INVITE for A, in
    the ACK for B."""

    port: int
    audio: Path


def _stream(media: Media | None) -> str:
    if media is None:
        return ""
    return f'  <nop><action><exec rtp_stream="{media.audio},-1,0"/></action></nop>\n'


_CAPTURES = {
    # The Contact URI with its parameters: ;transport=tcp tells a proxy how to reach us, and
    # a sips: URI to use TLS.
    "dialog": '<ereg regexp=".*" search_in="hdr" header="From:" assign_to="remote_from"/>'
    '<ereg regexp="sips?:[^>]*" search_in="hdr" header="Contact:" assign_to="remote_contact"/>',
    "cseq": '<ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" assign_to="invite_cseq"/>',
    "rr": '<ereg regexp=".*" search_in="hdr" header="Record-Route:" assign_to="invite_rr"/>',
    # Every Via line of the request, without the last line end (sipp's [last_Via:] and a
    # header search give only the first Via; a proxy needs its own and the caller's).
    "via": '<ereg regexp="Via:[^[:cntrl:]]*([[:cntrl:]]+Via:[^[:cntrl:]]*)*" search_in="msg" '
    'assign_to="invite_via"/>',
}


def _recv(
    request: str, *checks: str, captures: tuple[str, ...] = (), route_set: bool = False
) -> str:
    # sipp refuses a scenario with a variable assigned but never used: capture only what
    # the scenario sends back later.
    actions = [_CAPTURES[name] for name in captures]
    actions += [
        f'<ereg regexp="{escape(regexp)}" search_in="msg" check_it="true" assign_to="checked"/>'
        for regexp in checks
    ]
    inner = f"<action>{''.join(actions)}</action>" if actions else ""
    rrs = ' rrs="true"' if route_set else ""  # keep its Record-Route set for [routes]
    return f'  <recv request="{request}"{rrs}>{inner}</recv>\n'


_BYE = """BYE [$remote_contact] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:phone@[local_ip]>;tag=[pid]SIPpTag01[call_number]
      To:[$remote_from]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
"""

# What the controller must send each phone (checked by sipp itself).
BLACK_HOLE = "a=inactive"
REAL_MEDIA = r"c=IN IP4 127\.0\.0\.[0-9]+"


def scenario(
    behaviour: Behaviour,
    role: Role = "a",
    *,
    ring_ms: int = 200,
    talk_ms: int = 500,
    hangup: Hangup = "controller",
    challenge: tuple[str, str] | None = None,
    invite_checks: tuple[str, ...] = (),
    record_route: bool = False,
    media: Media | None = None,
    proxy: str | None = None,
    late_487_ms: int = 0,
    on_cancel: OnCancel = "487",
    stream: Stream | None = None,
    ack_checks: tuple[str, ...] = (),
    sdp_checks: tuple[str, ...] = (),
) -> str:
    """A phone's UAS scenario. `media`: the phone offers a test-owned media port and sends
    RTP to whatever the controller's SDP tells it once connected (see Media). `proxy`: the
    address of a SIP proxy between the controller and the phone; the phone then returns the
    proxy's Record-Route, routes its own BYE through it, answers a CANCEL with the INVITE's
    Via set, and checks that the controller's in-dialog requests came through the proxy.
    `late_487_ms`: a phone that does not answer sends its 487 this long after the CANCEL's 200.
    `on_cancel`: what a phone that does not answer does with our CANCEL (see OnCancel).
    `stream`: the phone's own SDP stream (default RTP/AVP PCMU). `ack_checks`: regexps the
    controller's first ACK must match (A: the black-hole answer); `sdp_checks`: regexps the
    message carrying the other phone's SDP must match (A: the re-INVITE; B: the ACK)."""
    media_port = media.port if media else None
    captures: tuple[str, ...] = ("cseq",) if behaviour == "no_answer" else ()
    if proxy and behaviour == "no_answer":
        captures = ("cseq", "via", "rr") if on_cancel == "answer" else ("cseq", "via")
    if behaviour == "answer" and (
        role == "a_hangs_up_early" or (hangup == "phone" and role != "a_dropped")
    ):
        captures = ("dialog",)
    steps = [_recv("INVITE", *invite_checks, captures=captures, route_set=proxy is not None)]
    record = "[last_Record-Route:]\n      " if proxy else ""
    if challenge:
        username, password = challenge
        unauthorized = _response(
            "401 Unauthorized",
            extra='WWW-Authenticate: Digest realm="callback.test", '
            'nonce="[pid][call_number]a1b2", qop="auth", algorithm=MD5\n      ',
        )
        steps += [unauthorized, _recv("ACK")]
        steps.append(
            '  <recv request="INVITE"><action><verifyauth assign_to="authvalid" '
            f'username="{username}" password="{password}"/>'
            f"{''.join(_CAPTURES[name] for name in captures)}</action></recv>\n"
            '  <nop test="authvalid" next="authorized"/>\n'
        )
        # Wrong credentials: challenged again (as PBXs do), then the call fails in sipp's
        # view (a message that never comes, short timeout).
        steps += [unauthorized, _recv("ACK"), '  <recv request="NEVER" timeout="100"/>\n']
        steps.append('  <label id="authorized"/>\n')
    steps.append(_response("100 Trying", tagged=False))
    if behaviour in ("busy", "reject"):
        status = "486 Busy Here" if behaviour == "busy" else "603 Decline"
        steps += [_pause(ring_ms), _response(status), _recv("ACK")]
        return _wrap(steps)
    steps.append(_response("180 Ringing", extra=record))
    if behaviour == "no_answer":
        cancelled = _RESPONSE_HEAD.format(
            status="487 Request Terminated", to=_TAGGED_TO, cseq="CSeq: [$invite_cseq] INVITE"
        )
        if proxy:  # the INVITE's Via set, not the CANCEL's (RFC 3261 9.2)
            cancelled = cancelled.replace("[last_Via:]", "[$invite_via]")
        if on_cancel == "silence":
            # sipp refuses a variable captured but never used: the INVITE's CSeq and Via
            # would only serve the 487 this phone never sends.
            steps[0] = _recv("INVITE", *invite_checks, route_set=proxy is not None)
            steps.append(_recv("CANCEL"))
            return _wrap(steps)
        if on_cancel == "answer":
            answered = cancelled.replace("487 Request Terminated", "200 OK")
            # The INVITE's Record-Route set, not the CANCEL's (it has none).
            answered += "Record-Route:[$invite_rr]\n      " if proxy else ""
            relayed = (rf"Via: SIP/2\.0/[A-Z]+ {re.escape(proxy)}",) if proxy else ()
            # The CANCEL's 200 before the INVITE's: sipp sends nothing after a message sent
            # with retransmissions if our ACK of it arrives first (it aborts the call).
            steps += [
                _recv("CANCEL"),
                _response("200 OK", tagged=False),
                _send(
                    answered,
                    _SDP.format(media_port="[media_port]", profile="RTP/AVP", attributes=""),
                    retrans=True,
                ),
                _recv("ACK", BLACK_HOLE, *relayed),
                _recv("BYE", *relayed),
                _response("200 OK", tagged=False),
            ]
            return _wrap(steps)
        steps += [
            _recv("CANCEL"),
            _response("200 OK", tagged=False),
            _pause(late_487_ms),  # RFC 3261 9.2 sets the 487 no deadline
            _send(cancelled),
            _recv("ACK"),
        ]
        return _wrap(steps)
    # A proxy on the path would add this; the controller must then route every in-dialog
    # request through it (Route: the reversed Record-Route set, RFC 3261 12.1.2).
    route = "Record-Route: <sip:[local_ip]:[local_port];transport=[transport];lr;rr=phone>\n      "
    steps += [
        _pause(ring_ms),
        _response(
            "200 OK",
            sdp=True,
            extra=(route if record_route else "") + record,
            media_port=media_port,
            stream=stream,
        ),
    ]
    routed: tuple[str, ...] = (r"Route: <sip:127[^>]*;rr=phone>",) if record_route else ()
    if proxy:  # the proxy's own Via on top: it relayed the request
        routed += (rf"Via: SIP/2\.0/[A-Z]+ {re.escape(proxy)}",)
    bye = _BYE + "[routes]\n" if proxy else _BYE
    if role == "b":
        steps += [_recv("ACK", REAL_MEDIA, *sdp_checks), _stream(media)]
    else:
        steps.append(_recv("ACK", BLACK_HOLE, *ack_checks, *routed))
        if role == "a_dropped":
            steps += [_recv("BYE", *routed), _response("200 OK", tagged=False)]
            return _wrap(steps)
        if role == "a_hangs_up_early":
            steps += [
                f'  <pause milliseconds="{talk_ms}"/>\n',
                _send(bye),
                '  <recv response="200"/>\n',
            ]
            return _wrap(steps)
        steps += [
            _recv("INVITE", REAL_MEDIA, *sdp_checks, *routed),
            _response("200 OK", tagged=False, sdp=True, media_port=media_port, stream=stream),
            _recv("ACK", *routed),
            _stream(media),
        ]
    if hangup == "phone":
        steps += [
            f'  <pause milliseconds="{talk_ms}"/>\n',
            _send(bye),
            '  <recv response="200"/>\n',
        ]
    else:
        steps += [_recv("BYE", *routed), _response("200 OK", tagged=False)]
    return _wrap(steps)


def _pause(milliseconds: int) -> str:
    # No pause element at all for 0: sipp stops recognising a retransmitted INVITE as such
    # once a pause has run, and fails the call on it instead of answering it again.
    return f'  <pause milliseconds="{milliseconds}"/>\n' if milliseconds else ""


def _wrap(steps: list[str]) -> str:
    body = "".join(steps)
    if 'assign_to="checked"' in body:  # referenced twice at least, or sipp refuses it
        body += '  <nop><action><assignstr assign_to="checked" value=""/></action></nop>\n'
    head = '<?xml version="1.0" encoding="ISO-8859-1" ?>'
    return f'{head}\n<scenario name="phone">\n{body}</scenario>\n'


def sipp_path() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise RuntimeError("sipp is not installed (make test installs Debian's sip-tester)")
    return path


def bound(host: str, port: int, transport: str) -> bool:
    """Whether a socket is bound at host:port (read from /proc: no packet sent)."""
    table = Path("/proc/net/udp" if transport == "udp" else "/proc/net/tcp").read_text()
    wanted = "".join(f"{int(part):02X}" for part in reversed(host.split("."))) + f":{port:04X}"
    return any(line.split()[1] == wanted for line in table.splitlines()[1:])


@dataclass
class Phone:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path

    async def finished(self) -> int:
        """sipp's exit status: 0 when every expected call completed its scenario (sipp's own
        -timeout bounds the wait)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.process.wait)

    def output(self) -> str:
        out = (self.workdir / "sipp.log").read_text(errors="replace")
        errors = "".join(p.read_text(errors="replace") for p in self.workdir.glob("*errors*"))
        return out[-3000:] + errors[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


async def all_done(phones: Iterable[Phone]) -> None:
    """Wait for each phone's own verdict: every one must have completed its scenario."""
    for phone in phones:
        status = await phone.finished()
        assert status == 0, f"phone {phone.host} failed ({status}):\n{phone.output()}"


async def start_phone(
    host: str,
    scenario_xml: str,
    *,
    calls: int | None = 1,
    transport: Literal["udp", "tcp"] = "udp",
    port: int = 5060,
    timeout_seconds: int | None = 60,
    extra_args: tuple[str, ...] = (),
    workdir: Path | None = None,
) -> Phone:
    """One sipp process playing the phone at host:port. `calls` None: any number of calls;
    `timeout_seconds` None: runs until stopped. `extra_args`: more sipp options (traces);
    `workdir`: where sipp runs and writes its files (default: a new temp folder)."""
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="phone-"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "phone.xml").write_text(scenario_xml)
    control = free_port_block(3)
    media = control + 1  # sipp binds media and media+2 (RTP, RTCP) on the phone's address
    command = [
        sipp_path(),
        "-sf",
        "phone.xml",
        "-i",
        host,
        "-p",
        str(port),
        "-t",
        "u1" if transport == "udp" else "t1",
        *(("-m", str(calls)) if calls is not None else ()),
        *(("-timeout", f"{timeout_seconds}s", "-timeout_error") if timeout_seconds else ()),
        "-nostdin",
        "-ci",
        "127.0.0.1",
        "-cp",
        str(control),
        "-mp",
        str(media),
        "-mi",
        host,
        "-buff_size",
        str(4 * 1024 * 1024),
        "-max_recv_loops",
        "10000",
        "-trace_err",
        *extra_args,
    ]
    with (workdir / "sipp.log").open("wb") as log:
        process = subprocess.Popen(  # noqa: ASYNC220  # starts at once; nothing to await
            command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT
        )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60  # a bound on the start, generous on a loaded machine
    while not bound(host, port, transport):
        if process.poll() is not None or loop.time() > deadline:
            log_text = (workdir / "sipp.log").read_text(errors="replace")
            raise RuntimeError(f"sipp did not start on {host}:{port}: {log_text[-2000:]}")
        await asyncio.sleep(0.02)
    return Phone(host, port, process, workdir)


def free_phone_port(*hosts: str) -> int:
    """A port free for UDP and TCP on every phone address."""
    while True:
        port = free_port_block(1)
        try:
            for host in hosts:
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(socket.AF_INET, kind) as sock:
                        sock.bind((host, port))
            return port
        except OSError:
            continue


# --- phones that take any number of calls and end each one themselves (bench/chaos.py) ---------

ChaosBehaviour = Literal["a", "b", "busy", "no_answer"]
# sipp options for patient_scenario phones: do not abort a call on a message out of turn.
PATIENT_ARGS = ("-default_behaviors", "all,-abortunexp")


def _wait(request: str, label: str, timeout: str = "{patience}") -> str:
    """Wait for `request`, or go on at `label` after `timeout` ms."""
    return f'  <recv request="{request}" timeout="{timeout}" ontimeout="{label}"/>\n'


def _cancelled(label: str) -> str:
    """While ringing: a CANCEL is answered (200, then 487 to the INVITE, RFC 3261 9.2), else
    the phone goes on at `label` when the ring time is over."""
    cancelled = _RESPONSE_HEAD.format(
        status="487 Request Terminated", to=_TAGGED_TO, cseq="CSeq: [$invite_cseq] INVITE"
    )
    return "".join(
        [
            _wait("CANCEL", label, "{ring}"),
            _response("200 OK", tagged=False),
            _send(cancelled),
            _wait("ACK", "end"),
            '  <nop next="end"/>\n',
        ]
    )


def patient_scenario(
    behaviour: ChaosBehaviour, *, ring_ms: int = 100, talk_ms: int = 300, patience_ms: int = 3000
) -> str:
    """A phone for runs where the controller may die at any moment (bench/chaos.py): it takes
    any number of calls and every wait is bounded, so each call ends at the phone by itself.
    Run it with PATIENT_ARGS: a message out of turn (an INVITE sent again because the phone
    answered late, a CANCEL crossing the 200 OK) is then ignored, not a reason to abort the
    call (sipp recognises a retransmission by itself only until a timed wait has run).

    - "a": rings `ring_ms` (a CANCEL stops it), answers with an offer, takes the ACK, then
      either a BYE (B failed, or another A number won) or the re-INVITE with B's media; then
      waits for the BYE. A wait longer than `patience_ms` ends in the phone's own BYE.
    - "b": rings, answers with an offer, talks `talk_ms` and hangs up (a BYE from the
      controller first is answered).
    - "busy": 486 at once. "no_answer": rings until CANCELled (or `patience_ms`, then 480).
    """
    captures = () if behaviour == "busy" else ("dialog", "cseq")
    steps = [_recv("INVITE", captures=captures)]
    if behaviour == "busy":
        steps += [
            _response("486 Busy Here"),
            _wait("ACK", "end"),
            '  <label id="end"/>\n',
        ]
        return _finish(steps, ring_ms, patience_ms)
    steps += [_response("100 Trying", tagged=False), _response("180 Ringing")]
    if behaviour == "no_answer":
        ring_ms = patience_ms  # rings until CANCELled, or gives up
        unavailable = _RESPONSE_HEAD.format(
            status="480 Temporarily Unavailable",
            to=_TAGGED_TO,
            cseq="CSeq: [$invite_cseq] INVITE",
        )
        steps += [
            _cancelled("unanswered"),
            '  <label id="unanswered"/>\n',
            _send(unavailable),
            _wait("ACK", "end"),
            '  <nop next="end"/>\n',
        ]
        return _finish([*steps, *_hang_up_and_end()], ring_ms, patience_ms)
    steps += [
        _cancelled("answer"),
        '  <label id="answer"/>\n',
        _response("200 OK", sdp=True),
        _wait("ACK", "hang_up"),
    ]
    if behaviour == "a":
        steps += [
            # The timeout of a wait is the first step's, optional or not.
            '  <recv request="BYE" optional="true" next="bye" timeout="{patience}" '
            'ontimeout="hang_up"/>\n',
            _wait("INVITE", "hang_up"),
            _response("200 OK", tagged=False, sdp=True),
            _wait("ACK", "hang_up"),
            _wait("BYE", "hang_up"),
        ]
    else:
        steps.append(_wait("BYE", "hang_up", str(talk_ms)))
    steps += [
        '  <label id="bye"/>\n',
        _response("200 OK", tagged=False),
        '  <nop next="end"/>\n',
    ]
    return _finish([*steps, *_hang_up_and_end()], ring_ms, patience_ms)


def _hang_up_and_end() -> list[str]:
    return [
        '  <label id="hang_up"/>\n',
        _send(_BYE),
        _wait("200", "end").replace("request=", "response="),
        '  <label id="end"/>\n',
    ]


def _finish(steps: list[str], ring_ms: int, patience_ms: int) -> str:
    body = "".join(steps).replace("{ring}", str(ring_ms)).replace("{patience}", str(patience_ms))
    head = '<?xml version="1.0" encoding="ISO-8859-1" ?>'
    return f'{head}\n<scenario name="phone">\n{body}</scenario>\n'
