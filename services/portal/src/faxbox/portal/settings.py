"""Settings of the portal, composed from the shared parts plus its own."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr

from faxbox.shared.secretbox import SecretSettings
from faxbox.shared.settings import OwnershipSettings, ServiceSettings, WebhookTargetSettings


class PortalSettings(ServiceSettings, OwnershipSettings, SecretSettings, WebhookTargetSettings):
    service_prefix: ClassVar[str] = "portal_"

    portal_host: str = "127.0.0.1"
    portal_port: int = Field(default=8080, ge=0, le=65535)
    portal_trusted_proxies: tuple[str, ...] = Field(
        default=(),
        description=(
            "Addresses or networks of the reverse proxies in front of the portal (JSON list, "
            'e.g. ["10.0.0.0/8"]); only their X-Forwarded-For/-Proto are believed.'
        ),
    )
    portal_session_max_age_s: int = Field(default=12 * 3600, ge=60)
    portal_cookie_secure: bool = Field(
        default=False, description="Send cookies over HTTPS only (set behind TLS)."
    )
    portal_rabbitmq_api_url: str = "http://127.0.0.1:15672"
    portal_rabbitmq_api_user: str = "guest"
    portal_rabbitmq_api_password: SecretStr = SecretStr("guest")
    portal_rabbitmq_ui_url: str = Field(default="", description="Link shown on the dashboard.")
    portal_grafana_url: str = Field(default="", description="Link shown on the dashboard.")
    portal_service_health_urls: dict[str, str] = Field(
        default_factory=dict,
        description='JSON object, e.g. {"validator": "http://127.0.0.1:9101/readyz"}.',
    )
    portal_signin_failures_per_email_and_address: int = Field(
        default=5, ge=1, description="Failed sign-ins to one account from one address."
    )
    portal_signin_failures_per_address: int = Field(
        default=20, ge=1, description="Failed sign-ins per client address in the window."
    )
    portal_signin_failures_per_email: int = Field(
        default=100, ge=1, description="Failed sign-ins to one account from all addresses."
    )
    portal_signin_window_s: int = Field(default=15 * 60, ge=1)
    portal_max_upload_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1024,
        description="Largest document sent through the API or the Send page (the "
        "validator's own limit is checked again when it decides).",
    )
    portal_render_timeout_s: float = Field(
        default=60.0, gt=0, description="Rendering the preview of a document to send."
    )
    portal_max_pages: int = Field(default=100, ge=1, description="Pages a preview renders.")
    portal_publish_wait_s: float = Field(
        default=5.0,
        gt=0,
        description="How long a send, cancel or replay waits for the broker's confirm "
        "before answering; it is recorded already, and the outbox sweep publishes it later.",
    )
