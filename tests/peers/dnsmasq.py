"""dnsmasq (Debian ``dnsmasq-base``) as a carrier's DNS: NAPTR, SRV and A records on loopback.

Never the real network: dnsmasq answers only from the records given on its command line
(``--no-resolv --no-hosts``), on a free port of 127.0.0.1, and the resolver under test is
pointed at it (``Resolver(["127.0.0.1:<port>"])``).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port, servers_required


def binary() -> str:
    path = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not Path(path).exists():
        message = "dnsmasq is not installed (deploy/local/apt.sh installs dnsmasq-base)"
        if servers_required():
            pytest.fail(message)
        pytest.skip(message)
    return path


def _answers(port: int) -> bool:
    # A bare DNS query for "." (type A): any answer means it is up.
    query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.2)
        try:
            probe.sendto(query, ("127.0.0.1", port))
            probe.recvfrom(512)
        except OSError:
            return False
    return True


@contextlib.contextmanager
def running_dnsmasq(directory: Path, records: list[str]) -> Iterator[str]:
    """dnsmasq serving ``records`` (its options, e.g. ``--srv-host=...``); yields
    ``127.0.0.1:<port>`` and stops it (by its pid) when the block ends."""
    exe = binary()
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port(socket.SOCK_DGRAM)
    log = directory / "dnsmasq.log"
    process = subprocess.Popen(
        [
            exe,
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            f"--port={port}",
            "--user=root",
            f"--pid-file={directory / 'dnsmasq.pid'}",
            "--log-queries",
            f"--log-facility={log}",
            *records,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                err = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"dnsmasq did not start: {err}")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
