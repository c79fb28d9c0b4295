"""SIP messages: parse and build the RFC 3261 text format (section 7).

Written by hand: no maintained Python SIP library exists (aiosip does not import on 3.11,
pjsua2 has no wheel, pyVoIP is GPLv3 and mis-parses tags). Only what a call controller needs:
start line, headers (compact forms expanded, RFC 3261 7.3.3), body by Content-Length, and the
name-addr / parameter syntax of From, To, Contact, Via and Record-Route (RFC 3261 25.1).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

# RFC 3261 7.3.3 compact header names.
_COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
}
_CANONICAL = {
    name.lower(): name
    for name in (
        "Call-ID",
        "CSeq",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "Record-Route",
        "P-Asserted-Identity",
        "Max-Forwards",
    )
}


class ParseError(ValueError):
    """The bytes are not a SIP message this controller can read."""


@functools.cache  # a few dozen distinct names; called for every header of every message
def canonical(name: str) -> str:
    name = name.strip()
    lower = name.lower()
    if lower in _COMPACT:
        return _COMPACT[lower]
    return _CANONICAL.get(lower) or "-".join(part.capitalize() for part in name.split("-"))


@dataclass
class Message:
    """A request (method and uri set) or a response (status set)."""

    method: str = ""
    uri: str = ""
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return bool(self.method)

    def get(self, name: str, default: str = "") -> str:
        # A plain loop: called for several headers of every message, it was the controller's
        # hottest Python function as a generator expression under next().
        name = canonical(name)
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, with comma-joined lists split (RFC 3261 7.3.1)."""
        name = canonical(name)
        values: list[str] = []
        for key, value in self.headers:
            if key == name:
                values.extend(split_list(value))
        return values

    def set(self, name: str, value: str) -> None:
        name = canonical(name)
        self.headers = [(key, val) for key, val in self.headers if key != name]
        self.headers.append((name, value))

    @property
    def call_id(self) -> str:
        return self.get("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        number, _, method = self.get("CSeq").partition(" ")
        try:
            return int(number), method.strip()
        except ValueError as err:
            raise ParseError(f"bad CSeq {self.get('CSeq')!r}") from err

    @property
    def branch(self) -> str:
        via = self.get("Via")
        # Every response is matched by its branch: the usual `;branch=` of a single Via is
        # cut out directly; anything else (spaces, other case, a comma list) goes to params().
        start = via.find(";branch=")
        simple = "," not in via and ">" not in via and via.lower().count(";branch=") == 1
        if start >= 0 and simple:
            start += 8
            end = via.find(";", start)
            value = via[start:] if end < 0 else via[start:end]
            if value and value == value.strip().strip('"'):
                return value
        return params(via).get("branch", "")

    def encode(self) -> bytes:
        if self.is_request:
            start = f"{self.method} {self.uri} SIP/2.0"
        else:
            start = f"SIP/2.0 {self.status} {self.reason}"
        lines = [start]
        lines.extend(f"{name}: {value}" for name, value in self.headers if name != "Content-Length")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def parse(data: bytes) -> Message:
    head, separator, rest = data.partition(b"\r\n\r\n")
    if not separator:
        raise ParseError("no end of headers")
    try:
        lines = head.decode("utf-8").split("\r\n")
    except UnicodeDecodeError as err:
        raise ParseError("headers are not UTF-8") from err
    message = _start_line(lines[0])
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and message.headers:  # folded continuation line
            name, value = message.headers[-1]
            message.headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise ParseError(f"bad header line {line!r}")
        message.headers.append((canonical(name), value.strip()))
    length = message.get("Content-Length")
    message.body = rest[: int(length)] if length.isdigit() else rest
    return message


def _start_line(line: str) -> Message:
    parts = line.split(" ", 2)
    if len(parts) < 2:
        raise ParseError(f"bad start line {line!r}")
    if parts[0] == "SIP/2.0":
        if not parts[1].isdigit():
            raise ParseError(f"bad status {line!r}")
        return Message(status=int(parts[1]), reason=parts[2] if len(parts) > 2 else "")
    if len(parts) != 3 or parts[2] != "SIP/2.0":
        raise ParseError(f"bad request line {line!r}")
    return Message(method=parts[0], uri=parts[1])


def stream_frame(buffer: bytes) -> tuple[bytes, bytes] | None:
    """Cut one message off a stream (TCP) buffer: (message, rest), or None while incomplete.
    RFC 3261 18.3: on streams Content-Length is mandatory and frames the body."""
    buffer = buffer.lstrip(b"\r\n")  # keep-alive CRLFs (RFC 5626 4.4.1)
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    match = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)", buffer[:end])
    total = end + 4 + (int(match.group(1)) if match else 0)
    if len(buffer) < total:
        return None
    return buffer[:total], buffer[total:]


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas in quotes and <...>."""
    items: list[str] = []
    depth, quoted, escaped, start = 0, False, False, 0
    for index, char in enumerate(value):
        if escaped:  # the character of a quoted-pair (RFC 3261 25.1), even a `"` or `\`
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char == "<":
            depth += 1
        elif not quoted and char == ">":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            items.append(value[start:index].strip())
            start = index + 1
    items.append(value[start:].strip())
    return [item for item in items if item]


def params(value: str) -> dict[str, str]:
    """The ;name=value parameters after a header's main part (outside <...>)."""
    closing = value.rfind(">")
    tail = value[closing + 1 :] if closing >= 0 else value
    result: dict[str, str] = {}
    for part in tail.split(";")[1:]:
        name, _, val = part.partition("=")
        result[name.strip().lower()] = val.strip().strip('"')
    return result


