"""Server-rendered pages (Jinja2). They call the same functions as the JSON API, and
download links point at the API itself (cookies authenticate there too)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from faxbox.portal import admin, faxes
from faxbox.portal.access import Forbidden, account_in_scope, visible_accounts
from faxbox.portal.dashboard import load_dashboard, redrivable
from faxbox.portal.deps import (
    CheckedPrincipal,
    CsrfFailed,
    CurrentPrincipal,
    Deps,
    PortalDeps,
    optional_principal,
    require_dashboard,
    sip_registrations,
)
from faxbox.portal.localtime import clock_for, with_faxboxes
from faxbox.portal.security import DEFAULT_TOKEN_DAYS, MAX_TOKEN_DAYS, Principal, TokenScope
from faxbox.portal.send_pages import fax_actions
from faxbox.portal.sessions import (
    change_password,
    end_session,
    prelogin_ok,
    prelogin_token,
    start_session,
    throttled_sign_in,
)
from faxbox.portal.throttle import TooManyFailures
from faxbox.portal.views import back, number_refusal, range_note, render
from faxbox.shared import numbers
from faxbox.shared.faxview import from_record
from faxbox.shared.store import (
    NotFound,
    NumberAlreadyAssigned,
    NumberHeldByAnotherAccount,
    NumberInUse,
)
from faxbox.shared.store.models import SenderAuth

router = APIRouter(include_in_schema=False)


# --- sign-in --------------------------------------------------------------------------


@router.get("/")
async def home() -> Response:
    return RedirectResponse("/faxes", status_code=303)


@router.get("/login")
async def login_form(request: Request, deps: Deps) -> Response:
    if await optional_principal(request) is not None:
        return RedirectResponse("/faxes", status_code=303)
    response = HTMLResponse("")
    token = prelogin_token(request, response, deps)
    page = render(request, "login.html", None, login_csrf=token)
    for value in response.headers.getlist("set-cookie"):
        page.headers.append("set-cookie", value)
    return page


@router.post("/login")
async def login(
    request: Request,
    deps: Deps,
    email: Annotated[str, Form()],
    password: Annotated[str, Form()],
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    if not prelogin_ok(request, csrf_token):
        raise CsrfFailed()

    def again(status_code: int, error: str) -> Response:
        return render(
            request,
            "login.html",
            None,
            status_code=status_code,
            login_csrf=csrf_token,
            error=error,
            email=email,
        )

    try:
        user = await throttled_sign_in(request, deps, email, password)
    except TooManyFailures as exc:
        page = again(429, exc.message)
        page.headers["Retry-After"] = str(exc.retry_after_s)
        return page
    if user is None:
        return again(401, "Wrong e-mail address or password.")
    response = RedirectResponse("/faxes", status_code=303)
    await start_session(response, deps, user)
    return response


@router.post("/logout")
async def logout(
    principal: CheckedPrincipal, deps: Deps, everywhere: Annotated[str, Form()] = ""
) -> Response:
    response = RedirectResponse("/login", status_code=303)
    if everywhere == "yes":
        await deps.sessions.end_all(principal.user.id)
    await end_session(response, deps, principal.session_id)
    return response


@router.post("/password")
async def password_change(
    principal: CheckedPrincipal,
    deps: Deps,
    current_password: Annotated[str, Form()],
    new_password: Annotated[str, Form()],
) -> Response:
    try:
        user = await change_password(deps, principal.user, current_password, new_password)
    except ValueError as exc:
        return back("/tokens", error=f"Password not changed: {exc}.")
    if user is None:
        return back("/tokens", error="Password not changed: the current password is wrong.")
    response = back(
        "/tokens", msg="Password changed. Every other session and all your API tokens ended."
    )
    await start_session(response, deps, user)
    return response


# --- faxes ----------------------------------------------------------------------------


def _day(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise admin.InvalidInput(f"{value!r} is not a date (YYYY-MM-DD)") from None


@router.get("/faxes")
async def fax_list(
    request: Request,
    principal: CurrentPrincipal,
    deps: Deps,
    account: str | None = None,
    start: str | None = None,
    end: str | None = None,
    number: str = "",
    direction: str = "",
    cursor: str | None = None,
) -> Response:
    account_id = account or principal.user.account_id
    accounts = await visible_accounts(deps.store, principal)
    current = await account_in_scope(deps.store, principal, account_id)
    # The form's dates are whole days on the viewer's clock, the end day included.
    clock = await clock_for(deps.store, principal.user, current.id)
    viewer = clock.viewer
    end_day = _day(end) or viewer.today()
    start_day = _day(start) or end_day - timedelta(days=30)
    if end_day < start_day:
        raise admin.InvalidInput("the end date is before the start date")
    date_range = faxes.DateRange(
        viewer.day_start(start_day), viewer.day_start(end_day + timedelta(days=1))
    )
    page = await faxes.list_faxes(
        deps.store,
        principal,
        account_id,
        date_range,
        number=number or None,
        direction="outbound" if direction == "outbound" else "inbound" if direction else None,
        cursor=cursor,
    )
    params = {
        "account": account_id,
        "start": start_day.isoformat(),
        "end": end_day.isoformat(),
        "number": number,
        "direction": direction,
    }
    next_url = None
    if page.next_cursor:
        next_url = "/faxes?" + urllib.parse.urlencode(params | {"cursor": page.next_cursor})
    return render(
        request,
        "faxes.html",
        principal,
        faxes=page.items,
        account=current,
        accounts=accounts,
        params=params,
        next_url=next_url,
        first_url="/faxes?" + urllib.parse.urlencode(params) if cursor else None,
        note=range_note(date_range),
        start_day=start_day,
        end_day=end_day,
        clock=await with_faxboxes(deps.store, clock, (f.faxbox_id for f in page.items)),
    )


@router.get("/faxes/{account_id}/{month}/{fax_id}")
async def fax_page(
    request: Request,
    account_id: str,
    month: str,
    fax_id: str,
    principal: CurrentPrincipal,
    deps: Deps,
) -> Response:
    record = await faxes.get_fax(deps.store, principal, account_id, month, fax_id)
    return render(
        request,
        "fax.html",
        principal,
        fax=record,
        view=from_record(record),
        **fax_actions(record),
        kinds=faxes.available_kinds(record),
        clock=await clock_for(deps.store, principal.user, account_id, [record.faxbox_id]),
        api_base=f"/api/accounts/{account_id}/faxes/{month}/{fax_id}",
    )


# --- tokens ---------------------------------------------------------------------------


async def _tokens(
    request: Request, principal: Principal, deps: PortalDeps, **extra: Any
) -> Response:
    """The tokens page: the user's tokens, and ``extra`` (a token just made)."""
    return render(
        request,
        "tokens.html",
        principal,
        tokens=await deps.tokens.list(principal.user),
        clock=await clock_for(deps.store, principal.user, principal.user.account_id),
        default_days=DEFAULT_TOKEN_DAYS,
        max_days=MAX_TOKEN_DAYS,
        **extra,
    )


