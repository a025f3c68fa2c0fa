"""The JSON API (OpenAPI at /docs and /openapi.json). The pages use the same functions."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from faxbox.portal import admin, faxes, sessions
from faxbox.portal.access import visible_accounts
from faxbox.portal.dashboard import (
    HealthRow,
    QueueRow,
    RegistrationRow,
    load_dashboard,
    redrivable,
)
from faxbox.portal.deps import (
    CheckedPrincipal,
    CsrfFailed,
    CurrentPrincipal,
    Deps,
    require_dashboard,
    sip_registrations,
    submitted_csrf,
)
from faxbox.portal.security import DEFAULT_TOKEN_DAYS, MAX_TOKEN_DAYS, TokenScope
from faxbox.portal.views import failure_text, range_note
from faxbox.shared.store import NotFound
from faxbox.shared.store.records import HistoryRecord

router = APIRouter(prefix="/api")


# --- models ---------------------------------------------------------------------------


class _Projection(BaseModel):
    """An answer that is some of a stored document's fields, as they are stored."""

    @classmethod
    def of(cls, stored: BaseModel) -> Self:
        return cls.model_validate(stored.model_dump(include=set(cls.model_fields)))


class UserOut(_Projection):
    id: str
    account_id: str
    email: str
    role: str
    alternate_email: str | None


class FaxboxOut(_Projection):
    id: str
    account_id: str
    owner_user_id: str
    enabled: bool
    numbers: list[str]
    caller_id: str | None
    identity: str
    header_name: str
    header_format: str | None
    timezone: str
    permission_list: list[str]
    sender_auth: str = Field(description="required: only mail a trusted server proved; off.")
    success_notifications: bool


class UserWithFaxbox(BaseModel):
    user: UserOut
    faxbox: FaxboxOut | None

    @classmethod
    def of(cls, row: admin.UserRow) -> UserWithFaxbox:
        return cls(
            user=UserOut.of(row.user),
            faxbox=FaxboxOut.of(row.faxbox) if row.faxbox else None,
        )


class Me(BaseModel):
    user: UserOut
    csrf_token: str | None = Field(description="Send as X-CSRF-Token on changes (sessions).")


class SignIn(BaseModel):
    email: str
    password: str


class CsrfOut(BaseModel):
    csrf_token: str


class FaxOut(BaseModel):
    id: str
    account_id: str
    month: str
    direction: str | None
    status: str | None
    user_id: str | None
    remote_number: str | None
    local_number: str | None
    pages: int | None
    pages_total: int | None
    failure: str | None = Field(description="Why it failed, in plain words (None if it did not).")
    created_at: datetime
    updated_at: datetime
    documents: list[str] = Field(description="Download kinds available: pdf, tiff, original.")

    @classmethod
    def of(cls, record: HistoryRecord) -> FaxOut:
        return cls(
            id=record.id,
            account_id=record.account_id,
            month=record.month,
            direction=record.direction,
            status=record.status.value if record.status else None,
            user_id=record.user_id,
            remote_number=record.remote_number,
            local_number=record.local_number,
            pages=record.pages,
            pages_total=record.pages_total,
            failure=failure_text(record),
            created_at=record.created_at,
            updated_at=record.updated_at,
            documents=faxes.available_kinds(record),
        )


class FaxDetailOut(FaxOut):
    sender_email: str | None
    attempts: int
    result: dict[str, Any] | None
    statistics: dict[str, Any] | None
    timeline: list[dict[str, Any]]
    notifications: list[dict[str, Any]]

    @classmethod
    def of_record(cls, record: HistoryRecord) -> FaxDetailOut:
        base = FaxOut.of(record).model_dump()
        return cls(
            **base,
            sender_email=record.sender_email,
            attempts=record.attempts,
            result=record.result.model_dump(mode="json") if record.result else None,
            statistics=record.statistics.model_dump(mode="json") if record.statistics else None,
            timeline=[e.model_dump(mode="json") for e in record.timeline],
            notifications=[n.model_dump(mode="json") for n in record.notifications],
        )


class FaxPageOut(BaseModel):
    items: list[FaxOut]
    next_cursor: str | None
    start: datetime
    end: datetime
    note: str


class AccountOut(_Projection):
    id: str
    name: str
    realm: str
    reseller_id: str | None
    country: str
    allowed_countries: list[str] = Field(description="ISO codes, or ['*'] for every country.")
    daily_page_limit: int | None = Field(description="None: the platform's; 0: no cap.")


class InventoryOut(BaseModel):
    number: str
    faxbox_id: str | None
    owner: str | None


class PasswordChange(BaseModel):
    current_password: str
    new_password: str


class NumberIn(BaseModel):
    number: str


class AlternateEmailIn(BaseModel):
    alternate_email: str | None


