"""The container path end to end, as an operator runs it on a machine with podman and no
image registry: `deploy/containers/build`, then `deploy/containers/up` (compose.yaml +
compose.local.yaml under podman-compose), a tenant made with the admin CLI inside the
portal's container, one email through the stack's SMTP to the sender herself with a fax
number in Bcc only, the fax across pstn-sim to the stack's inbound receiver, the sender's
"sent" mail and the receiver's fax mail read back over the stack's IMAP, then
`deploy/containers/down --volumes` and
nothing of the stack left: no container, volume, process or listening port. On the way,
every process in every container runs as a user other than root, and each Faxbox
service as `python -m faxbox.<name>`, as deploy/local/run starts them.

The mail server is compose.yaml's own (deploy/mail, built from compose.yaml's build
section; the override changes only its base image, network and ports), so the fax
crossing it shows the default compose path taking faxes by email: the fax realm's
address reaches the intake mailbox the mail-poller reads, with X-Original-To (the only
place the Bcc'd number is), and the sender's own address gets its own copy.

The stack is on the host's network on ports 17000-17999 (compose.local.yaml), beside the
development servers of deploy/local/up, which it never touches. One run at a time per
machine (/tmp/faxbox-containers.lock). The project is `faxbox-ci`, so an operator's own
`faxbox` stack is never taken down by it (but it would hold the ports: then this fails).
"""

from __future__ import annotations

import email
import fcntl
import imaplib
import json
import secrets
import smtplib
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import make_msgid
from pathlib import Path
from typing import Any, TypeVar

import pytest

from faxbox.demo.document import demo_pdf
from tests.containers.conftest import CONTAINERS, ROOT
from tests.support import load_compose_file

pytestmark = [pytest.mark.containers, pytest.mark.timeout(3600)]

PROJECT = "faxbox-ci"
LOCK = Path("/tmp/faxbox-containers.lock")
REALM = "fax.faxbox.test"
INTAKE = "fax@faxbox.test"  # compose.yaml: the mail-poller's mailbox, the realm's catch-all
ALICE, ALICE_NUMBER = "alice@faxbox.test", "+16465550101"
# pstn-sim forwards +1 646 555 01xx to the stack's inbound receiver.
BOB, BOB_NUMBER = "bob@faxbox.test", "+16465550102"
# FAXBOX_LINE_PACE (compose.yaml sets each service's own pace from it): the fax line at
# 20 times real time (transmitter, inbound, pstn-sim).
PACE = "20"
T = TypeVar("T")


def _environment(service: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (service.get("environment") or {}).items()}


LOCAL = {
    name: _environment(svc)
    for name, svc in load_compose_file(ROOT / "compose.local.yaml")["services"].items()
    if not svc.get("profiles")
}
SMTP_PORT = int(LOCAL["mail"]["MAIL_SMTP_PORT"])
IMAP_PORT = int(LOCAL["mail"]["MAIL_IMAP_PORT"])
PSTN_CONTROL = f"http://127.0.0.1:{LOCAL['pstn-sim']['FAXBOX_PSTN_SIM_HTTP_PORT']}"
PSTN_SIP_PORT = int(LOCAL["pstn-sim"]["FAXBOX_PSTN_SIM_SIP_PORT"])
FAXBOX_SERVICES = sorted(
    p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").is_file()
)
# Every port the stack listens on (TCP, or UDP for SIP).
LISTENING = sorted(
    (int(value.rpartition(":")[2]), "udp" if "SIP_PORT" in key else "tcp")
    for env in LOCAL.values()
    for key, value in env.items()
    if (key.endswith("_PORT") and key != "FAXBOX_NOTIFIER_SMTP_PORT") or key.endswith("_ADDR")
)


def eventually(check: Callable[[], T | None], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(1)


def port_taken(port: int, kind: str) -> bool:
    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, sock_type) as probe:
        if kind == "tcp":  # (a TCP port in TIME_WAIT is free; for UDP this would share)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


