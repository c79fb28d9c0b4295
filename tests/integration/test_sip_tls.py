"""SIP over TLS (DIALER_SIP_TRANSPORT=tls) against a real TLS peer: Kamailio with Debian's TLS
module in front of the sipp phones (Debian's sipp has no TLS), with a CA and certificates
made by the test.

The dialer speaks TLS to the proxy (digest auth, Record-Route); the proxy relays to the phones
over UDP. The dialer has a certificate of its own too, so the proxy can open a TLS connection
to the dialer's SIPS Contact for a phone's BYE. Evidence from outside the dialer: Kamailio's
log names the protocol each of our requests arrived on, and each phone's sipp exits 0 only if
its whole call went as its scenario says.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.dialer.__main__ import open_backend
from services.dialer.backend import CallPlan, CallReport
from services.dialer.settings import DialerSettings
from services.dialer.sip import tls
from services.dialer.sip.backend import SipBackend
from services.dialer.sip.leg import Account
from services.dialer.sip.message import Address
from services.dialer.sip.transport import TlsTransport
from services.dialer.sip.ua import Route
from tests.integration.test_sip_callbacks import LONG_RING_TIMEOUT, A, B, legs
from tests.integration.test_sip_proxy import ACCOUNT, NUMBERS
from tests.sip.certs import Issued, TestCa
from tests.sip.phones import Phone, all_done, bound, free_phone_port, scenario, start_phone
from tests.sip.proxy import PROXY_HOST, REALM, Proxy, ProxyTls, start_proxy

DIALER_HOST = "127.0.0.1"
LOCAL_PROXY_HOST = "127.0.0.1"  # the proxy of the tests that dial it as "localhost"


class Pki:
    """The CA the dialer trusts, and a CA it does not, with certificates from each."""

    def __init__(self, folder: Path) -> None:
        self.trusted = TestCa(folder, "trusted CA")
        self.untrusted = TestCa(folder, "untrusted CA")
        # The proxy is dialled by its address: the certificate names it as an IP address.
        self.proxy = self.trusted.issue("proxy", dns=("proxy.callback.test",), ips=(PROXY_HOST,))
        self.proxy_by_stranger = self.untrusted.issue("proxy", ips=(PROXY_HOST,))
        self.proxy_wrong_name = self.trusted.issue(
            "other", dns=("other.test",), ips=("127.0.0.99",)
        )
        # A proxy dialled by name: "localhost" is the one name that resolves on loopback
        # without touching /etc/hosts; its Record-Route names its address, hence both.
        self.proxy_by_name = self.trusted.issue(
            "localhost", dns=("localhost",), ips=(LOCAL_PROXY_HOST,)
        )
        self.dialer = self.trusted.issue("dialer", ips=(DIALER_HOST,))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


class TlsLab:
    """A TLS proxy with one certificate, its phones (UDP) and the dialer of one test."""

    def __init__(self, pki: Pki) -> None:
        self.pki = pki
        self.phone_port = free_phone_port(A, B)
        self.proxy_host = PROXY_HOST
        self.proxy_port = self.tls_port = 0
        self.proxy: Proxy | None = None
        self.phones: list[Phone] = []
        self.backends: list[SipBackend] = []

    async def start_proxy(
        self, certificate: Issued, host: str = PROXY_HOST, *, accept_aliases: bool = False
    ) -> Proxy:
        phones = {number: (phone, self.phone_port) for number, phone in NUMBERS.items()}
        self.proxy_host = host
        self.proxy_port, self.tls_port = free_phone_port(host), free_phone_port(host)
        self.proxy = await start_proxy(
            self.proxy_port,
            phones,
            transport="udp",
            account=ACCOUNT,
            host=host,
            tls=ProxyTls(
                self.tls_port, certificate.cert_file, certificate.key_file, accept_aliases
            ),
        )
        return self.proxy

    async def phone(self, host: str, xml: str) -> Phone:
        phone = await start_phone(host, xml, transport="udp", port=self.phone_port)
        self.phones.append(phone)
        return phone

    async def call(
        self, dial: str = "", handshake_timeout: float | None = None, listener: bool = True
    ) -> CallReport:
        """Place one callback A 1001 -> B 2001 through the proxy's TLS port, dialled as `dial`
        (default: its address); then wait for every phone's own verdict."""
        proxy = Address(dial or self.proxy_host, self.tls_port)
        backend = await SipBackend.open(
            transport="tls",
            listen=f"{DIALER_HOST}:0",
            advertise="",
            routes=tuple(Route(number, proxy, REALM) for number in NUMBERS),
            accounts={0: Account(*ACCOUNT)},
            assert_identity=False,
            socket_buffer_bytes=1 << 20,
            ring_timeout_seconds=LONG_RING_TIMEOUT,
            max_call_seconds=30.0,
            # What DIALER_SIP_TLS_CA_FILE / _CERT_FILE / _KEY_FILE make (services/dialer).
            tls_client=tls.client_context(
                str(self.pki.trusted.ca_file),
                str(self.pki.dialer.cert_file) if listener else "",
                str(self.pki.dialer.key_file) if listener else "",
            ),
            tls_server=tls.server_context(
                str(self.pki.dialer.cert_file), str(self.pki.dialer.key_file)
            )
            if listener
            else None,
        )
        if handshake_timeout is not None:
            assert isinstance(backend.ua.transport, TlsTransport)
            backend.ua.transport.handshake_timeout = handshake_timeout
        self.backends.append(backend)

        async def connected() -> None:
            pass

        plan = CallPlan(call_uuid="tls1", a_numbers=("1001",), b_number="2001")
        report = await backend.place_call(plan, connected)
        await all_done(self.phones)
        return report

    def requests(self, method: str) -> list[str]:
        """Kamailio's `REQ <method> <call-id> <cseq> <protocol>` lines."""
        assert self.proxy is not None
        return self.proxy.requests(method)