class TokenIn(BaseModel):
    name: str = Field(default="", max_length=100)
    scope: TokenScope = Field(
        default=TokenScope.READ,
        description="read: GET requests only; send: also send, cancel and resend faxes; "
        "admin: everything its user may do.",
    )
    expires_in_days: int = Field(default=DEFAULT_TOKEN_DAYS, ge=1, le=MAX_TOKEN_DAYS)


class TokenOut(BaseModel):
    id: str
    name: str
    scope: TokenScope
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="The secret; shown only now.")


class DashboardOut(BaseModel):
    # The dashboard as the page shows it (faxbox.portal.dashboard.Dashboard), and links.
    queues: list[QueueRow]
    queue_error: str | None
    health: list[HealthRow]
    registrations: list[RegistrationRow] = []
    registration_error: str | None = None
    rabbitmq_ui_url: str
    grafana_url: str


class RedriveIn(BaseModel):
    confirm: bool = Field(description="Must be true: re-driving is not undone easily.")
    count: int = Field(
        default=100, ge=1, le=10_000, description="At most this many (those dead-lettered first)."
    )


class RedriveOut(BaseModel):
    service: str
    moved: int


# --- session --------------------------------------------------------------------------


@router.get("/session/csrf", response_model=CsrfOut, tags=["session"])
async def sign_in_token(request: Request, response: Response, deps: Deps) -> CsrfOut:
    """The double-submit token for POST /api/session (also set as a cookie)."""
    return CsrfOut(csrf_token=sessions.prelogin_token(request, response, deps))


@router.post(
    "/session",
    response_model=Me,
    tags=["session"],
    responses={429: {"description": "Too many failed sign-ins; retry after Retry-After s."}},
)
async def sign_in(body: SignIn, request: Request, response: Response, deps: Deps) -> Me:
    """Sign in; needs X-CSRF-Token from GET /api/session/csrf (double submit)."""
    if not sessions.prelogin_ok(request, await submitted_csrf(request)):
        raise CsrfFailed()
    user = await sessions.throttled_sign_in(request, deps, body.email, body.password)
    if user is None:
        raise HTTPException(401, "wrong e-mail address or password")
    csrf = await sessions.start_session(response, deps, user)
    return Me(user=UserOut.of(user), csrf_token=csrf)


@router.delete("/session", status_code=204, tags=["session"])
async def sign_out(principal: CheckedPrincipal, response: Response, deps: Deps) -> None:
    """End this session on the server (a copy of the cookie stops working too)."""
    await sessions.end_session(response, deps, principal.session_id)


@router.delete("/sessions", status_code=204, tags=["session"])
async def sign_out_everywhere(principal: CheckedPrincipal, response: Response, deps: Deps) -> None:
    """End every session of this user, on every device."""
    await deps.sessions.end_all(principal.user.id)
    await sessions.end_session(response, deps, None)


@router.post("/me/password", response_model=Me, tags=["session"])
async def new_password(
    body: PasswordChange, principal: CheckedPrincipal, response: Response, deps: Deps
) -> Me:
    """Change your password: every session and API token of yours ends; this browser
    gets a new session."""
    try:
        user = await sessions.change_password(
            deps, principal.user, body.current_password, body.new_password
        )
    except ValueError as exc:
        raise admin.InvalidInput(str(exc)) from None
    if user is None:
        raise admin.InvalidInput("the current password is wrong")
    csrf = (
        await sessions.start_session(response, deps, user) if principal.token_id is None else None
    )
    return Me(user=UserOut.of(user), csrf_token=csrf)


@router.get("/me", response_model=Me, tags=["session"])
async def me(principal: CurrentPrincipal) -> Me:
    return Me(user=UserOut.of(principal.user), csrf_token=principal.csrf)


# --- tokens ---------------------------------------------------------------------------


@router.get("/tokens", response_model=list[TokenOut], tags=["tokens"])
async def list_tokens(principal: CurrentPrincipal, deps: Deps) -> list[TokenOut]:
    return [TokenOut(**_token(t)) for t in await deps.tokens.list(principal.user)]


@router.post("/tokens", response_model=TokenCreated, status_code=201, tags=["tokens"])
async def create_token(body: TokenIn, principal: CheckedPrincipal, deps: Deps) -> TokenCreated:
    """A token for scripts; a read token may only read, and no token outlives its expiry
    or a change of its owner's password."""
    token, secret = await deps.tokens.create(
        principal.user, body.name, body.scope, body.expires_in_days
    )
    return TokenCreated(**_token(token), token=secret)


@router.delete("/tokens/{token_id}", status_code=204, tags=["tokens"])
async def revoke_token(token_id: str, principal: CheckedPrincipal, deps: Deps) -> None:
    if not await deps.tokens.revoke(principal.user.id, token_id):
        raise NotFound("token", token_id)


