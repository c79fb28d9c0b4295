"""Tenant rules without a database: destination prefixes, the api's policy check, and the
fair share of the dialers between tenants."""

from __future__ import annotations

import pytest

from services.api.policy import TenantPolicy, check_new_tasks
from services.api.validation import new_tasks
from services.common.errors import PolicyViolation
from services.common.tenancy import (
    DEFAULT_DENIED_PREFIXES,
    DestinationRule,
    destination_allowed,
    international_form,
)
from services.dispatcher.fairness import allotments, reserve, tenant_share


@pytest.mark.parametrize(
    ("number", "digits"),
    [
        ("+19005550100", "+19005550100"),
        ("0019005550100", "+19005550100"),
        ("1900", "1900"),
        ("*21#", "*21#"),
    ],
)
def test_00_is_the_international_prefix(number: str, digits: str) -> None:
    assert international_form(number) == digits


@pytest.mark.parametrize(
    ("number", "allowed"),
    [
        ("+19005550100", False),
        ("0019765550100", False),
        ("+447000000001", False),
        ("+441134960000", True),  # Leeds, not premium
        ("+15550001111", True),
        ("101", True),
        ("1900", True),  # an extension, or a national number: rules with "+" are international
    ],
)
def test_default_rules_deny_premium_rate(number: str, allowed: bool) -> None:
    assert destination_allowed(number, (), DEFAULT_DENIED_PREFIXES) is allowed


def test_longest_prefix_wins_and_the_tenants_rule_wins_a_tie() -> None:
    rules = (
        DestinationRule("", False),
        DestinationRule("+7", True),
        DestinationRule("+1900", True),
    )
    assert destination_allowed("+79990001122", rules, DEFAULT_DENIED_PREFIXES)
    assert destination_allowed("+19005550100", rules, DEFAULT_DENIED_PREFIXES)
    assert not destination_allowed("+15550001111", rules, DEFAULT_DENIED_PREFIXES)
    assert not destination_allowed("+7", (DestinationRule("+7", False),), ())


POLICY = TenantPolicy(frozenset({7}), frozenset({"+15557770001"}), ())


def violation(*tasks: dict[str, object], policy: TenantPolicy = POLICY) -> PolicyViolation:
    with pytest.raises(PolicyViolation) as raised:
        check_new_tasks(new_tasks(list(tasks)), policy, DEFAULT_DENIED_PREFIXES)
    return raised.value


TASK: dict[str, object] = {"a_number": "101", "b_number": "102"}


def test_policy_allows_what_the_tenant_owns() -> None:
    owned = TASK | {"extension_id": 7, "callback_params": {"caller_id_number": "+15557770001"}}
    check_new_tasks(new_tasks([TASK, owned]), POLICY, DEFAULT_DENIED_PREFIXES)


def test_policy_names_every_field_of_the_first_kind_found() -> None:
    error = violation(
        TASK | {"extension_id": 8}, TASK | {"extension_id": 9, "b_number": "+19005550100"}
    )
    assert error.reason == "EXTENSION_NOT_OWNED"
    assert [v.field for v in error.violations] == ["tasks[0].extension_id", "tasks[1].extension_id"]
    caller = violation(TASK | {"callback_params": {"caller_id_number": "+15550000000"}})
    assert caller.reason == "CALLER_ID_NOT_ALLOWED"
    denied = violation(TASK | {"b_number": "+19005550100"})
    assert denied.reason == "DESTINATION_DENIED"


def test_share_of_a_pass() -> None:
    assert tenant_share(1000, 200, 1) == 1000
    assert tenant_share(1000, 200, 10) == 200


def test_without_a_cap_every_tenant_gets_its_share() -> None:
    assert allotments(["a", "b"], {"a": 5000}, None, 500) == {"a": 500, "b": 500}


def test_free_slots_go_to_the_tenants_with_fewest_in_progress() -> None:
    """The flooding tenant holds 998 of 1,000 slots; the next two free slots go to the
    tenant with nothing in progress, whatever the order."""
    for order in (["flood", "single"], ["single", "flood"]):
        given = allotments(order, {"flood": 998}, 2, 500)
        assert given == {"flood": 0, "single": 2}


def test_free_slots_are_levelled() -> None:
    given = allotments(["a", "b", "c"], {"a": 10, "b": 4}, 12, 100)
    # Levels after: a 10, b 4+4=8... c 0+8: b and c are filled up to a's level or near it.
    assert sum(given.values()) == 12
    assert given["a"] == 0
    assert abs((4 + given["b"]) - given["c"]) <= 1


def test_a_tenant_never_gets_more_than_its_share() -> None:
    assert allotments(["a"], {}, 10_000, 1000) == {"a": 1000}


def test_no_tenant_takes_the_reserved_slots() -> None:
    """A lone tenant fills the dialers only up to the reserve; the next tenant starts at once."""
    assert allotments(["flood"], {}, 200, 1000, tenant_cap=190) == {"flood": 190}
    assert allotments(["flood", "single"], {"flood": 190}, 10, 1000, tenant_cap=190) == {
        "flood": 0,
        "single": 10,
    }


@pytest.mark.parametrize(
    ("capacity", "fraction", "kept"), [(200, 0.05, 10), (4, 0.05, 1), (1, 0.05, 0), (0, 0.05, 0)]
)
def test_reserve(capacity: int, fraction: float, kept: int) -> None:
    assert reserve(capacity, fraction) == kept
