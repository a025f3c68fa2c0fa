"""Session timers (RFC 4028): keep a call's dialog alive, and end one whose peer is gone.

The caller proposes an interval (``Session-Expires``, no smaller than the callee's
``Min-SE``, else 422 and a retry with the larger value); the 2xx fixes the interval and
who refreshes (``refresher=uac|uas``). The refresher sends a re-INVITE or UPDATE every
half interval; the other side ends the call with a BYE when no refresh came by
``interval - min(32, interval/3)`` (§10). Our refresh changes nothing in the media: an
UPDATE without a body when the peer allows UPDATE, else a re-INVITE with the same SDP
(same ``o=`` version), so T.30 never notices.

This module is the negotiation (pure functions over headers) and ``Negotiated``, what a
dialog keeps; the dialog runs the timer.
"""

from __future__ import annotations

from dataclasses import dataclass

from faxbox.fax.sip.message import SipMessage

ABSOLUTE_MIN_SE = 90  # RFC 4028 §4: no Min-SE below 90 s on the public network


@dataclass(frozen=True, slots=True)
class SessionTimerSettings:
    """Ours: the interval we ask for, the smallest we accept (``min_se_s``)."""

    enabled: bool = True
    expires_s: int = 1800
    min_se_s: int = ABSOLUTE_MIN_SE


@dataclass(frozen=True, slots=True)
class Negotiated:
    interval_s: int
    we_refresh: bool

    @property
    def refresh_after_s(self) -> float:
        return self.interval_s / 2

    @property
    def expire_after_s(self) -> float:
        """How long the side that does not refresh waits before ending the call."""
        return self.interval_s - min(32.0, self.interval_s / 3)


class IntervalTooSmall(ValueError):
    """The request's Session-Expires is below our Min-SE: answer 422."""

    def __init__(self, min_se: int) -> None:
        super().__init__(f"Session-Expires below {min_se}")
        self.min_se = min_se


def parse_session_expires(value: str | None) -> tuple[int, str | None] | None:
    """``"1800;refresher=uac"`` → (1800, "uac"); None when absent or unreadable."""
    if not value:
        return None
    delta, *params = value.split(";")
    if not delta.strip().isdigit():
        return None
    refresher = None
    for param in params:
        name, _, val = param.partition("=")
        if name.strip().lower() == "refresher" and val.strip().lower() in ("uac", "uas"):
            refresher = val.strip().lower()
    return int(delta.strip()), refresher


def min_se_of(message: SipMessage) -> int | None:
    value = (message.headers.get("Min-SE") or "").split(";")[0].strip()
    return int(value) if value.isdigit() else None


def supports_timer(message: SipMessage) -> bool:
    return "timer" in message.headers.tokens("Supported") | message.headers.tokens("Require")


def request_headers(
    settings: SessionTimerSettings, expires_s: int | None = None
) -> list[tuple[str, str]]:
    """What our initial INVITE carries (``expires_s``: after a 422)."""
    if not settings.enabled:
        return []
    interval = max(expires_s or settings.expires_s, settings.min_se_s)
    return [("Session-Expires", str(interval)), ("Min-SE", str(settings.min_se_s))]


def uac_negotiated(response: SipMessage) -> Negotiated | None:
    """From the 2xx to our INVITE (or refresh): the interval and whether we refresh."""
    parsed = parse_session_expires(response.headers.get("Session-Expires"))
    if parsed is None:
        return None
    interval, refresher = parsed
    return Negotiated(interval, refresher != "uas")


def uas_negotiate(
    request: SipMessage, settings: SessionTimerSettings
) -> tuple[Negotiated | None, list[tuple[str, str]]]:
    """Answering an INVITE (or a refresh): what we agree to and the 2xx's headers.

    Raises ``IntervalTooSmall`` when the request's interval is below our Min-SE.
    """
    parsed = parse_session_expires(request.headers.get("Session-Expires"))
    if not settings.enabled and parsed is None:
        return None, []
    if parsed is None:
        if not settings.enabled or not supports_timer(request):
            return None, []  # a caller without the extension: no timer (§9 allows one)
        interval = max(settings.expires_s, settings.min_se_s)
        return Negotiated(interval, False), [
            ("Require", "timer"),
            ("Session-Expires", f"{interval};refresher=uac"),
        ]
    interval, refresher = parsed
    if interval < settings.min_se_s:
        raise IntervalTooSmall(settings.min_se_s)
    peer_min = min_se_of(request) or 0
    interval = max(interval, peer_min)
    if refresher is None:
        refresher = "uac" if supports_timer(request) else "uas"
    headers = [("Session-Expires", f"{interval};refresher={refresher}")]
    if supports_timer(request):
        headers.insert(0, ("Require", "timer"))
    return Negotiated(interval, refresher == "uas"), headers