def _token(token: Any) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "scope": token.scope,
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "last_used_at": token.last_used_at,
    }


# --- faxes ----------------------------------------------------------------------------


@router.get("/accounts", response_model=list[AccountOut], tags=["accounts"])
async def accounts(principal: CurrentPrincipal, deps: Deps) -> list[AccountOut]:
    return [AccountOut.of(a) for a in await visible_accounts(deps.store, principal)]


@router.patch("/accounts/{account_id}", response_model=AccountOut, tags=["accounts"])
async def update_account(
    account_id: str, body: admin.AccountPolicy, principal: CheckedPrincipal, deps: Deps
) -> AccountOut:
    """Countries the account may fax (['*']: all) and its daily page cap; for its
    reseller and the platform's administrators."""
    return AccountOut.of(await admin.update_account_policy(deps.store, principal, account_id, body))


@router.get("/accounts/{account_id}/numbers", response_model=list[InventoryOut], tags=["accounts"])
async def account_numbers(
    account_id: str, principal: CurrentPrincipal, deps: Deps
) -> list[InventoryOut]:
    """The account's numbers and the faxbox each is assigned to."""
    rows = await admin.inventory(deps.store, principal, account_id)
    return [InventoryOut(number=r.number, faxbox_id=r.faxbox_id, owner=r.owner) for r in rows]


@router.post(
    "/accounts/{account_id}/numbers",
    response_model=InventoryOut,
    status_code=201,
    tags=["accounts"],
    responses={409: {"description": "Another account holds this number."}},
)
async def add_account_number(
    account_id: str, body: NumberIn, principal: CheckedPrincipal, deps: Deps
) -> InventoryOut:
    entry = await admin.add_number(deps.store, principal, account_id, body.number)
    return InventoryOut(number=entry.number, faxbox_id=None, owner=None)


@router.delete(
    "/accounts/{account_id}/numbers/{number}",
    status_code=204,
    tags=["accounts"],
    responses={409: {"description": "The number is assigned to a faxbox."}},
)
async def remove_account_number(
    account_id: str, number: str, principal: CheckedPrincipal, deps: Deps
) -> None:
    await admin.remove_number(deps.store, principal, account_id, number)


@router.get("/accounts/{account_id}/faxes", response_model=FaxPageOut, tags=["faxes"])
async def list_faxes(
    account_id: str,
    principal: CurrentPrincipal,
    deps: Deps,
    start: Annotated[datetime | None, Query(description="Default: 30 days before end.")] = None,
    end: Annotated[datetime | None, Query(description="Exclusive; default: now.")] = None,
    number: Annotated[
        str | None, Query(description="Digits of the remote or local number.")
    ] = None,
    direction: Literal["outbound", "inbound"] | None = None,
    user_id: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=faxes.MAX_PAGE)] = 50,
) -> FaxPageOut:
    try:
        date_range = faxes.DateRange.resolve(start, end)
    except ValueError as exc:
        raise admin.InvalidInput(str(exc)) from None
    page = await faxes.list_faxes(
        deps.store,
        principal,
        account_id,
        date_range,
        number=number,
        direction=direction,
        user_id=user_id,
        cursor=cursor,
        limit=limit,
    )
    return FaxPageOut(
        items=[FaxOut.of(r) for r in page.items],
        next_cursor=page.next_cursor,
        start=date_range.start,
        end=date_range.end,
        note=range_note(date_range),
    )


@router.get(
    "/accounts/{account_id}/faxes/{month}/{fax_id}", response_model=FaxDetailOut, tags=["faxes"]
)
async def fax_detail(
    account_id: str, month: str, fax_id: str, principal: CurrentPrincipal, deps: Deps
) -> FaxDetailOut:
    record = await faxes.get_fax(deps.store, principal, account_id, month, fax_id)
    return FaxDetailOut.of_record(record)


@router.get(
    "/accounts/{account_id}/faxes/{month}/{fax_id}/documents/{kind}",
    response_class=StreamingResponse,
    tags=["faxes"],
    responses={200: {"content": {"application/pdf": {}, "image/tiff": {}}}},
)
async def download(
    account_id: str,
    month: str,
    fax_id: str,
    kind: Literal["pdf", "tiff", "original"],
    principal: CurrentPrincipal,
    deps: Deps,
) -> StreamingResponse:
    record = await faxes.get_fax(deps.store, principal, account_id, month, fax_id)
    ref = faxes.document_ref(record, kind)
    chunks = await faxes.open_document(deps.store, ref)
    extension = {"pdf": "pdf", "tiff": "tif"}.get(kind) or ref.filename.rpartition(".")[2] or "bin"
    return StreamingResponse(
        chunks,
        media_type=ref.content_type,
        headers={
            "Content-Disposition": f'attachment; filename="fax-{fax_id}.{extension}"',
            "Content-Length": str(ref.length),
            "X-Content-Type-Options": "nosniff",
        },
    )


