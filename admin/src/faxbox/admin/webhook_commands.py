"""``faxbox webhook ...``: an account's webhooks, their delivery logs, replays and key.

URLs pass the same SSRF guard as in the portal (``faxbox.shared.urlguard``, networks the
platform allows from ``FAXBOX_WEBHOOKS_ALLOWED_NETWORKS``). A replay is published to the
broker (``FAXBOX_AMQP_URL``) for the webhooks service, which makes the request.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from faxbox.admin.commands import CliError, faxbox_of_user, model_of
from faxbox.shared.bus import Bus
from faxbox.shared.contracts import WebhookDeliveryRequested
from faxbox.shared.faxview import WEBHOOK_EVENTS
from faxbox.shared.secretbox import SecretKeyMissing, SecretSettings
from faxbox.shared.settings import BrokerSettings, WebhookTargetSettings
from faxbox.shared.store import NotFound, Store
from faxbox.shared.store.signing_keys import SigningKeys
from faxbox.shared.store.webhooks import Webhook, WebhookStore
from faxbox.shared.urlguard import UrlRefused, check_url, parse_networks


def _public(hook: Webhook) -> dict[str, Any]:
    return hook.model_dump(mode="json")


async def webhook_add(store: Store, args: argparse.Namespace) -> Any:
    account = await store.get_account_by_realm(args.realm)
    faxbox_id = (await faxbox_of_user(store, args.faxbox_user)).id if args.faxbox_user else None
    hook = model_of(
        Webhook,
        account_id=account.id,
        url=args.url,
        failover_url=args.failover_url,
        faxbox_id=faxbox_id,
        events=args.event or list(WEBHOOK_EVENTS),
        max_concurrency=args.max_concurrency,
        description=args.description or "",
    )
    try:
        allowed = parse_networks(WebhookTargetSettings().webhooks_allowed_networks)
    except ValueError as exc:
        raise CliError(f"FAXBOX_WEBHOOKS_ALLOWED_NETWORKS: {exc}") from None
    for url in (hook.url, hook.failover_url):
        if url:
            try:
                await check_url(url, allowed)
            except UrlRefused as refused:
                raise CliError(refused.message) from None
    return _public(await WebhookStore(store.db).add(hook))


async def webhook_list(store: Store, args: argparse.Namespace) -> Any:
    account = await store.get_account_by_realm(args.realm)
    return [_public(h) for h in await WebhookStore(store.db).of_account(account.id)]


async def webhook_remove(store: Store, args: argparse.Namespace) -> Any:
    await WebhookStore(store.db).remove(args.id)
    return {"removed": args.id}


async def webhook_deliveries(store: Store, args: argparse.Namespace) -> Any:
    webhooks = WebhookStore(store.db)
    hook = await webhooks.get(args.id)
    return [
        d.model_dump(mode="json", exclude={"body"} if not args.bodies else set())
        for d in await webhooks.recent_deliveries(hook.id, args.limit)
    ]


async def webhook_replay(store: Store, args: argparse.Namespace) -> Any:
    webhooks = WebhookStore(store.db)
    hook = await webhooks.get(args.id)
    try:
        delivery = await webhooks.find_delivery(hook.id, args.event)
    except NotFound:
        raise CliError(f"webhook {hook.id} has no delivery of event {args.event}") from None
    bus = Bus(BrokerSettings())
    await bus.connect()
    try:
        await bus.publish(
            WebhookDeliveryRequested(
                message_id=uuid.uuid4().hex,
                fax_id=delivery.fax_id,
                account_id=delivery.account_id,
                webhook_id=hook.id,
                event_id=delivery.event_id,
                month=delivery.month,
                replay=True,
            )
        )
    finally:
        await bus.close()
    return {"replaying": delivery.event_id, "webhook": hook.id}


async def webhook_signing_key(store: Store, args: argparse.Namespace) -> Any:
    account = await store.get_account_by_realm(args.realm)
    try:
        box = SecretSettings().required_box("the account's webhook signing key")
    except (SecretKeyMissing, ValueError) as exc:
        raise CliError(str(exc)) from None
    key = await SigningKeys(store.db, box).public(account.id)
    return {
        "account_id": key.account_id,
        "algorithm": "ed25519",
        "public_key": key.public_key,
        "pem": key.pem,
    }


def add_parsers(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    webhook = groups.add_parser("webhook", help="webhooks").add_subparsers(required=True)
    p = webhook.add_parser("add", help="tell a URL about an account's faxes (signed)")
    p.add_argument("--realm", required=True, help="the account's realm")
    p.add_argument("--url", required=True)
    p.add_argument("--failover-url")
    p.add_argument("--faxbox-user", help="only this user's faxbox (owner's email)")
    p.add_argument("--event", action="append", choices=WEBHOOK_EVENTS, help="repeat; default all")
    p.add_argument("--max-concurrency", type=int, default=4, help="requests open at once")
    p.add_argument("--description")
    p.set_defaults(command=webhook_add)
    p = webhook.add_parser("list")
    p.add_argument("--realm", required=True)
    p.set_defaults(command=webhook_list)
    p = webhook.add_parser("remove", help="a webhook and its delivery log")
    p.add_argument("--id", required=True)
    p.set_defaults(command=webhook_remove)
    p = webhook.add_parser("deliveries", help="the newest deliveries, every attempt")
    p.add_argument("--id", required=True)
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--bodies", action="store_true", help="with the JSON bodies")
    p.set_defaults(command=webhook_deliveries)
    p = webhook.add_parser("replay", help="send one delivery once more")
    p.add_argument("--id", required=True, help="the webhook")
    p.add_argument("--event", required=True, help="the event id")
    p.set_defaults(command=webhook_replay)
    p = webhook.add_parser("signing-key", help="the account's public key for verifying")
    p.add_argument("--realm", required=True)
    p.set_defaults(command=webhook_signing_key)
