"""A FerretDB of a test's own: its own port and data directory, started and stopped at will.

Tests of what a service does while its database is away (starting during an outage, a
fax arriving during one) point the service at this server and stop it, without
touching the shared FerretDB every other test uses. The binary is the one
deploy/local/ferretdb.sh installs (``FAXBOX_FERRETDB_BIN`` overrides its path); without
it the test fails under CI and skips elsewhere, as for the other servers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import children
from tests.support import free_port, servers_required

DEFAULT_BIN = Path("/opt/faxbox/bin/ferretdb")


@dataclass
class PrivateFerretDB:
    directory: Path
    port: int = field(default_factory=free_port)
    debug_port: int = field(default_factory=free_port)
    binary: Path = field(
        default_factory=lambda: Path(os.environ.get("FAXBOX_FERRETDB_BIN", DEFAULT_BIN))
    )
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if not self.binary.is_file():
            message = f"no FerretDB binary at {self.binary}; run deploy/local/up"
            if servers_required():
                pytest.fail(message)
            pytest.skip(message)

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    @property
    def log_path(self) -> Path:
        return self.directory / "ferretdb.log"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start it and wait until it accepts connections."""
        data, state = self.directory / "data", self.directory / "state"
        data.mkdir(parents=True, exist_ok=True)
        state.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = children.spawn(
                [
                    str(self.binary),
                    "--handler=sqlite",
                    f"--sqlite-url=file:{data}/",
                    f"--state-dir={state}",
                    f"--listen-addr=127.0.0.1:{self.port}",
                    f"--debug-addr=127.0.0.1:{self.debug_port}",
                    "--telemetry=disable",
                    "--log-level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"FerretDB exited with {self.proc.returncode}: {self.log_path.read_text()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"FerretDB on port {self.port} did not listen in {timeout_s} s")

    def stop(self) -> None:
        """End it (SIGTERM, then SIGKILL): its port refuses connections afterwards."""
        if self.proc is not None:
            children.end(self.proc.pid, grace_s=10)
            self.proc.wait(10)
            self.proc = None
