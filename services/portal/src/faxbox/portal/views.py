"""How the portal shows things: its templates, the page renderer, and the texts the
pages and the JSON API both use."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from faxbox.portal import faxes
from faxbox.portal.security import Principal
from faxbox.shared.store import NumberAlreadyAssigned, NumberHeldByAnotherAccount, NumberInUse
from faxbox.shared.store.records import HistoryRecord

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def render(
    request: Request,
    name: str,
    principal: Principal | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    context |= {
        "principal": principal,
        "csrf": principal.csrf if principal else None,
        "show_dashboard": principal is not None and principal.is_platform_admin,
        "msg": request.query_params.get("msg"),
        "error": context.get("error") or request.query_params.get("error"),
        "failure_text": failure_text,
    }
    return TEMPLATES.TemplateResponse(request, name, context, status_code=status_code)


def back(url: str, **params: str) -> RedirectResponse:
    """Back to a page after its form was sent, with the ``msg`` or ``error`` it shows."""
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v})
    return RedirectResponse(f"{url}?{query}" if query else url, status_code=303)


def number_refusal(exc: NumberAlreadyAssigned | NumberHeldByAnotherAccount | NumberInUse) -> str:
    """Why a number could not be added, assigned or released."""
    if isinstance(exc, NumberAlreadyAssigned):
        # Not str(exc): it names the other faxbox, which may be another tenant's.
        return f"{exc.number} is already assigned to another faxbox"
    if isinstance(exc, NumberHeldByAnotherAccount):
        return f"{exc.number} belongs to another account"
    return f"{exc.number} is assigned to a faxbox; unassign it first"


def failure_text(record: HistoryRecord) -> str | None:
    if record.result is not None:
        return record.result.text
    if record.rejection_reasons:
        return "; ".join(r.get("text") or r.get("code", "") for r in record.rejection_reasons)
    return None


def range_note(date_range: faxes.DateRange) -> str:
    return (
        f"Faxes from {date_range.start:%Y-%m-%d %H:%M} UTC up to {date_range.end:%Y-%m-%d %H:%M}"
        f" UTC. Faxes older than {date_range.start:%Y-%m-%d} are outside this range: "
        "widen the start date to see them."
    )
