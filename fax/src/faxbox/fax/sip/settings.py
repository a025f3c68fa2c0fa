"""The SIP side of a service's settings, and the user agent they describe.

The transmitter and the inbound receiver each nest one ``SipSettings`` in their own
settings (``FAXBOX_TRANSMITTER_SIP__ADVERTISED_ADDRESS``, ``FAXBOX_INBOUND_SIP__...``);
``start_user_agent`` opens the user agent they describe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from faxbox.fax.sip.ports import PortRange
from faxbox.fax.sip.resolve import Resolver
from faxbox.fax.sip.sdp import NO_EC, REDUNDANCY, T38Params
from faxbox.fax.sip.session_timer import ABSOLUTE_MIN_SE, SessionTimerSettings
from faxbox.fax.sip.stream import TlsSettings
from faxbox.fax.sip.ua import UserAgent


class SipSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    transports: tuple[Literal["udp", "tcp", "tls"], ...] = Field(
        default=("udp", "tcp", "tls"),
        description="UDP always; TCP listens on the UDP port; TLS connects out (and listens "
        "with a certificate).",
    )
    advertised_address: str | None = Field(
        default=None,
        description="The address in Via, Contact and SDP (a public address in front of a NAT).",
    )
    media_ports: str | None = Field(
        default=None, description="RTP/UDPTL ports, LOW-HIGH (a firewall's range); None: any."
    )
    tls_verify: bool = True
    tls_ca_file: Path | None = Field(default=None, description="None: the system's CA store.")
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_port: int | None = Field(default=None, ge=0, le=65535, description="0: any free port.")
    dns_servers: tuple[str, ...] = Field(
        default=(), description="host[:port] of DNS servers for SRV/NAPTR; none: the system's."
    )
    session_expires_s: int = Field(default=1800, ge=ABSOLUTE_MIN_SE)
    min_se_s: int = Field(default=ABSOLUTE_MIN_SE, ge=1)
    prefer_100rel: bool = False
    t38_max_datagram: int = Field(default=400, ge=100, le=1500)
    t38_udp_ec: Literal["t38UDPRedundancy", "t38UDPNoEC"] = "t38UDPRedundancy"
    keepalive_s: float = Field(default=30.0, ge=0)

    @field_validator("media_ports")
    @classmethod
    def _range(cls, value: str | None) -> str | None:
        if value is not None:
            PortRange.parse(value)
        return value

    def tls(self) -> TlsSettings:
        return TlsSettings(
            verify=self.tls_verify,
            ca_file=self.tls_ca_file,
            cert_file=self.tls_cert_file,
            key_file=self.tls_key_file,
        )

    def t38(self) -> T38Params:
        return T38Params(
            max_datagram=self.t38_max_datagram,
            udp_ec=NO_EC if self.t38_udp_ec == NO_EC else REDUNDANCY,
        )


async def start_user_agent(
    host: str, port: int, settings: SipSettings, **options: Any
) -> UserAgent:
    """A user agent on host:port as ``settings`` say; ``options`` as for ``UserAgent``."""
    return await UserAgent.start(
        host,
        port,
        transports=tuple(t.upper() for t in settings.transports),
        tls=settings.tls(),
        tls_port=settings.tls_port,
        keepalive_s=settings.keepalive_s,
        advertised_address=settings.advertised_address,
        media_ports=PortRange.parse(settings.media_ports) if settings.media_ports else None,
        session_timer=SessionTimerSettings(
            expires_s=settings.session_expires_s, min_se_s=settings.min_se_s
        ),
        prefer_100rel=settings.prefer_100rel,
        t38=settings.t38(),
        resolver=Resolver(settings.dns_servers),
        **options,
    )
