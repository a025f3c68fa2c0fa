"""The webhooks pages: an account's webhooks and signing key, a webhook's delivery log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from faxbox.portal import webhook_admin
from faxbox.portal.access import admin_account
from faxbox.portal.admin import InvalidInput
from faxbox.portal.deps import CheckedPrincipal, CurrentPrincipal, Deps
from faxbox.portal.localtime import clock_for
from faxbox.portal.views import back, render
from faxbox.portal.webhook_admin import NotConfigured, WebhookIn
from faxbox.shared.faxview import WEBHOOK_EVENTS
from faxbox.shared.store.signing_keys import AccountKey

router = APIRouter(include_in_schema=False)


def _list_url(account_id: str) -> str:
    return f"/admin/accounts/{account_id}/webhooks"


@router.get("/admin/accounts/{account_id}/webhooks")
async def webhooks_page(
    request: Request, account_id: str, principal: CurrentPrincipal, deps: Deps
) -> Response:
    hooks = deps.hooks
    account = await admin_account(deps.store, principal, account_id)
    key: AccountKey | None = None
    key_problem = None
    try:
        key = await webhook_admin.signing_key(hooks, principal, account_id)
    except NotConfigured as exc:
        key_problem = str(exc)
    return render(
        request,
        "webhooks.html",
        principal,
        account=account,
        webhooks=await webhook_admin.list_webhooks(hooks, principal, account_id),
        faxboxes=await deps.store.list_faxboxes(account_id=account_id),
        events=WEBHOOK_EVENTS,
        key=key,
        key_problem=key_problem,
    )


@router.post("/admin/accounts/{account_id}/webhooks")
async def webhook_add(
    account_id: str,
    principal: CheckedPrincipal,
    deps: Deps,
    url: Annotated[str, Form()],
    failover_url: Annotated[str, Form()] = "",
    faxbox_id: Annotated[str, Form()] = "",
    events: Annotated[list[str] | None, Form()] = None,
    max_concurrency: Annotated[int, Form()] = 4,
    description: Annotated[str, Form()] = "",
) -> Response:
    given = WebhookIn(
        url=url,
        failover_url=failover_url or None,
        faxbox_id=faxbox_id or None,
        events=tuple(events) if events else None,
        max_concurrency=max_concurrency,
        description=description,
    )
    try:
        hook = await webhook_admin.add_webhook(deps.hooks, principal, account_id, given)
    except InvalidInput as exc:
        return back(_list_url(account_id), error=str(exc))
    return back(_list_url(account_id), msg=f"Webhook {hook.url} added.")


@router.post("/webhooks/{webhook_id}/remove")
async def webhook_remove(webhook_id: str, principal: CheckedPrincipal, deps: Deps) -> Response:
    hook = await webhook_admin.webhook_in_scope(deps.hooks, principal, webhook_id)
    await webhook_admin.remove_webhook(deps.hooks, principal, webhook_id)
    return back(_list_url(hook.account_id), msg=f"Webhook {hook.url} removed.")


@router.post("/webhooks/{webhook_id}/enabled")
async def webhook_enabled(
    webhook_id: str, principal: CheckedPrincipal, deps: Deps, enabled: Annotated[str, Form()]
) -> Response:
    hook = await webhook_admin.set_enabled(deps.hooks, principal, webhook_id, enabled == "yes")
    return back(f"/webhooks/{hook.id}", msg="Enabled." if hook.enabled else "Disabled.")


@router.get("/webhooks/{webhook_id}")
async def webhook_page(
    request: Request, webhook_id: str, principal: CurrentPrincipal, deps: Deps
) -> Response:
    hook = await webhook_admin.webhook_in_scope(deps.hooks, principal, webhook_id)
    return render(
        request,
        "webhook.html",
        principal,
        hook=hook,
        deliveries=await webhook_admin.deliveries(deps.hooks, principal, webhook_id),
        clock=await clock_for(deps.store, principal.user, hook.account_id),
    )


@router.post("/webhooks/{webhook_id}/deliveries/{event_id}/replay")
async def delivery_replay(
    webhook_id: str, event_id: str, principal: CheckedPrincipal, deps: Deps
) -> Response:
    await webhook_admin.replay(deps.hooks, principal, webhook_id, event_id)
    return back(f"/webhooks/{webhook_id}", msg=f"Replaying {event_id}: it is sent once more.")
