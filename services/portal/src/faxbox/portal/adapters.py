"""The portal's ports on the real parts: RabbitMQ's management API and the services'
health endpoints, both over HTTP (httpx)."""

from __future__ import annotations

import urllib.parse
from typing import Any

import httpx

from faxbox.portal.dashboard import ManagementApiError


class RabbitManagement:
    """GET /api/queues/<vhost> of the RabbitMQ management plugin."""

    def __init__(
        self, client: httpx.AsyncClient, api_url: str, vhost: str, user: str, password: str
    ) -> None:
        self._client = client
        self._url = f"{api_url.rstrip('/')}/api/queues/{urllib.parse.quote(vhost, safe='')}"
        self._auth = httpx.BasicAuth(user, password)

    async def queues(self) -> list[dict[str, Any]]:
        try:
            response = await self._client.get(
                self._url,
                auth=self._auth,
                params={
                    "columns": "name,messages,messages_ready,messages_unacknowledged,"
                    "consumers,message_stats"
                },
                timeout=5.0,
            )
        except httpx.HTTPError as exc:
            raise ManagementApiError(f"RabbitMQ management API unreachable: {exc}") from None
        if response.status_code != 200:
            raise ManagementApiError(f"RabbitMQ management API answered {response.status_code}")
        body = response.json()
        return body if isinstance(body, list) else []


class HttpHealthProbe:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def check(self, url: str) -> tuple[bool, str]:
        try:
            response = await self._client.get(url, timeout=3.0)
        except httpx.HTTPError as exc:
            return False, type(exc).__name__
        return response.status_code == 200, f"HTTP {response.status_code}"
