"""Datagrams the kernel dropped so far because a socket's receive buffer was full.

A call's media (RTP, UDPTL) arrives on a socket of its own; when its process does not
read it in time, the kernel drops what no longer fits and counts it machine-wide in
/proc/net/snmp (``Udp: RcvbufErrors``). Lost T.38 packets are lost T.30 frames, which
end calls on the far end's timers: a benchmark reports the delta beside its redials.
"""

from __future__ import annotations

from pathlib import Path


def receive_buffer_drops() -> int:
    """``RcvbufErrors`` of UDP over IPv4 and IPv6 since the machine started."""
    total = 0
    for table, prefix in (("/proc/net/snmp", "Udp:"), ("/proc/net/snmp6", "Udp6RcvbufErrors")):
        try:
            lines = Path(table).read_text().splitlines()
        except OSError:
            continue
        if prefix == "Udp:":
            rows = [line.split()[1:] for line in lines if line.startswith(prefix)]
            if len(rows) >= 2:
                total += int(dict(zip(rows[0], rows[1], strict=True)).get("RcvbufErrors", 0))
        else:
            total += sum(int(line.split()[1]) for line in lines if line.startswith(prefix))
    return total
