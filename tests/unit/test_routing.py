from __future__ import annotations

import pytest

from faxbox.shared import contracts as c
from faxbox.shared.routing import SUBSCRIPTIONS, Topology, routing_key, subscriptions


def test_every_contract_has_a_distinct_routing_key() -> None:
    keys = [routing_key(t) for t in c.ALL_CONTRACTS]
    assert len(set(keys)) == len(keys)
    assert routing_key(c.FaxSent) == "fax.outbound.sent"
    assert routing_key(c.MailReceived) == "mail.received"


def test_names_derive_from_prefix_and_service() -> None:
    t = Topology("faxbox")
    assert t.events_exchange == "faxbox.events"
    assert t.dead_letter_exchange == "faxbox.dead-letter"
    assert t.queue("validator") == "faxbox.validator"
    assert t.dead_letter_queue("validator") == "faxbox.validator.dlq"
    assert t.retry_queue("transmitter", 120) == "faxbox.transmitter.retry.120s.held"
    assert t.bindings("validator") == ("mail.received", "fax.outbound.submitted")


def test_test_prefixes_isolate_deployments() -> None:
    assert Topology("t-1a2b").queue("notifier") != Topology("faxbox").queue("notifier")


@pytest.mark.parametrize("prefix", ["", "UPPER", "has space", "x" * 65])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        Topology(prefix)


@pytest.mark.parametrize("service", ["", "Validator", "a.b", "../x"])
def test_bad_service_names_are_refused(service: str) -> None:
    with pytest.raises(ValueError, match="service"):
        Topology().queue(service)


def test_retry_delay_must_be_positive() -> None:
    with pytest.raises(ValueError, match="delay"):
        Topology().retry_queue("validator", 0)


def test_history_hears_every_fax_event_and_the_notifier_only_outcomes() -> None:
    assert c.MailReceived not in subscriptions("history")
    # A submission is not a fax yet (the validator decides), a delivery is no fax event.
    assert set(subscriptions("history")) == set(c.ALL_CONTRACTS) - {
        c.MailReceived,
        c.FaxSubmitted,
        c.WebhookDeliveryRequested,
    }
    assert c.FaxAttemptFailed not in subscriptions("notifier")
    assert subscriptions("transmitter") == (c.OutboundFaxRequested, c.FaxCancelRequested)
    assert subscriptions("portal") == ()
    assert set(SUBSCRIPTIONS) == {"validator", "transmitter", "notifier", "history", "webhooks"}


def test_webhooks_hear_the_outcomes_and_their_own_deliveries() -> None:
    heard = set(subscriptions("webhooks"))
    assert c.WebhookDeliveryRequested in heard
    assert {c.FaxSent, c.FaxFailed, c.FaxAttemptStarted, c.InboundFaxReceived} <= heard
    assert c.MailReceived not in heard
    assert c.NotificationSent not in heard
