"""TLS for SIP (RFC 3261 26.2.1, RFC 5630): the contexts of the dialer's connections.

Client side: the peer's certificate must chain to a trusted CA (the system's store, or only
the bundle the operator names) and carry the name we dialled (a DNS name, or an IP address
as an IP subject alternative name): RFC 5922 4 asks for the domain we connect to. Python's
`create_default_context` does both and refuses anything below TLS 1.2.

Server side (optional): with a certificate of its own, the dialer also listens for TLS, so
that a proxy can open a connection to our Contact for an in-dialog request (a phone's BYE);
the same certificate is offered as a client certificate to trunks that ask for one.
"""

from __future__ import annotations

import ssl


class TlsFileError(ValueError):
    """A CA, certificate or key file that cannot be used: the start stops, naming it."""


def client_context(ca_file: str = "", cert_file: str = "", key_file: str = "") -> ssl.SSLContext:
    """Verification on, always: CERT_REQUIRED and check_hostname (create_default_context).
    `ca_file` replaces the system's trust store rather than adding to it, so that a trunk's
    private CA is trusted for SIP without being trusted for anything else."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file or None)
    except OSError as err:  # ssl.SSLError too: not PEM, no certificate in it
        raise TlsFileError(f"SIP TLS CA file {ca_file}: {describe(err)}") from err
    if cert_file:
        _load_chain(context, cert_file, key_file)
    return context


def server_context(cert_file: str, key_file: str = "") -> ssl.SSLContext:
    """Our listener's context. Clients are not asked for a certificate: like UDP and TCP,
    an incoming request is trusted only as far as it names one of our dialogs."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load_chain(context, cert_file, key_file)
    return context


def _load_chain(context: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    try:
        context.load_cert_chain(cert_file, key_file or None)
    except OSError as err:
        files = f"{cert_file} / {key_file}" if key_file else cert_file
        raise TlsFileError(f"SIP TLS certificate {files}: {describe(err)}") from err


def describe(err: OSError) -> str:
    """A connection failure as one readable line: what the call record and logs show."""
    if isinstance(err, ssl.SSLCertVerificationError):
        # e.g. "Hostname mismatch, certificate is not valid for 'sip.example'." or
        # "unable to get local issuer certificate" (an untrusted CA).
        return f"certificate verify failed: {err.verify_message}".rstrip(".")
    if isinstance(err, ssl.SSLError):
        # e.g. TLSV1_ALERT_UNKNOWN_CA: the peer refused our certificate.
        return f"TLS handshake failed: {err.reason or err}"
    if isinstance(err, TimeoutError):
        return "TLS handshake timed out"
    return str(err.strerror or err)
