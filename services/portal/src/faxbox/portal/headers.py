"""Security headers on every response.

* ``Content-Security-Policy``: nothing but this origin's own styles and images, no
  script at all (the pages have none; an injected ``<script>`` would not run), forms
  post only here, and no page may be framed (``frame-ancestors 'none'``, with
  ``X-Frame-Options: DENY`` for browsers that predate it): no clickjacking.
* ``Strict-Transport-Security`` when the request came over TLS (directly, or through a
  trusted proxy that says so): browsers then refuse plain HTTP to the portal.
* ``X-Content-Type-Options: nosniff`` (a download is never run as something else),
  ``Referrer-Policy: same-origin`` (fax ids in URLs stay here), and ``Cache-Control:
  no-store`` on everything but the stylesheet (fax pages and downloads are private).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from faxbox.portal.clientaddr import TrustedProxies

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HSTS = "max-age=31536000; includeSubDomains"
STATIC_PREFIX = "/static/"


def install_security_headers(app: FastAPI, proxies: TrustedProxies) -> None:
    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        headers = response.headers
        headers["Content-Security-Policy"] = CSP
        headers["X-Frame-Options"] = "DENY"
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "same-origin"
        if not request.url.path.startswith(STATIC_PREFIX):
            headers["Cache-Control"] = "no-store"
        if proxies.over_tls(request):
            headers["Strict-Transport-Security"] = HSTS
        return response
