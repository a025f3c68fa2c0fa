"""CPU seconds used so far, from /proc: the whole machine, the local servers, one process."""

from __future__ import annotations

import os
from pathlib import Path


def machine_busy_s() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / tick, idle / tick


def infra_cpu_s() -> dict[str, float]:
    """CPU seconds so far of the local servers: RabbitMQ (beam.smp), FerretDB, Dovecot."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        server = (
            "rabbitmq"
            if comm.startswith("beam")
            else "ferretdb"
            if comm == "ferretdb"
            else "dovecot"
            if comm in {"dovecot", "imap", "imap-login", "lmtp", "auth", "imap-hibernate"}
            else None
        )
        if server is None:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        used[server] = used.get(server, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return used


def process_cpu_s(pid: int) -> float:
    """CPU seconds so far of one process (its threads included)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
