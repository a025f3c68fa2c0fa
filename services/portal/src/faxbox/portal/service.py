"""Wiring of the portal: settings, connections, the FastAPI app served by uvicorn inside
the runner's lifecycle (health and metrics on FAXBOX_HTTP_PORT, the portal on
FAXBOX_PORTAL_PORT)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import uvicorn
from fastapi import FastAPI

from faxbox.portal.adapters import HttpHealthProbe, RabbitManagement
from faxbox.portal.app import create_app
from faxbox.portal.clientaddr import TrustedProxies
from faxbox.portal.dashboard import vhost_of
from faxbox.portal.deps import Links, PortalDeps
from faxbox.portal.outbound import SendLimits
from faxbox.portal.security import SessionStore, TokenStore
from faxbox.portal.settings import PortalSettings
from faxbox.portal.throttle import SignInLimits, SignInThrottle
from faxbox.shared import runner
from faxbox.shared.runner import Runtime
from faxbox.shared.store.signing_keys import SigningKeys
from faxbox.shared.store.webhooks import WebhookStore
from faxbox.shared.urlguard import parse_networks
from faxbox.shared.wiring import infrastructure, outbox

log = logging.getLogger(__name__)

Settings = PortalSettings
SERVICE = "portal"


class _Server(uvicorn.Server):
    # The runner owns SIGTERM/SIGINT; uvicorn must not take them over.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve(app: FastAPI, host: str, port: int) -> AsyncIterator[_Server]:
    """Run uvicorn until the context ends; the bound port is in ``server.servers``."""
    server = _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            log_config=None,
            access_log=False,
            # uvicorn would believe X-Forwarded-For/-Proto from 127.0.0.1 (its default
            # forwarded_allow_ips); the portal decides itself (FAXBOX_PORTAL_TRUSTED_PROXIES).
            proxy_headers=False,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task  # raises why it could not start (port in use …)
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.02)
    try:
        yield server
    finally:
        server.should_exit = True
        await task


def bound_port(server: uvicorn.Server) -> int:
    port: int = server.servers[0].sockets[0].getsockname()[1]
    return port


@contextlib.asynccontextmanager
async def service(runtime: Runtime, settings: PortalSettings) -> AsyncIterator[None]:
    async with (
        infrastructure(settings, runtime) as infra,
        # Submissions, cancels and replays: recorded, published, swept if unconfirmed.
        outbox(infra, settings, SERVICE) as box,
        httpx.AsyncClient() as http,
    ):
        tokens = TokenStore(infra.store.db)
        await tokens.ensure_indexes()
        sessions = SessionStore(infra.store.db, settings.portal_session_max_age_s)
        await sessions.ensure_indexes()
        signin = SignInThrottle(
            infra.store.db,
            SignInLimits(
                per_email_and_address=settings.portal_signin_failures_per_email_and_address,
                per_address=settings.portal_signin_failures_per_address,
                per_email=settings.portal_signin_failures_per_email,
                window_s=settings.portal_signin_window_s,
            ),
        )
        await signin.ensure_indexes()
        await WebhookStore(infra.store.db).ensure_indexes()
        secrets = settings.box()
        if secrets is None:
            log.warning("FAXBOX_SECRET_KEY is not set: webhook signing keys cannot be shown")
        deps = PortalDeps(
            store=infra.store,
            tokens=tokens,
            sessions=sessions,
            queues=RabbitManagement(
                http,
                settings.portal_rabbitmq_api_url,
                vhost_of(settings.amqp_url),
                settings.portal_rabbitmq_api_user,
                settings.portal_rabbitmq_api_password.get_secret_value(),
            ),
            probe=HttpHealthProbe(http),
            redriver=infra.bus,
            topology=infra.bus.topology,
            cookie_secure=settings.portal_cookie_secure,
            proxies=TrustedProxies.parse(settings.portal_trusted_proxies),
            caller_id_scope=settings.caller_id_scope,
            health_urls=dict(settings.portal_service_health_urls),
            links=Links(
                rabbitmq_ui=settings.portal_rabbitmq_ui_url, grafana=settings.portal_grafana_url
            ),
            signin=signin,
            outbox=box,
            signing_keys=SigningKeys(infra.store.db, secrets) if secrets else None,
            webhook_networks=parse_networks(settings.webhooks_allowed_networks),
            send_limits=SendLimits(
                max_upload_bytes=settings.portal_max_upload_bytes,
                render_timeout_s=settings.portal_render_timeout_s,
                max_pages=settings.portal_max_pages,
                publish_wait_s=settings.portal_publish_wait_s,
            ),
        )
        async with serve(create_app(deps), settings.portal_host, settings.portal_port) as server:
            runtime.add_check("http", lambda: server.started and not server.should_exit)
            log.info(
                "portal listening",
                extra={"url": f"http://{settings.portal_host}:{bound_port(server)}"},
            )
            yield


def main() -> None:
    """``python -m faxbox.portal``: the settings from the environment, then run."""
    runner.main(SERVICE, PortalSettings, service)