class Operator:
    """Runs the scripts and podman commands an operator would, with one log file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.timings: dict[str, float] = {}

    def run(self, what: str, *command: str, timeout_s: float = 600) -> str:
        start = time.monotonic()
        with self.log.open("a") as out:
            out.write(f"\n$ {' '.join(command)}\n")
            out.flush()
            result = subprocess.run(
                command,
                env=self.env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout_s,
                check=False,
            )
            out.write(result.stdout)
        self.timings[what] = self.timings.get(what, 0) + time.monotonic() - start
        assert result.returncode == 0, (
            f"{what} failed ({result.returncode}):\n{result.stdout[-4000:]}"
        )
        return result.stdout

    def podman(self, *args: str) -> str:
        return self.run("podman", "podman", *args, timeout_s=120)

    def containers(self) -> list[str]:
        return self.podman(
            "ps",
            "-a",
            "--filter",
            f"label=io.podman.compose.project={PROJECT}",
            "--format",
            "{{.Names}}",
        ).split()

    def container(self, service: str) -> str:
        [name] = self.podman(
            "ps",
            "--filter",
            f"label=io.podman.compose.project={PROJECT}",
            "--filter",
            f"label=com.docker.compose.service={service}",
            "--format",
            "{{.Names}}",
        ).split()
        return name

    def volumes(self) -> list[str]:
        return self.podman(
            "volume", "ls", "--filter", f"label=io.podman.compose.project={PROJECT}", "-q"
        ).split()

    def admin(self, *args: str) -> Any:
        """The admin CLI in the portal's image, as deploy/k8s/README.md has operators run it."""
        return json.loads(self.podman("exec", self.container("portal"), "faxbox", "--json", *args))


@pytest.fixture
def machine_lock() -> Iterator[None]:
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def fax_mail(pdf: bytes) -> EmailMessage:
    """To the sender herself: the fax address is in the envelope only (Bcc)."""
    message = EmailMessage()
    message["From"] = ALICE
    message["To"] = ALICE
    message["Subject"] = "container stack test"
    message["Message-ID"] = make_msgid(idstring=secrets.token_hex(4), domain="client.test")
    message.set_content("The attachment, please.\n")
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename="letter.pdf")
    return message


def inbox(user: str, password: str, folder: str = "INBOX") -> list[EmailMessage]:
    """The mails in a folder; levels of `folder` separated by '/' (the server's own
    delimiter is used), none when the folder does not exist."""
    imap = imaplib.IMAP4("127.0.0.1", IMAP_PORT, timeout=10)
    try:
        imap.login(user, password)
        _, [root] = imap.list('""', '""')
        delimiter = (root.decode().split('"')[1] if isinstance(root, bytes) else "") or "/"
        status, _ = imap.select(f'"{folder.replace("/", delimiter)}"', readonly=True)
        if status != "OK":
            return []
        _, found = imap.search(None, "ALL")
        mails: list[EmailMessage] = []
        for number in found[0].split():
            _, data = imap.fetch(number, "(RFC822)")
            raw = data[0]
            assert isinstance(raw, tuple)
            mail = email.message_from_bytes(raw[1], policy=default_policy)
            assert isinstance(mail, EmailMessage)
            mails.append(mail)
        return mails
    finally:
        imap.logout()


def pstn_calls() -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{PSTN_CONTROL}/calls", timeout=10) as response:
        calls: list[dict[str, Any]] = json.loads(response.read())
        return calls