@router.get("/tokens")
async def tokens_page(request: Request, principal: CurrentPrincipal, deps: Deps) -> Response:
    return await _tokens(request, principal, deps)


@router.post("/tokens")
async def token_create(
    request: Request,
    principal: CheckedPrincipal,
    deps: Deps,
    name: Annotated[str, Form()] = "",
    scope: Annotated[str, Form()] = TokenScope.READ.value,
    days: Annotated[int, Form()] = DEFAULT_TOKEN_DAYS,
) -> Response:
    try:
        token, secret = await deps.tokens.create(principal.user, name, TokenScope(scope), days)
    except ValueError as exc:
        return back("/tokens", error=f"No token made: {exc}.")
    return await _tokens(request, principal, deps, new_secret=secret, new_token=token)


@router.post("/tokens/{token_id}/revoke")
async def token_revoke(token_id: str, principal: CheckedPrincipal, deps: Deps) -> Response:
    if not await deps.tokens.revoke(principal.user.id, token_id):
        raise NotFound("token", token_id)
    return back("/tokens", msg="Token revoked.")


# --- administration -------------------------------------------------------------------


@router.get("/admin")
async def admin_home(request: Request, principal: CurrentPrincipal, deps: Deps) -> Response:
    if not principal.is_admin:
        raise Forbidden("administration needs an account or reseller admin")
    accounts = await visible_accounts(deps.store, principal)
    if len(accounts) == 1:
        return RedirectResponse(f"/admin/accounts/{accounts[0].id}", status_code=303)
    return render(request, "accounts.html", principal, accounts=accounts)