@pytest.fixture
async def lab(pki: Pki) -> AsyncIterator[TlsLab]:
    lab = TlsLab(pki)
    yield lab
    for phone in lab.phones:
        phone.stop()
    for backend in lab.backends:
        backend.close()
    if lab.proxy is not None:
        lab.proxy.stop()


@pytest.mark.parametrize("by_name", [False, True], ids=["by-address", "by-name"])
async def test_a_callback_connects_over_tls(lab: TlsLab, by_name: bool) -> None:
    if by_name:
        await lab.start_proxy(lab.pki.proxy_by_name, LOCAL_PROXY_HOST)
    else:
        await lab.start_proxy(lab.pki.proxy)
    await lab.phone(A, scenario("answer", "a", proxy=lab.proxy_host))
    await lab.phone(B, scenario("answer", "b", hangup="phone", proxy=lab.proxy_host))
    report = await lab.call("localhost" if by_name else "")
    assert report.outcome == "connected", report
    a, b = legs(report)["1001"], legs(report)["2001"]
    assert a.result == b.result == "answered"
    assert a.hangup_by == b.hangup_by == "b"
    assert a.teardown_confirmed and b.teardown_confirmed
    # The proxy's view: each request of ours came over TLS: both INVITEs (each challenged
    # once, then authenticated), A's re-INVITE, the ACKs of the 2xx (those of the 407s stop
    # at Kamailio's sl module, unlogged) and our BYE to A. B's BYE is the phone's (UDP); the
    # proxy took it on to our SIPS Contact over TLS, to our listener: B's sipp exits 0 only
    # after the 200 we sent back that way.
    assert lab.proxy is not None
    requests = [
        line.split(" REQ ", 1)[1].split()
        for line in lab.proxy.log().splitlines()
        if " REQ " in line
    ]
    ours = [
        (method, protocol)
        for method, call_id, _, protocol in requests
        if not (method == "BYE" and "-b-" in call_id)
    ]
    assert sorted(ours) == sorted(
        [("INVITE", "tls")] * 5 + [("ACK", "tls")] * 3 + [("BYE", "tls")]
    ), requests
    assert next(r for r in requests if r[0] == "BYE" and "-b-" in r[1])[3] == "udp", requests


async def test_an_untrusted_certificate_is_refused_with_a_clear_reason(lab: TlsLab) -> None:
    await lab.start_proxy(lab.pki.proxy_by_stranger)
    report = await lab.call()  # no phone: no call may get past the handshake
    assert report.outcome == "error", report
    [a] = report.legs
    assert a.result == "error"
    assert a.final_response.startswith("503 Transport Error: TLS 127.0.0.10:"), a.final_response
    assert "certificate verify failed: unable to get local issuer certificate" in report.comment
    assert lab.requests("INVITE") == []  # the proxy never saw a request


