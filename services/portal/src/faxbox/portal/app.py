"""The FastAPI application, assembled: routers, error mapping, dependencies.

``create_app(deps)`` builds the app from explicit dependencies (nothing connects at
import time); :mod:`faxbox.portal.service` wires the real ones.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from faxbox.portal import api, api_v1, pages, send_pages, webhook_pages
from faxbox.portal.access import Forbidden
from faxbox.portal.admin import InvalidInput
from faxbox.portal.deps import CsrfFailed, NotSignedIn, PortalDeps
from faxbox.portal.headers import STATIC_PREFIX, install_security_headers
from faxbox.portal.outbound import SendRefused
from faxbox.portal.throttle import SignInThrottle, TooManyFailures
from faxbox.portal.views import TEMPLATES, number_refusal
from faxbox.portal.webhook_admin import NotConfigured
from faxbox.shared.store import (
    InvalidCursor,
    NotFound,
    NumberAlreadyAssigned,
    NumberHeldByAnotherAccount,
    NumberInUse,
)

STYLESHEET = (Path(__file__).parent / "static" / "portal.css").read_bytes()


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error(request: Request, status: int, message: str, **headers: str) -> Response:
    if is_api(request):
        return JSONResponse({"detail": message}, status_code=status, headers=headers or None)
    return TEMPLATES.TemplateResponse(
        request,
        "error.html",
        {"status": status, "message": message, "principal": None},
        status_code=status,
        headers=headers or None,
    )


def install_error_handlers(app: FastAPI) -> None:
    async def not_signed_in(request: Request, exc: Exception) -> Response:
        if is_api(request):
            return JSONResponse(
                {"detail": "not signed in"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return RedirectResponse("/login", status_code=303)

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(request, 404, "not found")

    async def forbidden(request: Request, exc: Exception) -> Response:
        return _error(request, 403, str(exc) or "forbidden")

    async def csrf_failed(request: Request, exc: Exception) -> Response:
        return _error(request, 403, "missing or wrong CSRF token; reload the page and retry")

    async def invalid(request: Request, exc: Exception) -> Response:
        return _error(request, 422, str(exc))

    async def number_refused(
        request: Request, exc: NumberAlreadyAssigned | NumberHeldByAnotherAccount | NumberInUse
    ) -> Response:
        return _error(request, 409, number_refusal(exc))

    async def bad_cursor(request: Request, exc: Exception) -> Response:
        return _error(request, 400, str(exc))

    async def too_many(request: Request, exc: TooManyFailures) -> Response:
        return _error(request, 429, exc.message, **{"Retry-After": str(exc.retry_after_s)})

    async def send_refused(request: Request, exc: SendRefused) -> Response:
        if is_api(request):
            return JSONResponse({"detail": exc.message, "code": exc.code}, status_code=exc.status)
        return _error(request, exc.status, exc.message)

    async def not_configured(request: Request, exc: Exception) -> Response:
        return _error(request, 503, str(exc))

    handlers: dict[type[Exception], Any] = {
        NotSignedIn: not_signed_in,
        NotFound: not_found,
        Forbidden: forbidden,
        CsrfFailed: csrf_failed,
        InvalidInput: invalid,
        NumberAlreadyAssigned: number_refused,
        NumberHeldByAnotherAccount: number_refused,
        NumberInUse: number_refused,
        InvalidCursor: bad_cursor,
        TooManyFailures: too_many,
        SendRefused: send_refused,
        NotConfigured: not_configured,
    }
    for exc_type, handler in handlers.items():
        app.add_exception_handler(exc_type, handler)


# Uploads: a request announcing more than the document limit plus room for the form's
# other fields is refused before its body is read (the multipart parser would spool it).
_UPLOAD_PATHS = ("/api/v1/faxes", "/send/preview")
_FORM_ROOM = 64 * 1024


def install_upload_limit(app: FastAPI, max_upload_bytes: int) -> None:
    @app.middleware("http")
    async def refuse_oversized_uploads(request: Request, call_next: Any) -> Response:
        if request.method == "POST" and request.url.path in _UPLOAD_PATHS:
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > max_upload_bytes + _FORM_ROOM:
                mib = max_upload_bytes / (1024 * 1024)
                message = f"The document is larger than {mib:g} MB, the most that can be faxed."
                if is_api(request):
                    return JSONResponse(
                        {"detail": message, "code": "document_too_large"}, status_code=413
                    )
                return _error(request, 413, message)
        response: Response = await call_next(request)
        return response


def create_app(deps: PortalDeps) -> FastAPI:
    app = FastAPI(
        title="Faxbox portal",
        version="1",
        description="Fax history, sending faxes, webhooks, faxbox administration and the "
        "queue dashboard. Scripts authenticate with `Authorization: Bearer <API token>`; "
        "sending needs a token with scope `send` (or `admin`). See docs/api.md.",
        # Swagger UI and ReDoc load their scripts from a CDN and run inline script, which
        # the portal's CSP forbids; the OpenAPI document itself stays at /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    if deps.signin is None:
        deps = dataclasses.replace(deps, signin=SignInThrottle(deps.store.db))
    app.state.deps = deps
    install_error_handlers(app)
    install_security_headers(app, deps.proxies)

    @app.get(f"{STATIC_PREFIX}portal.css", include_in_schema=False)
    async def stylesheet() -> Response:
        return Response(
            STYLESHEET, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"}
        )

    install_upload_limit(app, deps.send_limits.max_upload_bytes)
    app.include_router(api.router)
    app.include_router(api_v1.router)
    app.include_router(pages.router)
    app.include_router(send_pages.router)
    app.include_router(webhook_pages.router)
    return app
