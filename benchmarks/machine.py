"""Describe this machine and the servers the benchmarks ran against: results/machine.json."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

RESULT = Path(__file__).resolve().parent / "results" / "machine.json"


def _run(*command: str) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout or out.stderr).strip()


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def _package(name: str) -> str:
    return _run("dpkg-query", "-W", "-f", "${Version}", name)


def main() -> None:
    description = {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "os": _run("sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"),
        "python": platform.python_version(),
        "rabbitmq_server": _package("rabbitmq-server"),
        "dovecot": _package("dovecot-core"),
        "libspandsp2": _package("libspandsp2"),
        "ghostscript": _package("ghostscript"),
        "ferretdb": (_run("/opt/faxbox/bin/ferretdb", "--version").splitlines() or [""])[0],
        "described_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    RESULT.write_text(json.dumps(description, indent=2) + "\n")
    print(json.dumps(description, indent=2))


if __name__ == "__main__":
    main()
