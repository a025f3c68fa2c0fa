"""A carrier document (``faxbox.shared.store.Carrier``) as the SIP stack sees it.

``carrier_uri`` is where its calls go: ``sip:host:port`` with ``;transport=tcp|tls``,
or without a port when the host is a name to look up (RFC 3263 SRV/NAPTR), or its
``sip_uri`` as given. ``registration`` keeps our contact registered with it.
"""

from __future__ import annotations

from collections.abc import Callable

from faxbox.fax.sip.digest import Credentials
from faxbox.fax.sip.registration import RegistrarHost, Registration, RegistrationStatus
from faxbox.fax.sip.resolve import is_ip
from faxbox.shared.secretbox import SecretBox
from faxbox.shared.store import Carrier


def carrier_uri(carrier: Carrier) -> str:
    if carrier.sip_host:
        port = carrier.sip_port or (5060 if is_ip(carrier.sip_host) else None)
        hostport = carrier.sip_host if port is None else f"{carrier.sip_host}:{port}"
        transport = "" if carrier.sip_transport == "udp" else f";transport={carrier.sip_transport}"
        return f"sip:{hostport}{transport}"
    if carrier.sip_uri:
        return carrier.sip_uri
    raise ValueError(f"carrier {carrier.name} has no SIP address")


def credentials(carrier: Carrier, secrets: SecretBox | None) -> Credentials | None:
    """What we answer the carrier's challenges with; ``secrets`` opens its sealed password.

    A password that does not open (no or another FAXBOX_SECRET_KEY) raises: the caller's
    work is retried, then dead-lettered with the reason, for the operator to fix.
    """
    if not carrier.sip_username:
        return None
    return Credentials(carrier.sip_username, carrier.sip_secret(secrets) or "")


def registration(
    ua: RegistrarHost,
    carrier: Carrier,
    *,
    secrets: SecretBox | None = None,
    on_change: Callable[[RegistrationStatus], None] | None = None,
) -> Registration:
    """Our registration with ``carrier`` (its ``register`` flag set, a username given)."""
    if not carrier.sip_username:
        raise ValueError(f"carrier {carrier.name} registers but has no sip_username")
    return Registration(
        ua,
        carrier_uri(carrier),
        carrier.sip_username,
        credentials=credentials(carrier, secrets),
        domain=carrier.domain,
        expires_s=carrier.register_expires_s,
        proxy=carrier.outbound_proxy,
        on_change=on_change,
    )
