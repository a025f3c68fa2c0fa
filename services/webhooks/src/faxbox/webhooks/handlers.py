"""Fax events become deliveries; each delivery is POSTed until a URL takes it.

``on_fax_event``: the event (``FaxSent`` → ``fax.delivered`` ...) is told to every
enabled webhook of its account that wants it (and, for a webhook limited to a faxbox,
is about that faxbox): one delivery per webhook and fax, recorded in the webhook's log
under the event id with its body fixed, then one ``WebhookDeliveryRequested`` each,
returned as the decision under the event's message id for the outbox to record and
publish. The event id and the command's message id derive from the source message, so
a redelivered event records nothing new and publishes the same commands again.

``deliver``: one attempt of one delivery, signed now (a new timestamp each attempt,
the body unchanged): the URL, and at once the failover URL if the first did not take
it. A 2xx from either is delivered. Otherwise the next step of the retry schedule is a
``RetryLater`` (a broker timer); after the last step the delivery has failed and stays
in the log, where it can be replayed. A replay is one more attempt, outside the
schedule, whatever the delivery's state. Requests to one URL are limited to the
webhook's ``max_concurrency`` across every replica: a delivery that finds them all
taken waits a moment (not a step of the schedule).

At least once: a receiver may see an event twice (a duplicate command, a replay, a
timeout after it had taken the request); the event id tells them apart.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

from faxbox.shared.contracts import FaxMessage, WebhookDeliveryRequested
from faxbox.shared.faxview import event_id, event_type, faxes_of, from_event
from faxbox.shared.outbox import Decided
from faxbox.shared.policy import PermanentError, RetryLater
from faxbox.shared.store.monthly import month_key
from faxbox.shared.store.webhooks import DeliveryAttempt, Webhook, WebhookDelivery
from faxbox.webhooks.ports import DeliveryLog, Response, Sender, Signer, UrlSlots
from faxbox.webhooks.ports import Webhooks as WebhookDirectory

log = logging.getLogger(__name__)

# Published in docs/api.md: 10 s, 1 min, 10 min, 1 h, 4 h, 12 h, 24 h after the first
# attempt (about 41 hours in all). Each is a step of the broker's retry ladder.
RETRY_SCHEDULE_S: Final = (10, 60, 600, 3600, 14400, 43200, 86400)
_COMMAND_NAMESPACE: Final = uuid.UUID("9a3c2f4e-1b7d-4e55-8f0a-6c2d9e8b7a10")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Deps:
    webhooks: WebhookDirectory
    log: DeliveryLog
    signer: Signer
    sender: Sender
    slots: UrlSlots
    worker_id: str
    schedule_s: tuple[int, ...] = RETRY_SCHEDULE_S
    busy_retry_s: int = 2
    clock: Callable[[], datetime] = utc_now


def command_id(webhook_id: str, event: str) -> str:
    return uuid.uuid5(_COMMAND_NAMESPACE, f"{webhook_id}:{event}").hex


def body_of(event: FaxMessage, fax_id: str, kind: str, identifier: str) -> str:
    view = from_event(event, fax_id)
    assert view is not None
    return json.dumps(
        {
            "id": identifier,
            "type": kind,
            "created_at": event.occurred_at.isoformat().replace("+00:00", "Z"),
            "account_id": event.account_id,
            "fax_id": fax_id,
            "data": view.dump(),
        },
        separators=(",", ":"),
        sort_keys=True,
    )


async def on_fax_event(event: FaxMessage, deps: Deps) -> Decided | None:
    """Record a delivery per interested webhook and fax; their commands, as the decision
    under the event's message id (None: no webhook wants it)."""
    hooks: list[Webhook] | None = None
    commands: list[WebhookDeliveryRequested] = []
    for fax_id in faxes_of(event):
        view = from_event(event, fax_id)
        kind = event_type(view.status) if view is not None else None
        if view is None or kind is None:
            continue
        if hooks is None:
            hooks = await deps.webhooks.of_account(event.account_id)
        identifier = event_id(event.message_id, fax_id)
        for hook in hooks:
            if not hook.wants(kind, view.faxbox_id):
                continue
            recorded = await deps.log.create(
                WebhookDelivery(
                    event_id=identifier,
                    webhook_id=hook.id,
                    account_id=event.account_id,
                    fax_id=fax_id,
                    event_type=kind,
                    month=month_key(event.occurred_at),
                    body=body_of(event, fax_id, kind, identifier),
                )
            )
            commands.append(
                WebhookDeliveryRequested(
                    message_id=command_id(hook.id, identifier),
                    fax_id=fax_id,
                    account_id=event.account_id,
                    webhook_id=hook.id,
                    event_id=identifier,
                    month=recorded.month,
                )
            )
    if not commands:
        return None
    log.info("%d webhook deliveries for %s", len(commands), type(event).__name__)
    return Decided(event.message_id, tuple(commands))


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRYING = "retrying"  # raised as RetryLater after recording
    FAILED = "failed"  # the schedule is over
    REPLAYED = "replayed"  # one replay attempt, whatever it gave
    SKIPPED = "skipped"  # nothing to do: delivered before, webhook gone or disabled


