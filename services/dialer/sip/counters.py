"""The SIP stack's own metrics: kept with the stack, the one user (services.common.metrics holds
what several services report). Registered on prometheus_client's default registry, which the
dialer's /metrics serves like every other metric."""

from __future__ import annotations

from prometheus_client import Counter

SIP_MESSAGES = Counter(
    "callback_sip_messages", "SIP messages sent and received (sip backend)", ["direction"]
)
SIP_RETRANSMISSIONS = Counter(
    "callback_sip_retransmissions", "SIP requests sent again for want of a response"
)
