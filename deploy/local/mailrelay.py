"""The local stack's outgoing mail server: SMTP in, Dovecot mailboxes out.

Development only (loopback, no authentication, no TLS). The notifier and ``faxbox demo``
send mail here, as they would to a real smarthost:

- a recipient in a local domain (``--local-domain``, e.g. alice@faxbox.test) is delivered
  to that Dovecot user over LMTP, so it shows up in their IMAP inbox;
- a recipient in a catch-all domain (``--catch-all fax.faxbox.test=fax@faxbox.test``, the
  fax realm) goes to that one mailbox, which is what the mail-poller watches;
- anything else would leave the machine; there is no internet here, so it is written to
  ``--sink DIR`` as an .eml file and logged.

Dovecot down or answering 4xx: the client gets 451 and retries (the notifier does).
An unknown local user gets 550, as from a real server.

With ``--password-file`` the relay also offers AUTH PLAIN and LOGIN (still no TLS) and
takes any user name with that password, as compose.yaml's development mail server
(deploy/mail), where the notifier logs in as it would at a real relay. Clients that do
not log in are served as before.

    python deploy/local/mailrelay.py --port 2525 --lmtp-port 1124 \\
        --local-domain faxbox.test --catch-all fax.faxbox.test=fax@faxbox.test \\
        --sink var/mail-outbound
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import signal
import smtplib
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

log = logging.getLogger("mailrelay")


@dataclass(frozen=True)
class Routes:
    local_domains: frozenset[str]
    catch_all: dict[str, str]
    sink: Path

    def target(self, recipient: str) -> tuple[str, str]:
        """("lmtp", mailbox) or ("sink", recipient)."""
        domain = recipient.rpartition("@")[2].lower()
        if domain in self.catch_all:
            return "lmtp", self.catch_all[domain]
        if domain in self.local_domains:
            return "lmtp", recipient.lower()
        return "sink", recipient


class RelayHandler:
    def __init__(self, routes: Routes, lmtp_host: str, lmtp_port: int) -> None:
        self.routes = routes
        self.lmtp_host = lmtp_host
        self.lmtp_port = lmtp_port

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        sender = envelope.mail_from or ""
        # (mailbox, header to prepend): a catch-all copy carries the address it was sent
        # to in X-Original-To, as Postfix adds it, because the fax number may be only in
        # the envelope (Bcc) and the validator reads it from there.
        deliveries: list[tuple[str, bytes]] = []
        sink_rcpts: list[str] = []
        for rcpt in envelope.rcpt_tos:
            kind, mailbox = self.routes.target(rcpt)
            if kind == "sink":
                sink_rcpts.append(rcpt)
            elif mailbox != rcpt.lower():
                deliveries.append((mailbox, f"X-Original-To: {rcpt}\r\n".encode()))
            elif (mailbox, b"") not in deliveries:
                deliveries.append((mailbox, b""))
        if deliveries:
            try:
                refused = await asyncio.to_thread(self._lmtp, sender, deliveries, content)
            except (OSError, smtplib.SMTPException) as exc:
                log.warning("LMTP delivery failed, asking the client to retry: %s", exc)
                return "451 4.3.0 local delivery unavailable, try again later"
            permanent = {m: r for m, r in refused.items() if r[0] >= 500}
            if len(refused) > len(permanent):
                return "451 4.3.0 local delivery deferred, try again later"
            if permanent:
                names = ", ".join(f"{m} ({code})" for m, (code, _) in permanent.items())
                log.warning("LMTP refused %s", names)
                if len(permanent) == len(deliveries) and not sink_rcpts:
                    return f"550 5.1.1 no such local mailbox: {names}"
        for rcpt in sink_rcpts:
            name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.eml"
            path = self.routes.sink / name
            await asyncio.to_thread(_write_sink, path, rcpt, content)
            log.info("no internet here: mail for %s kept in %s", rcpt, path)
        for mailbox, _ in deliveries:
            log.info("delivered mail from %s to %s", sender, mailbox)
        return "250 2.0.0 OK"

    def _lmtp(
        self, sender: str, deliveries: list[tuple[str, bytes]], content: bytes
    ) -> dict[str, Any]:
        # One transaction per delivery: after DATA an LMTP server answers once per
        # recipient, which smtplib's sendmail does not read.
        refused: dict[str, Any] = {}
        with smtplib.LMTP(self.lmtp_host, self.lmtp_port, timeout=30) as lmtp:
            for mailbox, header in deliveries:
                try:
                    lmtp.sendmail(sender, [mailbox], header + content)
                except smtplib.SMTPRecipientsRefused as exc:
                    refused.update(exc.recipients)
                except smtplib.SMTPDataError as exc:
                    refused[mailbox] = (exc.smtp_code, exc.smtp_error)
                    lmtp.rset()
        return refused


class OnePassword:
    """AUTH for a development relay: any user name, one shared password."""

    def __init__(self, password: bytes) -> None:
        self.password = password

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and hmac.compare_digest(data.password, self.password)
        return AuthResult(success=ok, handled=False)


def _write_sink(path: Path, rcpt: str, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(f"X-Faxbox-Relay-To: {rcpt}\r\n".encode() + content)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=2525)
    p.add_argument("--lmtp-host", default="127.0.0.1")
    p.add_argument("--lmtp-port", type=int, default=1124)
    p.add_argument("--local-domain", action="append", default=[])
    p.add_argument("--catch-all", action="append", default=[], metavar="DOMAIN=MAILBOX")
    p.add_argument("--sink", type=Path, required=True)
    p.add_argument("--password-file", type=Path, help="offer AUTH PLAIN/LOGIN with this password")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    catch_all = {}
    for item in args.catch_all:
        domain, _, mailbox = item.partition("=")
        catch_all[domain.lower()] = mailbox.lower()
    routes = Routes(frozenset(d.lower() for d in args.local_domain), catch_all, args.sink)
    handler = RelayHandler(routes, args.lmtp_host, args.lmtp_port)
    authenticator = None
    if args.password_file is not None:
        authenticator = OnePassword(args.password_file.read_bytes().strip())
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            handler,
            hostname="relay.faxbox.test",
            data_size_limit=50 * 1024 * 1024,
            authenticator=authenticator,
            auth_require_tls=False,
        ),
        host=args.host,
        port=args.port,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "mail relay on %s:%d -> LMTP %s:%d", args.host, args.port, args.lmtp_host, args.lmtp_port
    )
    await stop.wait()
    server.close()
    await server.wait_closed()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    asyncio.run(serve(parse_args()))


if __name__ == "__main__":
    main()
