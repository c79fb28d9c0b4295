"""The dialer's SIP settings, as an operator writes them in the environment."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from services.dialer.settings import DialerSettings

BASE = {"DATABASE_URL": "postgresql://x@localhost/db"}


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> DialerSettings:
    for name, value in {**BASE, **env}.items():
        monkeypatch.setenv(name, value)
    return DialerSettings()  # type: ignore[call-arg]


def test_sip_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    routes = [{"pattern": "+44*", "proxy": "uk-trunk:5080", "domain": "uk.example"}]
    accounts = {"0": {"username": "main", "password": "p0"}}
    loaded = settings(
        monkeypatch,
        DIALER_BACKEND="sip",
        DIALER_SIP_PROXY="pbx.example:5060",
        DIALER_SIP_ROUTES=json.dumps(routes),
        DIALER_SIP_ACCOUNTS=json.dumps(accounts),
        DIALER_SIP_TRANSPORT="tcp",
    )
    assert loaded.sip_routes[0].proxy == "uk-trunk:5080"
    assert loaded.sip_accounts[0].password == "p0"
    assert loaded.sip_transport == "tcp" and loaded.sip_calls_per_second == 100


def test_accounts_by_extension_are_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accounts keyed by extension_id alone were any tenant's: they live per tenant now."""
    accounts = {
        "0": {"username": "main", "password": "p0"},
        "7": {"username": "x", "password": "p"},
    }
    with pytest.raises(ValidationError, match=r"services\.api\.admin account add"):
        settings(
            monkeypatch,
            DIALER_BACKEND="sip",
            DIALER_SIP_PROXY="pbx.example:5060",
            DIALER_SIP_ACCOUNTS=json.dumps(accounts),
        )


def test_sip_without_a_destination_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="DIALER_SIP_PROXY"):
        settings(monkeypatch, DIALER_BACKEND="sip")


def test_unknown_transport_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError):
        settings(
            monkeypatch, DIALER_BACKEND="sip", DIALER_SIP_PROXY="p:5060", DIALER_SIP_TRANSPORT="tls"
        )


def test_the_longest_call_rings_a_then_b_then_talks(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = settings(monkeypatch, DIALER_RING_TIMEOUT_SECONDS="30", DIALER_MAX_CALL_SECONDS="600")
    assert loaded.longest_call_seconds == 2 * 30 + 600


def test_random_simulated_phones_and_their_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    rules = [{"pattern": "*", "behaviours": {"answer": 3, "busy": 1}, "talk_seconds_max": 5}]
    loaded = settings(
        monkeypatch, DIALER_SIMULATED_RULES=json.dumps(rules), DIALER_SIMULATED_SEED="42"
    )
    assert loaded.simulated_seed == 42
    assert loaded.simulated_rules[0].behaviours == {"answer": 3, "busy": 1}
    assert loaded.simulated_rules[0].talk_seconds_max == 5
