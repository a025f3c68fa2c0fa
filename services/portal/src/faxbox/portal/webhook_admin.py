"""Webhooks of an account, on behalf of a principal (pages and API alike).

Account admins (and the reseller admin of a customer account) manage an account's
webhooks, see their delivery logs and replay deliveries; a replay is a
``WebhookDeliveryRequested`` for the webhooks service, recorded in the portal's outbox
(``replay:<message id>``) before it is published, which makes the request (the
portal itself never calls a customer's URL). Every URL passes the SSRF guard when it is
saved (``faxbox.shared.urlguard``; the webhooks service checks again at each request).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from faxbox.portal.access import admin_account
from faxbox.portal.admin import InvalidInput
from faxbox.portal.outbound import record_decision
from faxbox.portal.security import Principal
from faxbox.shared.contracts import WebhookDeliveryRequested
from faxbox.shared.outbox import Decided, Outbox
from faxbox.shared.secretbox import SecretKeyMissing, SecretUnreadable
from faxbox.shared.store import NotFound, Store
from faxbox.shared.store.signing_keys import AccountKey, SigningKeys
from faxbox.shared.store.webhooks import Webhook, WebhookDelivery, WebhookStore
from faxbox.shared.urlguard import IPNetwork, Resolver, UrlRefused, check_url, system_resolver


class NotConfigured(Exception):
    """The portal lacks what this needs (the broker, or FAXBOX_SECRET_KEY)."""


@dataclass(frozen=True)
class Hooks:
    store: Store
    webhooks: WebhookStore
    keys: SigningKeys | None
    outbox: Outbox | None
    allowed: Sequence[IPNetwork] = ()
    resolver: Resolver = system_resolver
    publish_wait_s: float = 5.0


@dataclass(frozen=True, slots=True)
class WebhookIn:
    url: str
    failover_url: str | None = None
    faxbox_id: str | None = None
    events: tuple[str, ...] | None = None
    max_concurrency: int = 4
    description: str = ""


async def list_webhooks(hooks: Hooks, principal: Principal, account_id: str) -> list[Webhook]:
    await admin_account(hooks.store, principal, account_id)
    return await hooks.webhooks.of_account(account_id)


async def webhook_in_scope(hooks: Hooks, principal: Principal, webhook_id: str) -> Webhook:
    try:
        hook = await hooks.webhooks.get(webhook_id)
    except NotFound:
        raise NotFound("webhook", webhook_id) from None
    try:
        await admin_account(hooks.store, principal, hook.account_id)
    except NotFound:
        raise NotFound("webhook", webhook_id) from None
    return hook


async def _checked(hooks: Hooks, url: str | None) -> None:
    if url:
        try:
            await check_url(url, hooks.allowed, hooks.resolver)
        except UrlRefused as refused:
            raise InvalidInput(refused.message) from None


async def add_webhook(
    hooks: Hooks, principal: Principal, account_id: str, given: WebhookIn
) -> Webhook:
    await admin_account(hooks.store, principal, account_id)
    if given.faxbox_id:
        try:
            box = await hooks.store.get_faxbox(given.faxbox_id)
        except NotFound:
            raise InvalidInput(f"there is no faxbox {given.faxbox_id} in this account") from None
        if box.account_id != account_id:
            raise InvalidInput(f"there is no faxbox {given.faxbox_id} in this account")
    fields: dict[str, object] = {
        "account_id": account_id,
        "url": given.url,
        "failover_url": given.failover_url or None,
        "faxbox_id": given.faxbox_id or None,
        "max_concurrency": given.max_concurrency,
        "description": given.description,
    }
    if given.events is not None:
        fields["events"] = list(given.events)
    try:
        hook = Webhook.model_validate(fields)
    except ValidationError as exc:
        raise InvalidInput(
            "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        ) from None
    await _checked(hooks, hook.url)
    await _checked(hooks, hook.failover_url)
    return await hooks.webhooks.add(hook)


async def remove_webhook(hooks: Hooks, principal: Principal, webhook_id: str) -> None:
    hook = await webhook_in_scope(hooks, principal, webhook_id)
    await hooks.webhooks.remove(hook.id)


async def set_enabled(hooks: Hooks, principal: Principal, webhook_id: str, on: bool) -> Webhook:
    hook = await webhook_in_scope(hooks, principal, webhook_id)
    return await hooks.webhooks.set_enabled(hook.id, on)


async def deliveries(
    hooks: Hooks, principal: Principal, webhook_id: str, limit: int = 50
) -> list[WebhookDelivery]:
    hook = await webhook_in_scope(hooks, principal, webhook_id)
    return await hooks.webhooks.recent_deliveries(hook.id, limit)


async def replay(
    hooks: Hooks, principal: Principal, webhook_id: str, event_id: str
) -> WebhookDelivery:
    """Ask the webhooks service for one more attempt of this delivery."""
    if hooks.outbox is None:
        raise NotConfigured("replaying needs the broker")
    hook = await webhook_in_scope(hooks, principal, webhook_id)
    delivery = await hooks.webhooks.find_delivery(hook.id, event_id)
    requested = WebhookDeliveryRequested(
        message_id=uuid.uuid4().hex,  # every replay asked for is one more attempt
        fax_id=delivery.fax_id,
        account_id=delivery.account_id,
        webhook_id=hook.id,
        event_id=delivery.event_id,
        month=delivery.month,
        replay=True,
    )
    recorded = await record_decision(
        hooks.outbox, Decided(f"replay:{requested.message_id}", (requested,)), "The replay"
    )
    await hooks.outbox.publish_soon(recorded, hooks.publish_wait_s)
    return delivery


async def signing_key(hooks: Hooks, principal: Principal, account_id: str) -> AccountKey:
    """The account's public key (made now if it has none yet)."""
    await admin_account(hooks.store, principal, account_id)
    if hooks.keys is None:
        raise NotConfigured("FAXBOX_SECRET_KEY is not set on the portal")
    try:
        return await hooks.keys.public(account_id)
    except (SecretKeyMissing, SecretUnreadable) as exc:
        raise NotConfigured(str(exc)) from None