async def _attempt(
    url: str, body: bytes, headers: dict[str, str], deps: Deps, *, replay: bool, failover: bool
) -> DeliveryAttempt:
    response: Response = await deps.sender.post(url, body, headers)
    return DeliveryAttempt(
        at=deps.clock(),
        url=url,
        status=response.status,
        error=response.error,
        duration_ms=response.duration_ms,
        replay=replay,
        failover=failover,
    )


async def deliver(command: WebhookDeliveryRequested, deps: Deps) -> Outcome:
    delivery = await deps.log.get(command.webhook_id, command.month, command.event_id)
    if delivery is None:
        raise PermanentError(
            f"delivery {command.event_id} of webhook {command.webhook_id} is not in its log"
        )
    hook = await deps.webhooks.find(command.webhook_id)
    if hook is None:
        log.info("webhook %s was removed; not delivering %s", command.webhook_id, command.event_id)
        return Outcome.SKIPPED
    now = deps.clock()
    if not command.replay:
        if delivery.state != "pending" or not hook.enabled:
            return Outcome.SKIPPED
        due = delivery.next_attempt_at
        if due is not None and due > now + timedelta(seconds=1):
            # A second copy of the command, early: the schedule's own copy comes at ``due``.
            raise RetryLater("the next attempt is not due yet", _seconds(due - now))
    slot = await deps.slots.acquire(
        hook.url, hook.max_concurrency, f"{deps.worker_id}:{command.message_id}"
    )
    if slot is None:
        raise RetryLater(
            f"{hook.max_concurrency} requests to {hook.url} are open already", deps.busy_retry_s
        )
    body = delivery.body.encode()
    try:
        headers = await deps.signer.headers(delivery.account_id, body)
        headers |= {"Faxbox-Event-Id": delivery.event_id, "Faxbox-Event-Type": delivery.event_type}
        attempts = [
            await _attempt(hook.url, body, headers, deps, replay=command.replay, failover=False)
        ]
        if not attempts[0].ok and hook.failover_url:
            attempts.append(
                await _attempt(
                    hook.failover_url, body, headers, deps, replay=command.replay, failover=True
                )
            )
    finally:
        await deps.slots.release(slot)
    delivered = attempts[-1].ok
    if command.replay:
        state = "delivered" if delivered else delivery.state
        await deps.log.record(
            delivery,
            attempts,
            state=state,
            scheduled=False,
            next_attempt_at=delivery.next_attempt_at,
        )
        return Outcome.REPLAYED
    if delivered:
        await deps.log.record(
            delivery, attempts, state="delivered", scheduled=True, next_attempt_at=None
        )
        return Outcome.DELIVERED
    step = delivery.scheduled_attempts  # attempts before this one
    if step >= len(deps.schedule_s):
        await deps.log.record(
            delivery, attempts, state="failed", scheduled=True, next_attempt_at=None
        )
        log.warning(
            "webhook %s gave up on %s after %d attempts: %s",
            hook.id,
            delivery.event_id,
            step + 1,
            attempts[-1].error or attempts[-1].status,
        )
        return Outcome.FAILED
    delay = deps.schedule_s[step]
    await deps.log.record(
        delivery,
        attempts,
        state="pending",
        scheduled=True,
        next_attempt_at=deps.clock() + timedelta(seconds=delay),
    )
    raise RetryLater(
        f"attempt {step + 1} to {hook.url} failed ({attempts[-1].error or attempts[-1].status}); "
        f"next in {delay}s",
        delay,
    )


def _seconds(delta: timedelta) -> int:
    return max(1, int(delta.total_seconds() + 0.999))
