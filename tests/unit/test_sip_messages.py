"""SIP message syntax, digest responses and the SDP the controller writes."""

from __future__ import annotations

import base64

import pytest

from services.dialer.sip import digest
from services.dialer.sip.message import (
    Address,
    ParseError,
    address_of,
    number_user,
    params,
    parse,
    quoted_string,
    split_list,
    stream_frame,
    uri_of,
)
from services.dialer.sip.sdp import Origin, black_hole_answer, media_lines, with_origin

RESPONSE = (
    b"SIP/2.0 200 OK\r\n"
    b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc;rport=5060;received=10.0.0.9\r\n"
    b'f: "Sales, Inc" <sip:100@pbx>;tag=ours\r\n'
    b"t: <sip:+1555@pbx>;tag=theirs\r\n"
    b"i: call-1@10.0.0.1\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"m: <sip:phone@10.0.0.2:5080;transport=tcp>\r\n"
    b"Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>\r\n"
    b"Record-Route: <sip:p3.example;lr>\r\n"
    b"Subject: folded\r\n  line\r\n"
    b"l: 4\r\n"
    b"\r\n"
    b"v=0\r\nextra"
)


def test_response_with_compact_headers() -> None:
    message = parse(RESPONSE)
    assert (message.status, message.reason) == (200, "OK")
    assert message.call_id == "call-1@10.0.0.1"
    assert message.cseq == (7, "INVITE")
    assert message.branch == "z9hG4bKabc"
    assert params(message.get("From")) == {"tag": "ours"}
    assert params(message.get("To"))["tag"] == "theirs"
    assert uri_of(message.get("Contact")) == "sip:phone@10.0.0.2:5080;transport=tcp"
    assert message.get_all("Record-Route") == [
        "<sip:p1.example;lr>",
        "<sip:p2.example;lr>",
        "<sip:p3.example;lr>",
    ]
    assert message.get("Subject") == "folded line"
    assert message.body == b"v=0\r"  # Content-Length decides, not the datagram's end


def test_encode_parse_round_trip_sets_content_length() -> None:
    message = parse(RESPONSE)
    message.body = b"hello"
    again = parse(message.encode())
    assert again.body == b"hello" and again.get("Content-Length") == "5"
    assert again.get_all("Record-Route") == message.get_all("Record-Route")


def test_request_line_and_errors() -> None:
    request = parse(b"BYE sip:x@h SIP/2.0\r\nCall-ID: 1\r\nCSeq: 2 BYE\r\n\r\n")
    assert (request.method, request.uri, request.cseq) == ("BYE", "sip:x@h", (2, "BYE"))
    for bad in (b"garbage", b"HELLO\r\n\r\n", b"SIP/2.0 abc OK\r\n\r\n", b"X y HTTP/1.1\r\n\r\n"):
        with pytest.raises(ParseError):
            parse(bad)


def test_stream_framing_waits_for_the_whole_body() -> None:
    data = b"\r\nSIP/2.0 100 Trying\r\nContent-Length: 3\r\n\r\nab"
    assert stream_frame(data) is None
    framed = stream_frame(data + b"cNEXT")
    assert framed is not None
    message, rest = framed
    assert parse(message).body == b"abc" and rest == b"NEXT"


def test_lists_addresses_and_uris() -> None:
    assert split_list('"a, b" <sip:x>, <sip:y;p=1,2>') == ['"a, b" <sip:x>', "<sip:y;p=1,2>"]
    assert address_of("sip:+1555@10.0.0.2:5080;transport=tcp") == Address("10.0.0.2", 5080)
    assert address_of("sip:pbx.example") == Address("pbx.example", 5060)
    # TLS without a port: 5061 (RFC 3261 19.1.2), for a SIPS URI or Kamailio's transport=tls.
    assert address_of("sips:pbx.example") == Address("pbx.example", 5061)
    assert address_of("SIPS:+1555@10.0.0.2;lr") == Address("10.0.0.2", 5061)
    assert address_of("sip:10.0.0.3;transport=TLS;r2=on;lr") == Address("10.0.0.3", 5061)
    assert address_of("sips:pbx.example:5081") == Address("pbx.example", 5081)
    assert uri_of("sip:x@y;tag=1") == "sip:x@y"


def test_quoted_names_with_escapes_brackets_and_commas() -> None:
    # A display name may hold `<`, `,` and an escaped `"` or `\` (RFC 3261 25.1 quoted-pair).
    sales = r'"Sales <east>, \"A\" \\" <sip:100@pbx>;tag=1'
    assert uri_of(sales) == "sip:100@pbx"
    assert params(sales) == {"tag": "1"}
    assert split_list(rf"{sales}, <sip:y>") == [sales, "<sip:y>"]
    assert split_list(r'"ends in \\", <sip:y>') == [r'"ends in \\"', "<sip:y>"]


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("Sales", '"Sales"'),
        ('say "hi"', r'"say \"hi\""'),
        ("back\\slash\\", r'"back\\slash\\"'),
        ("Zoë <Café>; x=1, y", '"Zoë <Café>; x=1, y"'),
        # Never a line break, whatever the name: CR and LF cannot be escaped (25.1).
        ('x"\r\nP-Charge-Info: <sip:1@t>\r\nX: "', r'"x\"  P-Charge-Info: <sip:1@t>  X: \""'),
        ("tab\tnul\x00del\x7fnel\x85ls\u2028ps\u2029", '"tab nul del nel ls ps "'),
    ],
)
def test_quoted_string_escapes_quotes_and_backslashes_and_never_breaks_a_line(
    name: str, quoted: str
) -> None:
    assert quoted_string(name) == quoted