def uri_of(value: str) -> str:
    """The URI of a name-addr (`"Name" <sip:x@y>;tag=1`) or addr-spec (`sip:x@y;tag=1`)."""
    start = value.find("<", _after_display_name(value))
    if start >= 0:
        return value[start + 1 : value.find(">", start)]
    return value.split(";", 1)[0].strip()


def _after_display_name(value: str) -> int:
    """Where a name-addr's quoted display name ends (0 without one): a `<` inside the quotes
    is part of the name, not the start of the URI."""
    text = value.lstrip()
    if not text.startswith('"'):
        return 0
    index = len(value) - len(text) + 1
    while index < len(value):
        if value[index] == "\\":
            index += 2
        elif value[index] == '"':
            return index + 1
        else:
            index += 1
    return len(value)


# RFC 3261 25.1: quoted-pair = "\\" (%x00-09 / %x0B-0C / %x0E-7F). A CR or LF cannot be
# escaped at all, and a bare one would end the header line: the header injection a caller id
# name must never achieve. Every control character becomes a space (a name is cosmetic; the
# call is worth more than a tab in it), and so do C1 controls and the Unicode line and
# paragraph separators, which some parsers downstream count as line ends (Python's
# str.splitlines does).
_QUOTED_PAIR = re.compile(r'(["\\])')
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def quoted_string(text: str) -> str:
    """`text` as an RFC 3261 quoted-string (25.1), e.g. a From display name: `"` and `\\`
    escaped, line breaks and other control characters replaced by spaces. Whatever `text` is,
    the result is one quoted-string that unquotes to `text` (minus those) and nothing else.

    The api refuses such names already (services/api/validation.py); this holds even for a
    name that reached the dialer some other way (written into the database, an old task).
    """
    return '"' + _QUOTED_PAIR.sub(r"\\\1", _CONTROL.sub(" ", text)) + '"'


# The api's phone number syntax (services/api/validation.py): digits, `*` and `#`, a leading
# `+`. Anything else reaching a SIP URI could add parameters, headers or a host.
_NUMBER = re.compile(r"\+?[0-9*#]+")


def number_user(number: str) -> str:
    """A phone number as the user part of a SIP URI (RFC 3261 19.1.2, 25.1 `user`): `#` is
    not allowed there unescaped, so it is sent as %23; `+` and `*` are. ValueError for
    anything that is not a phone number."""
    if not _NUMBER.fullmatch(number):
        raise ValueError(f"not a phone number: {number!r}")
    return number.replace("#", "%23")


@dataclass(frozen=True)
class Address:
    host: str
    port: int


_URI = re.compile(r"^sips?:(?:[^@;]*@)?(\[[^\]]+\]|[^:;?>]+)(?::(\d+))?", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)  # a dialog's every request goes to the same few URIs
def address_of(uri: str) -> Address:
    """Where a SIP URI points: host and port (no DNS SRV; RFC 3263 lookups are not done).

    Without a port, a `sips:` URI or one with `transport=tls` (the parameter RFC 5630 3.1.3
    deprecates, but proxies still write in Record-Route) means 5061, any other 5060
    (RFC 3261 19.1.2, RFC 3263 4.2)."""
    match = _URI.match(uri.strip())
    if not match:
        raise ParseError(f"bad SIP URI {uri!r}")
    host = match.group(1).strip("[]")
    if match.group(2):
        return Address(host, int(match.group(2)))
    secure = uri.strip()[:5].lower() == "sips:" or uri_param(uri, "transport").lower() == "tls"
    return Address(host, 5061 if secure else 5060)


def uri_param(uri: str, name: str) -> str:
    for part in uri.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == name:
            return value.strip() or "1"
    return ""