# --- administration -------------------------------------------------------------------


@router.get(
    "/accounts/{account_id}/users", response_model=list[UserWithFaxbox], tags=["administration"]
)
async def users(account_id: str, principal: CurrentPrincipal, deps: Deps) -> list[UserWithFaxbox]:
    return [UserWithFaxbox.of(r) for r in await admin.list_users(deps.store, principal, account_id)]


@router.get(
    "/accounts/{account_id}/users/{user_id}",
    response_model=UserWithFaxbox,
    tags=["administration"],
)
async def user(
    account_id: str, user_id: str, principal: CurrentPrincipal, deps: Deps
) -> UserWithFaxbox:
    return UserWithFaxbox.of(await admin.get_user(deps.store, principal, account_id, user_id))


@router.patch(
    "/accounts/{account_id}/users/{user_id}/faxbox",
    response_model=UserWithFaxbox,
    tags=["administration"],
)
async def update_faxbox(
    account_id: str,
    user_id: str,
    changes: admin.FaxboxChanges,
    principal: CheckedPrincipal,
    deps: Deps,
) -> UserWithFaxbox:
    """Change faxbox settings (creating the faxbox, disabled, if the user has none)."""
    row = await admin.update_faxbox(
        deps.store, principal, account_id, user_id, changes, deps.caller_id_scope
    )
    return UserWithFaxbox.of(row)


@router.put(
    "/accounts/{account_id}/users/{user_id}/alternate-email",
    response_model=UserWithFaxbox,
    tags=["administration"],
)
async def alternate_email(
    account_id: str,
    user_id: str,
    body: AlternateEmailIn,
    principal: CheckedPrincipal,
    deps: Deps,
) -> UserWithFaxbox:
    row = await admin.set_alternate_email(
        deps.store, principal, account_id, user_id, body.alternate_email
    )
    return UserWithFaxbox.of(row)


@router.post(
    "/accounts/{account_id}/users/{user_id}/faxbox/numbers",
    response_model=UserWithFaxbox,
    status_code=201,
    tags=["administration"],
    responses={409: {"description": "Another faxbox has this number."}},
)
async def assign_number(
    account_id: str, user_id: str, body: NumberIn, principal: CheckedPrincipal, deps: Deps
) -> UserWithFaxbox:
    row = await admin.assign_number(deps.store, principal, account_id, user_id, body.number)
    return UserWithFaxbox.of(row)


@router.delete(
    "/accounts/{account_id}/users/{user_id}/faxbox/numbers/{number}",
    response_model=UserWithFaxbox,
    tags=["administration"],
)
async def unassign_number(
    account_id: str, user_id: str, number: str, principal: CheckedPrincipal, deps: Deps
) -> UserWithFaxbox:
    row = await admin.unassign_number(deps.store, principal, account_id, user_id, number)
    return UserWithFaxbox.of(row)


@router.get(
    "/accounts/{account_id}/show-help", response_model=admin.HelpAnswer, tags=["administration"]
)
async def show_help(
    account_id: str, number: str, principal: CurrentPrincipal, deps: Deps
) -> admin.HelpAnswer:
    """The To address that faxes ``number`` from this account, or why it cannot be faxed."""
    return await admin.show_help(deps.store, principal, account_id, number)


# --- dashboard ------------------------------------------------------------------------


@router.get("/dashboard", response_model=DashboardOut, tags=["dashboard"])
async def dashboard(principal: CurrentPrincipal, deps: Deps) -> DashboardOut:
    require_dashboard(principal)
    board = await load_dashboard(
        deps.queues, deps.probe, deps.topology, deps.health_urls, sip_registrations(deps)
    )
    links = deps.links
    return DashboardOut(
        **dataclasses.asdict(board), rabbitmq_ui_url=links.rabbitmq_ui, grafana_url=links.grafana
    )


@router.post("/dashboard/queues/{service}/redrive", response_model=RedriveOut, tags=["dashboard"])
async def redrive(
    service: str, body: RedriveIn, principal: CheckedPrincipal, deps: Deps
) -> RedriveOut:
    """Move up to ``count`` of the service's dead-lettered messages back to its queue
    (needs confirm=true); a message that fails again stays dead-lettered."""
    require_dashboard(principal)
    if not redrivable(service):
        raise NotFound("service", service)
    if not body.confirm:
        raise admin.InvalidInput("re-driving needs confirm=true")
    moved = await deps.redriver.redrive(service, body.count)
    return RedriveOut(service=service, moved=moved)
