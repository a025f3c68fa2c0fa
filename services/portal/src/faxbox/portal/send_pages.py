"""The "Send a fax" pages, and Cancel / Resend on a fax.

Two steps, no script needed: the form (document, numbers, faxbox) goes to
``/send/preview``, which checks it as the API does, stores the document, renders page
1 as it will be transmitted (``preview``) and keeps a draft; the preview page's Send
button submits the draft (``outbound.submit``, the API's own path). A fax is followed
at ``/fax/{id}``, which shows it as queued until the validator has decided it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import RedirectResponse, Response

from faxbox.portal import outbound
from faxbox.portal.access import faxbox_of
from faxbox.portal.deps import CheckedPrincipal, CurrentPrincipal, Deps
from faxbox.portal.localtime import clock_for
from faxbox.portal.outbound import SendRefused
from faxbox.portal.preview import preview
from faxbox.portal.security import Principal
from faxbox.portal.submissions import Draft
from faxbox.portal.views import back, render
from faxbox.render import RenderRefused
from faxbox.shared.contracts import month_of
from faxbox.shared.faxview import TERMINAL_STATUSES, api_status
from faxbox.shared.store import Faxbox, NotFound, new_id
from faxbox.shared.store.records import HistoryRecord
from faxbox.shared.tagline import header_fields

router = APIRouter(include_in_schema=False)


async def _faxboxes(deps: Deps, principal: Principal) -> list[Faxbox]:
    if principal.is_admin:
        return await deps.store.list_faxboxes(account_id=principal.user.account_id)
    own = await faxbox_of(deps.store, principal.user)
    return [own] if own else []


async def _form(
    request: Request, deps: Deps, principal: Principal, status_code: int = 200, **context: object
) -> Response:
    return render(
        request,
        "send.html",
        principal,
        status_code=status_code,
        faxboxes=await _faxboxes(deps, principal),
        **context,
    )


@router.get("/send")
async def send_form(request: Request, principal: CurrentPrincipal, deps: Deps) -> Response:
    return await _form(request, deps, principal)


@router.post("/send/preview")
async def send_preview(
    request: Request,
    principal: CheckedPrincipal,
    deps: Deps,
    file: Annotated[UploadFile, File()],
    to: Annotated[str, Form()] = "",
    faxbox: Annotated[str, Form()] = "",
) -> Response:
    limits = deps.send_limits
    data = await file.read(limits.max_upload_bytes + 1)
    kept = {"to": to, "faxbox_id": faxbox}
    try:
        box, account = await outbound.sending_faxbox(deps.store, principal, faxbox or None)
        numbers = outbound.checked_numbers([to], account, box)
        kind = outbound.document_kind(data, limits)
    except SendRefused as refused:
        return await _form(request, deps, principal, refused.status, error=refused.message, **kept)
    draft_id = new_id("fax")
    now = datetime.now(UTC)
    try:
        shown = await preview(
            data,
            box,
            header_fields(box, numbers[0], draft_id, now),
            timeout_s=limits.render_timeout_s,
            max_pages=limits.max_pages,
        )
    except RenderRefused as refused:
        return await _form(request, deps, principal, 422, error=refused.message, **kept)
    ref = await deps.store.documents.put(
        account.id,
        month_of(now),
        data,
        filename=outbound.safe_name(file.filename or "document", kind),
        content_type="application/pdf" if kind == "pdf" else "image/tiff",
        metadata={"fax_id": draft_id, "role": "upload"},
    )
    draft = Draft(
        _id=draft_id,
        account_id=account.id,
        user_id=principal.user.id,
        faxbox_id=box.id,
        numbers=numbers,
        document=ref,
        pages=shown.pages,
        preview_png=shown.png,
        created_at=now,
    )
    await deps.sending.submissions.save_draft(draft)
    return render(request, "send_preview.html", principal, draft=draft, faxbox=box)


@router.get("/send/drafts/{draft_id}/page1.png")
async def draft_page(draft_id: str, principal: CurrentPrincipal, deps: Deps) -> Response:
    draft = await deps.sending.submissions.draft(draft_id, principal.user.id)
    if draft is None:
        raise NotFound("draft", draft_id)
    return Response(
        draft.preview_png, media_type="image/png", headers={"Cache-Control": "no-store"}
    )


@router.post("/send/drafts/{draft_id}")
async def send_draft(draft_id: str, principal: CheckedPrincipal, deps: Deps) -> Response:
    draft = await deps.sending.submissions.draft(draft_id, principal.user.id)
    if draft is None:
        raise NotFound("draft", draft_id)
    submitted = await outbound.submit(
        deps.sending,
        principal,
        faxbox_id=draft.faxbox_id,
        to=draft.numbers,
        document=draft.document,
        channel="portal",
        submission_id=draft.id,
    )
    await deps.sending.submissions.drop_draft(draft.id)
    count = len(submitted.submission.fax_ids)
    return _back(
        submitted.submission.fax_ids[0], msg=f"Sending {count} fax{'es' if count > 1 else ''}."
    )


@router.get("/fax/{fax_id}")
async def fax_by_id(
    request: Request, fax_id: str, principal: CurrentPrincipal, deps: Deps
) -> Response:
    """A fax by id alone: its detail page once it has a history, else its queued state."""
    found = await outbound.locate(deps.store, deps.sending.submissions, principal, fax_id)
    if found.record is not None:
        record = found.record
        url = f"/faxes/{record.account_id}/{record.month}/{record.id}"
        query = request.url.query
        return RedirectResponse(f"{url}?{query}" if query else url, status_code=303)
    submission = found.submission
    assert submission is not None
    return render(
        request,
        "fax_queued.html",
        principal,
        fax=found.view(),
        others=[f for f in submission.fax_ids if f != fax_id],
        clock=await clock_for(deps.store, principal.user, found.account_id),
        can_cancel=True,
    )


@router.post("/fax/{fax_id}/cancel")
async def cancel_fax(fax_id: str, principal: CheckedPrincipal, deps: Deps) -> Response:
    try:
        await outbound.cancel(deps.sending, principal, fax_id)
    except SendRefused as refused:
        return _back(fax_id, error=refused.message)
    return _back(fax_id, msg="Cancelling: a fax waiting ends now, a call in progress is hung up.")


@router.post("/fax/{fax_id}/resend")
async def resend_fax(fax_id: str, principal: CheckedPrincipal, deps: Deps) -> Response:
    try:
        submitted = await outbound.resend(deps.sending, principal, fax_id)
    except SendRefused as refused:
        return _back(fax_id, error=refused.message)
    return _back(submitted.submission.fax_ids[0], msg=f"Sent again as a new fax (was {fax_id}).")


def fax_actions(record: HistoryRecord) -> dict[str, bool]:
    """Which buttons the fax page shows."""
    outbound_fax = record.direction == "outbound"
    return {
        "can_cancel": outbound_fax and api_status(record.status) not in TERMINAL_STATUSES,
        "can_resend": outbound_fax
        and "original" in record.documents
        and bool(record.remote_number),
    }


def _back(fax_id: str, **params: str) -> RedirectResponse:
    return back(f"/fax/{fax_id}", **params)