@router.get("/admin/accounts/{account_id}")
async def admin_account_page(
    request: Request,
    account_id: str,
    principal: CurrentPrincipal,
    deps: Deps,
    help_number: Annotated[str, Query()] = "",
) -> Response:
    rows = await admin.list_users(deps.store, principal, account_id)
    account = await deps.store.get_account(account_id)
    answer = None
    if help_number.strip():
        answer = await admin.show_help(deps.store, principal, account_id, help_number)
    return render(
        request,
        "account.html",
        principal,
        account=account,
        rows=rows,
        inventory=await admin.inventory(deps.store, principal, account_id),
        help_number=help_number,
        answer=answer,
    )


T = TypeVar("T")


def _account_url(account_id: str) -> str:
    return f"/admin/accounts/{account_id}"


async def _changed(
    url: str, change: Awaitable[T], done: str | Callable[[T], str]
) -> RedirectResponse:
    """Make an administrator's change, then go back to ``url`` saying it is done, or why
    it was refused."""
    try:
        result = await change
    except admin.InvalidInput as exc:
        return back(url, error=str(exc))
    except (NumberAlreadyAssigned, NumberHeldByAnotherAccount, NumberInUse) as exc:
        return back(url, error=f"{number_refusal(exc)}.")
    return back(url, msg=done(result) if callable(done) else done)


@router.post("/admin/accounts/{account_id}/numbers")
async def admin_add_number(
    account_id: str, principal: CheckedPrincipal, deps: Deps, number: Annotated[str, Form()]
) -> Response:
    return await _changed(
        _account_url(account_id),
        admin.add_number(deps.store, principal, account_id, number),
        lambda entry: f"Number {entry.number} added to the account.",
    )


@router.post("/admin/accounts/{account_id}/numbers/remove")
async def admin_remove_number(
    account_id: str, principal: CheckedPrincipal, deps: Deps, number: Annotated[str, Form()]
) -> Response:
    return await _changed(
        _account_url(account_id),
        admin.remove_number(deps.store, principal, account_id, number),
        f"Number {number} released from the account.",
    )


@router.post("/admin/accounts/{account_id}/policy")
async def admin_account_policy(
    account_id: str,
    principal: CheckedPrincipal,
    deps: Deps,
    allowed_countries: Annotated[str, Form()] = "",
    daily_page_limit: Annotated[str, Form()] = "",
) -> Response:
    url = _account_url(account_id)
    limit = daily_page_limit.strip()
    try:
        policy = admin.AccountPolicy(
            allowed_countries=[c for c in (p.strip() for p in allowed_countries.split(",")) if c],
            daily_page_limit=int(limit) if limit else None,
            clear_daily_page_limit=not limit,
        )
    except ValueError as exc:
        return back(url, error=str(exc))
    return await _changed(
        url,
        admin.update_account_policy(deps.store, principal, account_id, policy),
        "Destinations and page cap saved.",
    )


def _user_url(account_id: str, user_id: str) -> str:
    return f"/admin/accounts/{account_id}/users/{user_id}"


@router.get("/admin/accounts/{account_id}/users/{user_id}")
async def admin_user_page(
    request: Request, account_id: str, user_id: str, principal: CurrentPrincipal, deps: Deps
) -> Response:
    row = await admin.get_user(deps.store, principal, account_id, user_id)
    account = await deps.store.get_account(account_id)
    free = [r.number for r in await admin.inventory(deps.store, principal, account_id)]
    return render(
        request,
        "user.html",
        principal,
        account=account,
        row=row,
        free_numbers=[n for n in free if not row.faxbox or n not in row.faxbox.numbers],
        caller_id_scope=deps.caller_id_scope,
    )


