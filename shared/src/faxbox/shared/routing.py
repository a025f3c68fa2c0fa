"""Every exchange, routing key and queue name, derived from the contract types.

Services never spell a name themselves: they ask this module. A service's queue
receives exactly the message types listed for it in ``SUBSCRIPTIONS``; adding a
consumer of an existing event is one line here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from faxbox.shared.contracts import (
    ALL_CONTRACTS,
    FaxAttemptFailed,
    FaxAttemptStarted,
    FaxCancelRequested,
    FaxFailed,
    FaxMessage,
    FaxSent,
    FaxSubmitted,
    InboundFaxFailed,
    InboundFaxReceived,
    MailReceived,
    Message,
    NotificationSent,
    OutboundFaxRejected,
    OutboundFaxRequested,
    WebhookDeliveryRequested,
)

_ROUTING_KEYS: dict[type[Message], str] = {
    MailReceived: "mail.received",
    FaxSubmitted: "fax.outbound.submitted",
    FaxCancelRequested: "fax.outbound.cancel_requested",
    OutboundFaxRequested: "fax.outbound.requested",
    FaxAttemptStarted: "fax.outbound.attempt_started",
    OutboundFaxRejected: "fax.outbound.rejected",
    FaxAttemptFailed: "fax.outbound.attempt_failed",
    FaxSent: "fax.outbound.sent",
    FaxFailed: "fax.outbound.failed",
    InboundFaxReceived: "fax.inbound.received",
    InboundFaxFailed: "fax.inbound.failed",
    NotificationSent: "notification.sent",
    WebhookDeliveryRequested: "webhook.delivery.requested",
}

# The history follows a fax from the validator's decision on: every contract about a fax
# but a submission, which is no fax yet (the decision names its faxes), so that a fax
# event added to the contracts reaches it.
_FAX_EVENTS: tuple[type[Message], ...] = tuple(
    contract
    for contract in ALL_CONTRACTS
    if issubclass(contract, FaxMessage) and contract is not FaxSubmitted
)

# What a webhook can tell: each becomes one event (fax.queued, fax.sending ...), see
# faxbox.shared.faxview.WEBHOOK_EVENTS.
_WEBHOOK_SOURCES: tuple[type[Message], ...] = (
    OutboundFaxRequested,
    OutboundFaxRejected,
    FaxAttemptStarted,
    FaxSent,
    FaxFailed,
    InboundFaxReceived,
    InboundFaxFailed,
)

SUBSCRIPTIONS: dict[str, tuple[type[Message], ...]] = {
    "validator": (MailReceived, FaxSubmitted),
    "transmitter": (OutboundFaxRequested, FaxCancelRequested),
    "notifier": (OutboundFaxRejected, FaxSent, FaxFailed, InboundFaxReceived, InboundFaxFailed),
    "history": _FAX_EVENTS,
    "webhooks": (*_WEBHOOK_SOURCES, WebhookDeliveryRequested),
}

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


def routing_key(contract: type[Message]) -> str:
    try:
        return _ROUTING_KEYS[contract]
    except KeyError:
        raise KeyError(f"{contract.__name__} has no routing key") from None


@dataclass(frozen=True, slots=True)
class Topology:
    """Names for one deployment; ``prefix`` isolates tests and side-by-side stacks."""

    prefix: str = "faxbox"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", self.prefix):
            raise ValueError(f"invalid topology prefix {self.prefix!r}")

    @property
    def events_exchange(self) -> str:
        """The one topic exchange every contract is published to."""
        return f"{self.prefix}.events"

    @property
    def dead_letter_exchange(self) -> str:
        """Direct exchange; the routing key is the origin queue, bound to its .dlq."""
        return f"{self.prefix}.dead-letter"

    def queue(self, service: str) -> str:
        _check_service(service)
        return f"{self.prefix}.{service}"

    def dead_letter_queue(self, service: str) -> str:
        return f"{self.queue(service)}.dlq"

    def retry_queue(self, service: str, delay_s: int) -> str:
        """The held queue of one step of the retry ladder (``faxbox.shared.delays``)."""
        if delay_s < 1:
            raise ValueError("retry delay must be at least one second")
        return f"{self.queue(service)}.retry.{delay_s}s.held"

    def bindings(self, service: str) -> tuple[str, ...]:
        return tuple(routing_key(contract) for contract in subscriptions(service))


def subscriptions(service: str) -> tuple[type[Message], ...]:
    _check_service(service)
    return SUBSCRIPTIONS.get(service, ())


def _check_service(service: str) -> None:
    if not _NAME.fullmatch(service):
        raise ValueError(f"invalid service name {service!r}")


def _assert_every_contract_routed() -> None:
    missing = [c.__name__ for c in ALL_CONTRACTS if c not in _ROUTING_KEYS]
    if missing:
        raise RuntimeError(f"contracts without routing key: {missing}")


_assert_every_contract_routed()