@pytest.mark.parametrize(
    ("number", "user"),
    [("+15550001111", "+15550001111"), ("*72#", "*72%23"), ("##1", "%23%231"), ("0", "0")],
)
def test_number_user_part_escapes_hash(number: str, user: str) -> None:
    # RFC 3261 19.1.2: `#` is not allowed unescaped in the user part.
    assert number_user(number) == user


@pytest.mark.parametrize(
    "number",
    ["", "+", "1@evil.example", "1;user=ip", "1?X=y", "1>\r\nX: y", "12 34", "\uff11\uff12", "1+2"],
)
def test_number_user_part_refuses_what_is_not_a_phone_number(number: str) -> None:
    with pytest.raises(ValueError, match="not a phone number"):
        number_user(number)


def test_digest_matches_rfc_2617_example() -> None:
    # RFC 2617 3.5: Mufasa / "Circle Of Life", response 6629fae49393a05397450978507c4ef1.
    challenge = digest.parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert digest.supported(challenge)
    header = digest.authorization(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle Of Life",
        cnonce="0a4f113b",
    )
    pairs = (item.split("=", 1) for item in split_list(header.removeprefix("Digest ")))
    fields = {name: value for name, value in pairs}
    assert fields["qop"] == "auth" and fields["nc"] == "00000001"
    assert fields["response"] == '"6629fae49393a05397450978507c4ef1"'
    assert fields["opaque"] == '"5ccc069c403ebaf9f0171e9517f40e41"'


def test_digest_without_qop_uses_rfc_2069_form() -> None:
    challenge = digest.parse_challenge('Digest realm="r", nonce="n"')
    header = digest.authorization(
        challenge, method="INVITE", uri="sip:x@y", username="u", password="p"
    )
    assert "qop" not in header and "cnonce" not in header
    assert not digest.supported(digest.parse_challenge('Digest realm="r", nonce="n", algorithm=X'))
    assert digest.parse_challenge('Basic realm="r"') == {}


OFFER = (
    b"v=0\r\no=phone 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\nm=video 0 RTP/AVP 31\r\n"
)


def test_black_hole_answer_accepts_each_stream_inactive() -> None:
    origin = Origin(42, "10.0.0.1")
    answer = black_hole_answer(OFFER, origin.next()).decode()
    assert "o=callback 42 1 IN IP4 10.0.0.1" in answer
    assert "c=IN IP4 0.0.0.0" in answer
    assert media_lines(answer.encode()) == ["m=audio 9 RTP/AVP 0", "m=video 0 RTP/AVP 31"]
    assert answer.count("a=inactive") == 1  # the refused video stream stays refused


def test_new_offer_keeps_our_origin_and_the_m_line_count() -> None:
    origin = Origin(42, "10.0.0.1")
    origin.next()
    single = b"v=0\r\no=b 9 9 IN IP4 10.0.0.3\r\nc=IN IP4 10.0.0.3\r\nm=audio 5000 RTP/AVP 0\r\n"
    offer = with_origin(single, origin.next(), previous_media=2).decode()
    assert "o=callback 42 2 IN IP4 10.0.0.1" in offer and "o=b" not in offer
    assert media_lines(offer.encode()) == ["m=audio 5000 RTP/AVP 0", "m=audio 0 RTP/AVP 0"]


SRTP_OFFER = (
    b"v=0\r\no=phone 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=crypto:1 NOT_A_SUITE inline:AAAA\r\n"
    b"a=crypto:2 AES_CM_128_HMAC_SHA1_80 "
    b"inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4\r\n"
    b"m=audio 4002 RTP/SAVP 0\r\na=crypto:1 NOT_A_SUITE inline:AAAA\r\n"
)


def test_black_hole_answer_to_srtp_keys_a_known_suite_and_refuses_the_rest() -> None:
    answer = black_hole_answer(SRTP_OFFER, Origin(42, "10.0.0.1").next()).decode()
    assert media_lines(answer.encode()) == ["m=audio 9 RTP/SAVP 0", "m=audio 0 RTP/SAVP 0"]
    [crypto] = [line for line in answer.splitlines() if line.startswith("a=crypto:")]
    # RFC 4568 5.1.2: the offered tag and suite, a key of our own of that suite's length.
    tag, suite, key = crypto.removeprefix("a=crypto:").split(" ")
    assert (tag, suite) == ("2", "AES_CM_128_HMAC_SHA1_80")
    assert len(base64.b64decode(key.removeprefix("inline:"), validate=True)) == 30
    assert "PS1uQCVee" not in answer


def test_relayed_sdp_keeps_the_srtp_profile_and_crypto_lines_as_they_are() -> None:
    relayed = with_origin(SRTP_OFFER, Origin(42, "10.0.0.1").next()).decode()
    original = SRTP_OFFER.decode().splitlines()
    assert relayed.splitlines() == [
        "o=callback 42 1 IN IP4 10.0.0.1" if line.startswith("o=") else line for line in original
    ]