@router.post("/admin/accounts/{account_id}/users/{user_id}/faxbox")
async def admin_faxbox_settings(
    account_id: str,
    user_id: str,
    principal: CheckedPrincipal,
    deps: Deps,
    caller_id: Annotated[str, Form()] = "",
    identity: Annotated[str, Form()] = "",
    header_name: Annotated[str, Form()] = "",
    header_format: Annotated[str, Form()] = "",
    timezone: Annotated[str, Form()] = "UTC",
    permission_list: Annotated[str, Form()] = "",
    sender_auth: Annotated[str, Form()] = SenderAuth.REQUIRED.value,
    success_notifications: Annotated[str, Form()] = "",
) -> Response:
    url = _user_url(account_id, user_id)
    try:
        changes = admin.FaxboxChanges(
            caller_id=caller_id,
            identity=identity,
            header_name=header_name,
            header_format=header_format.strip() or None,
            timezone=timezone.strip() or "UTC",
            permission_list=[line.strip() for line in permission_list.splitlines() if line.strip()],
            sender_auth=SenderAuth(sender_auth),
            success_notifications=bool(success_notifications),
        )
    except ValueError:
        return back(url, error=f"sender check {sender_auth!r}: choose required or off")
    return await _changed(
        url,
        admin.update_faxbox(
            deps.store, principal, account_id, user_id, changes, deps.caller_id_scope
        ),
        "Settings saved.",
    )


@router.post("/admin/accounts/{account_id}/users/{user_id}/faxbox/enabled")
async def admin_faxbox_enabled(
    account_id: str,
    user_id: str,
    principal: CheckedPrincipal,
    deps: Deps,
    enabled: Annotated[str, Form()],
) -> Response:
    on = enabled == "yes"
    changes = admin.FaxboxChanges(enabled=on)
    await admin.update_faxbox(
        deps.store, principal, account_id, user_id, changes, deps.caller_id_scope
    )
    return back(_user_url(account_id, user_id), msg="Faxbox enabled." if on else "Faxbox disabled.")


@router.post("/admin/accounts/{account_id}/users/{user_id}/numbers")
async def admin_assign(
    account_id: str,
    user_id: str,
    principal: CheckedPrincipal,
    deps: Deps,
    number: Annotated[str, Form()],
) -> Response:
    return await _changed(
        _user_url(account_id, user_id),
        admin.assign_number(deps.store, principal, account_id, user_id, number),
        lambda _: f"Number {numbers.assignable(number)} assigned.",
    )


@router.post("/admin/accounts/{account_id}/users/{user_id}/numbers/remove")
async def admin_unassign(
    account_id: str,
    user_id: str,
    principal: CheckedPrincipal,
    deps: Deps,
    number: Annotated[str, Form()],
) -> Response:
    await admin.unassign_number(deps.store, principal, account_id, user_id, number)
    return back(_user_url(account_id, user_id), msg=f"Number {number} removed.")


@router.post("/admin/accounts/{account_id}/users/{user_id}/alternate-email")
async def admin_alternate(
    account_id: str,
    user_id: str,
    principal: CheckedPrincipal,
    deps: Deps,
    alternate_email: Annotated[str, Form()] = "",
) -> Response:
    return await _changed(
        _user_url(account_id, user_id),
        admin.set_alternate_email(deps.store, principal, account_id, user_id, alternate_email),
        "Alternate notification address saved.",
    )


# --- dashboard ------------------------------------------------------------------------


@router.get("/dashboard")
async def dashboard_page(request: Request, principal: CurrentPrincipal, deps: Deps) -> Response:
    require_dashboard(principal)
    board = await load_dashboard(
        deps.queues, deps.probe, deps.topology, deps.health_urls, sip_registrations(deps)
    )
    return render(request, "dashboard.html", principal, board=board, links=deps.links)


@router.post("/dashboard/redrive/{service}")
async def dashboard_redrive(
    request: Request,
    service: str,
    principal: CheckedPrincipal,
    deps: Deps,
    confirm: Annotated[str, Form()] = "",
    count: Annotated[int, Form(ge=1, le=10_000)] = 100,
) -> Response:
    require_dashboard(principal)
    if not redrivable(service):
        raise NotFound("service", service)
    if confirm != "yes":
        board = await load_dashboard(deps.queues, deps.probe, deps.topology, {})
        row = next((q for q in board.queues if q.service == service), None)
        return render(request, "redrive.html", principal, service=service, row=row, count=count)
    moved = await deps.redriver.redrive(service, count)
    return back("/dashboard", msg=f"Re-drove {moved} message(s) to the {service} queue.")
