"""Media only from the peer the SDP named, latched to the port it actually sends from.

A call's RTP or UDPTL socket takes datagrams from the address in the other side's SDP
and from nowhere else: anyone who guessed the port could otherwise inject audio or
T.38 into a fax (or flood it). Carriers and their session border controllers often
send from another port than the one they announced (NAT, a media relay), so the port is
learnt rather than required, as carriers expect of "symmetric RTP" (RFC 4961) peers:
the first datagram from the SDP's IP address fixes the port, and from then on only
that address and port is heard, and answered (our media goes back to where theirs comes
from). Before the SDP is known nothing is heard. A re-INVITE that names a new address
starts over.

A port other than the announced one is learnt only from a datagram that can begin a
stream (``fresh``; for UDPTL, numbered near the start). A carrier's media relay sends
every call's media from one IP address; when a restart gives one of our calls the port
of a call that died with it, the relay may still be sending that dead call's media to it,
mid-way through its fax. Latched to that, the new call would take part in the old fax:
its pages would be received for the wrong faxbox, or confirmed by the wrong far end (a
chaos run saw a fax arrive twice that way, once at another call's far end).
"""

from __future__ import annotations

from faxbox.fax.sip.transport import Address


class SourceLatch:
    def __init__(self) -> None:
        self.expected: Address | None = None  # as the SDP said
        self.latched: Address | None = None  # where it really comes from
        self.dropped = 0  # datagrams from anywhere else

    def expect(self, remote: Address) -> None:
        if remote != self.expected:
            self.expected, self.latched = remote, None

    def admit(self, source: Address, *, fresh: bool = True) -> bool:
        """Whether a datagram from ``source`` is the peer's; ``fresh``: it can begin a
        stream (without it, only the announced address itself is latched)."""
        if self.latched is not None:
            ok = source == self.latched
        elif (
            self.expected is not None
            and source[0] == self.expected[0]
            and (fresh or source == self.expected)
        ):
            self.latched = source
            ok = True
        else:
            ok = False
        if not ok:
            self.dropped += 1
        return ok

    @property
    def destination(self) -> Address | None:
        """Where to send: the latched source once there is one, else what the SDP said."""
        return self.latched or self.expected