async def test_without_a_certificate_the_phones_bye_comes_back_on_our_connection(
    lab: TlsLab,
) -> None:
    # No DIALER_SIP_TLS_CERT_FILE: no listener, so our Via carries `alias` (RFC 5923) and a
    # proxy that honours it (Kamailio: tcp_accept_aliases) sends B's BYE on the connection
    # we opened. Without the alias Kamailio opens a new connection to our Contact, which
    # nobody answers: with the alias taken out of Via this test fails, B getting a 477.
    await lab.start_proxy(lab.pki.proxy, accept_aliases=True)
    await lab.phone(A, scenario("answer", "a", proxy=lab.proxy_host))
    await lab.phone(B, scenario("answer", "b", hangup="phone", proxy=lab.proxy_host))
    report = await lab.call(listener=False)
    assert report.outcome == "connected", report
    assert {leg.hangup_by for leg in report.legs} == {"b"}
    assert all(leg.teardown_confirmed for leg in report.legs), report


@pytest.mark.parametrize(
    ("dial", "host", "reason"),
    [
        ("", PROXY_HOST, "IP address mismatch, certificate is not valid for '127.0.0.10'"),
        (
            "localhost",
            LOCAL_PROXY_HOST,
            "Hostname mismatch, certificate is not valid for 'localhost'",
        ),
    ],
    ids=["by-address", "by-name"],
)
async def test_a_certificate_for_another_name_is_refused(
    lab: TlsLab, dial: str, host: str, reason: str
) -> None:
    await lab.start_proxy(lab.pki.proxy_wrong_name, host)  # the trusted CA's, for other.test
    report = await lab.call(dial)
    assert report.outcome == "error", report
    assert f"certificate verify failed: {reason}" in report.comment, report
    assert lab.requests("INVITE") == []


def test_verification_cannot_be_left_off() -> None:
    context = tls.client_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


async def test_tls_to_a_plain_sip_port_ends_the_call_naming_the_handshake(
    lab: TlsLab,
) -> None:
    # A misconfiguration: the proxy's plain SIP port given for its TLS port. Kamailio takes
    # our ClientHello for a broken SIP message and keeps silent; the handshake is given up
    # (its timeout scaled from 10 s to 0.5 s here) and the call ends saying so, before the
    # INVITE's Timer B (32 s) could turn it into a bare 408.
    await lab.start_proxy(lab.pki.proxy)
    lab.tls_port = lab.proxy_port
    report = await lab.call(handshake_timeout=0.5)
    assert report.outcome == "error", report
    [a] = report.legs
    assert a.final_response.startswith("503 Transport Error: TLS 127.0.0.10:"), report
    assert "SSL handshake is taking longer than 0.5 seconds" in a.final_response, report


async def test_the_dialer_settings_make_a_tls_backend(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DIALER_SIP_TRANSPORT=tls as `python -m services.dialer` reads it: a proxy without a
    port is dialled on 5061; our certificate turns the listener on; a CA file that cannot
    be read stops the start naming it."""
    env = {
        "DATABASE_URL": "postgresql://x@localhost/db",
        "DIALER_BACKEND": "sip",
        "DIALER_SIP_TRANSPORT": "tls",
        "DIALER_SIP_PROXY": PROXY_HOST,
        "DIALER_SIP_LISTEN": f"{DIALER_HOST}:0",
        "DIALER_SIP_TLS_CA_FILE": str(pki.trusted.ca_file),
        "DIALER_SIP_TLS_CERT_FILE": str(pki.dialer.cert_file),
        "DIALER_SIP_TLS_KEY_FILE": str(pki.dialer.key_file),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    backend = await open_backend(DialerSettings())  # type: ignore[call-arg]
    assert isinstance(backend, SipBackend)
    try:
        assert backend.ua.routes[0].proxy == Address(PROXY_HOST, 5061)
        local = backend.ua.transport.local
        assert backend.ua.transport.name == "TLS" and bound(local.host, local.port, "tcp")
        assert backend.ua.contact() == f"<sips:callback@{local.host}:{local.port}>"
    finally:
        backend.close()
    monkeypatch.setenv("DIALER_SIP_TLS_CA_FILE", "/nonexistent/ca.pem")
    with pytest.raises(tls.TlsFileError, match=r"CA file /nonexistent/ca\.pem: No such file"):
        await open_backend(DialerSettings())  # type: ignore[call-arg]
