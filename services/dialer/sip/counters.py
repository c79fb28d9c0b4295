"""The SIP stack's own metrics: kept with the stack, the one user (services.common.metrics holds
what several services report). Registered on prometheus_client's default registry, which the
dialer's /metrics serves like every other metric."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector


class Messages:
    """SIP messages sent and received, as two plain ints that /metrics reads when scraped.

    Not a prometheus Counter: its inc (a lock, checks, three calls) cost ~0.8 µs on this
    machine, for each of the ~17 messages of a callback; an int attribute costs a tenth.
    The dialer counts from its one event loop thread; a scrape only reads."""

    __slots__ = ("received", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0


MESSAGES = Messages()


class _MessagesCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "callback_sip_messages",
            "SIP messages sent and received (sip backend)",
            labels=["direction"],
        )
        family.add_metric(["sent"], MESSAGES.sent)
        family.add_metric(["received"], MESSAGES.received)
        yield family


REGISTRY.register(_MessagesCollector())

SIP_RETRANSMISSIONS = Counter(
    "callback_sip_retransmissions", "SIP requests sent again for want of a response"
)
