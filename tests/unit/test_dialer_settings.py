"""The dialer's SIP settings, as an operator writes them in the environment."""

from __future__ import annotations

import json
import traceback

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
    assert loaded.sip_accounts[0].password.get_secret_value() == "p0"
    assert "p0" not in repr(loaded) and "p0" not in str(loaded.sip_accounts)
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
            monkeypatch,
            DIALER_BACKEND="sip",
            DIALER_SIP_PROXY="p:5060",
            DIALER_SIP_TRANSPORT="sctp",
        )


def test_tls_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = settings(
        monkeypatch,
        DIALER_BACKEND="sip",
        DIALER_SIP_PROXY="trunk.example",
        DIALER_SIP_TRANSPORT="tls",
        DIALER_SIP_TLS_CA_FILE="/etc/trunk-ca.pem",
    )
    assert loaded.sip_transport == "tls" and loaded.sip_tls_ca_file == "/etc/trunk-ca.pem"
    assert loaded.sip_tls_cert_file == loaded.sip_tls_key_file == ""


def test_a_tls_key_without_its_certificate_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="DIALER_SIP_TLS_CERT_FILE"):
        settings(
            monkeypatch,
            DIALER_BACKEND="sip",
            DIALER_SIP_PROXY="p",
            DIALER_SIP_TRANSPORT="tls",
            DIALER_SIP_TLS_KEY_FILE="/etc/key.pem",
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


PASSWORD = "hunter2-not-for-logs"
DB_PASSWORD = "db-pw-not-for-logs"

# Malformed DIALER_SIP_ACCOUNTS as an operator might write them: none may print the password.
MALFORMED_ACCOUNTS = [
    '{"0": {"username": "main", "password": "PW"}',  # not JSON: a brace missing
    '{"0": {"username": "main", "password": "PW", "realm": "x"}}',
    '{"0": {"username": "main", "pass": "PW"}}',
    '{"0": ["main", "PW"]}',
    '{"0": {"username": 7, "password": "PW"}}',
    '{"x": {"username": "main", "password": "PW"}}',
    # A whole-model check (only account "0"): pydantic printed every setting's value.
    '{"7": {"username": "main", "password": "PW"}}',
]


@pytest.mark.parametrize("accounts", MALFORMED_ACCOUNTS)
def test_a_malformed_account_is_refused_without_printing_its_password(
    monkeypatch: pytest.MonkeyPatch, accounts: str
) -> None:
    with pytest.raises(Exception) as refused:  # ValidationError or SettingsError
        settings(
            monkeypatch,
            DATABASE_URL=f"postgresql://dialer:{DB_PASSWORD}@db/app",
            DIALER_BACKEND="sip",
            DIALER_SIP_PROXY="pbx.example:5060",
            DIALER_SIP_ACCOUNTS=accounts.replace("PW", PASSWORD),
        )
    # All the text a crash would log: the message, its causes, the whole traceback.
    text = "".join(traceback.format_exception(refused.value))
    assert "sip_accounts" in text.lower()  # it still says which setting is wrong
    assert PASSWORD not in text
    assert DB_PASSWORD not in text


def test_database_url_is_kept_out_of_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = settings(monkeypatch, DATABASE_URL=f"postgresql://dialer:{DB_PASSWORD}@db/app")
    assert DB_PASSWORD not in repr(loaded)
    assert DB_PASSWORD in loaded.database_url.get_secret_value()
