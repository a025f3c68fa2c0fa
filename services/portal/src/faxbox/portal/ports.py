"""The portal's interfaces to what is not its database: the queue figures, the services'
health, dead-letter re-driving, the SIP registrations. The real ones: ``adapters``
(queue figures, health), the bus (re-driving), the shared store (registrations); the
unit tests have fakes."""

from __future__ import annotations

from typing import Any, Protocol

from faxbox.shared.store.registrations import SipRegistrationRecord


class QueueSource(Protocol):
    """Raw queue figures of one vhost, as the management API reports them."""

    async def queues(self) -> list[dict[str, Any]]: ...


class RegistrationSource(Protocol):
    async def all(self) -> list[SipRegistrationRecord]: ...


class Redriver(Protocol):
    async def redrive(self, service: str, limit: int | None = None) -> int: ...


class HealthProbe(Protocol):
    async def check(self, url: str) -> tuple[bool, str]: ...
