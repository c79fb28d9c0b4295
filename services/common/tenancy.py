"""What an operator allows a tenant by default, and the destination rules' matching.

A tenant nobody has configured gets these defaults: the operator's default SIP account
(extension 0), no caller id of its own, the default destination rules and quotas. The
operator changes a tenant with `python -m services.api.admin` (stored in PostgreSQL); the
defaults are settings (TENANT_DEFAULT_*), read by the api and the dispatcher alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Numbers no tenant calls unless the operator allows it: premium-rate and revenue-share
# ranges, the classic targets of toll fraud (IRSF). North America 1-900 and 1-976; UK 09
# (premium), 087 (revenue share) and 070 (personal numbers); the international premium-rate
# (979) and shared-cost (808) codes; satellite and international networks (870, 881-883).
DEFAULT_DENIED_PREFIXES = (
    "+1900",
    "+1976",
    "+449",
    "+4487",
    "+4470",
    "+979",
    "+808",
    "+870",
    "+881",
    "+882",
    "+883",
)


class TenantDefaults(BaseSettings):
    """Quotas and rules of every tenant the operator has not set otherwise."""

    model_config = SettingsConfigDict(env_prefix="TENANT_DEFAULT_")

    # Callbacks in progress at once, across all of a tenant's queues.
    max_in_progress: int = Field(default=100, ge=0)
    # New calls per second, across all of a tenant's queues (bursts of up to a second's
    # worth): each A number a callback rings at once counts, its extended A numbers too.
    calls_per_second: float = Field(default=10.0, gt=0)
    # Tasks stored (any status) across all of a tenant's queues.
    max_stored_tasks: int = Field(default=100_000, ge=0)
    # Destination prefixes refused to every tenant without a rule of its own that allows them.
    denied_prefixes: tuple[str, ...] = DEFAULT_DENIED_PREFIXES


def international_form(number: str) -> str:
    """A number (or rule prefix) as destination rules compare it: a leading "00" (the
    international prefix) written as "+", so that "+1900…" and "001900…" meet the same
    rule. Numbers without either stay as dialled: "1900" may be an extension of the PBX,
    and a rule for national numbers is written without "+"."""
    return "+" + number[2:] if number.startswith("00") else number


@dataclass(frozen=True)
class DestinationRule:
    prefix: str  # as the operator wrote it ("+1900"); compared by international_form
    allow: bool


def destination_allowed(
    number: str, tenant_rules: Iterable[DestinationRule], default_denied: Iterable[str]
) -> bool:
    """Whether a tenant may call `number`: the longest matching prefix decides, the tenant's
    own rule winning over a default of the same length; a number no rule matches is allowed."""
    dialled = international_form(number)
    best: tuple[int, int, bool] | None = None  # (prefix length, tenant's own, allow)
    candidates = [(international_form(p), 0, False) for p in default_denied]
    candidates += [(international_form(r.prefix), 1, r.allow) for r in tenant_rules]
    for prefix, own, allow in candidates:
        if dialled.startswith(prefix) and (best is None or (len(prefix), own) > best[:2]):
            best = (len(prefix), own, allow)
    return True if best is None else best[2]