def stack_processes() -> list[str]:
    """Processes on this machine that belong to the project's containers (conmon names
    the container on its command line)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"{PROJECT}_" in text:
            found.append(text.strip())
    return found


def test_the_stack_builds_runs_a_fax_through_and_goes_away(
    container_tools: dict[str, str], machine_lock: None, tmp_path: Path
) -> None:
    password = secrets.token_urlsafe(12)
    env = {
        **container_tools,
        "FAXBOX_RABBITMQ_PASSWORD": secrets.token_urlsafe(12),
        "FAXBOX_MONGO_PASSWORD": secrets.token_urlsafe(12),
        "FAXBOX_IMAP_PASSWORD": password,
        "FAXBOX_SECRET_KEY": secrets.token_urlsafe(32),
        # The stack's own mail server proves the senders who log in to it.
        "FAXBOX_VALIDATOR_AUTHSERV_IDS": '["relay.faxbox.test"]',
        "FAXBOX_GRAFANA_PASSWORD": secrets.token_urlsafe(12),
        "FAXBOX_LINE_PACE": PACE,
    }
    operator = Operator(env, tmp_path / "operator.log")
    # A run killed outright (no finally) leaves its stack: this project's only, so go.
    if operator.containers() or operator.volumes():
        operator.run("down", str(CONTAINERS / "down"), "--project", PROJECT, "--volumes")
    taken = [f"{port}/{kind}" for port, kind in LISTENING if port_taken(port, kind)]
    assert not taken, f"ports of the container stack are in use: {taken} (a stack left up?)"

    operator.run("build", str(CONTAINERS / "build"), timeout_s=2400)
    try:
        operator.run("up", str(CONTAINERS / "up"), "--project", PROJECT, timeout_s=900)
        for service in LOCAL:
            processes = operator.podman("top", operator.container(service), "user", "args")
            [_, *rows] = processes.splitlines()
            assert rows, service
            assert not [r for r in rows if r.split()[0] in ("root", "0")], (service, processes)
            if service in FAXBOX_SERVICES:
                # As deploy/local/run starts them.
                assert f"python -m faxbox.{service.replace('-', '_')}" in processes, processes
        start = time.monotonic()
        account = operator.admin("account", "create", "--name", "Containers", "--realm", REALM)
        assert account["realm"] == REALM
        operator.admin("number", "add", "--realm", REALM, "--number", ALICE_NUMBER)
        operator.admin("number", "add", "--realm", REALM, "--number", BOB_NUMBER)
        for user, number in ((ALICE, ALICE_NUMBER), (BOB, BOB_NUMBER)):
            operator.admin("user", "create", "--realm", REALM, "--email", user)
            operator.admin("faxbox", "enable", "--user", user, "--number", number)
        operator.admin(
            "carrier", "add", "--name", "pstn-sim", "--flag", "fax",
            "--sip-host", "127.0.0.1", "--sip-port", str(PSTN_SIP_PORT), "--channels", "4",
        )  # fmt: skip

        message = fax_mail(demo_pdf(pages=2))
        fax_address = f"{BOB_NUMBER}@{REALM}"
        with smtplib.SMTP("127.0.0.1", SMTP_PORT, timeout=30) as smtp:
            # Logged in: the mail server stamps the proof the faxbox requires.
            smtp.login(ALICE, password)
            smtp.send_message(message, to_addrs=[ALICE, fax_address])

        def call_done() -> dict[str, Any] | None:
            for call in pstn_calls():
                if call["to"] == BOB_NUMBER and call["ended_at"]:
                    return call
            return None

        call = eventually(call_done, 180, f"pstn-sim's call to {BOB_NUMBER} to end")
        assert call["sip_status"] == 200, call
        assert call["behaviour"] == "forward", call
        assert call["error"] is None, call

        def reply_to_alice() -> EmailMessage | None:
            for mail in inbox(ALICE, password):
                if mail["In-Reply-To"] == message["Message-ID"]:
                    return mail
            return None

        sent = eventually(reply_to_alice, 120, "the sent mail in alice's inbox")
        assert f"Fax to {BOB_NUMBER} sent" in str(sent["Subject"]), sent["Subject"]
        # One copy per envelope recipient: alice's own, as sent; the intake's, which
        # the mail-poller has moved on, marked with the address it was sent to.
        [own] = [m for m in inbox(ALICE, password) if m["Message-ID"] == message["Message-ID"]]
        assert own["X-Original-To"] is None, own["X-Original-To"]
        [intake_copy] = [
            m
            for m in inbox(INTAKE, password, "Faxbox/Processed")
            if m["Message-ID"] == message["Message-ID"]
        ]
        assert intake_copy["X-Original-To"] == fax_address, intake_copy["X-Original-To"]
        assert intake_copy["To"] == ALICE, intake_copy["To"]
        assert intake_copy["Bcc"] is None, intake_copy["Bcc"]

        def fax_for_bob() -> EmailMessage | None:
            return next(iter(inbox(BOB, password)), None)

        received = eventually(fax_for_bob, 120, "the received fax in bob's inbox")
        [attachment] = list(received.iter_attachments())
        assert attachment.get_content_type() == "application/pdf"
        pdf = attachment.get_payload(decode=True)
        assert isinstance(pdf, bytes)
        assert pdf.startswith(b"%PDF")
        operator.timings["fax"] = time.monotonic() - start
    finally:
        operator.run("down", str(CONTAINERS / "down"), "--project", PROJECT, "--volumes")

    assert operator.containers() == []
    assert operator.volumes() == []
    assert stack_processes() == []
    taken = [f"{port}/{kind}" for port, kind in LISTENING if port_taken(port, kind)]
    assert not taken, f"still listening after down: {taken}"
    print("container stack timings (s):", {k: round(v, 1) for k, v in operator.timings.items()})
