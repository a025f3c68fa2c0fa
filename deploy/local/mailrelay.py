"""The local stack's mail server: SMTP in, Dovecot mailboxes out, senders proven.

Development only (loopback, no TLS). It plays two parts a production mail system has:

- the **MX and smarthost** (``--port``, 2525): the notifier sends here, and so does
  anyone who does not log in; nothing is proven about such a sender;
- the **submission server** (``--submission-port``, 2587): AUTH PLAIN or LOGIN before
  MAIL FROM, checked against Dovecot's own auth service (``--dovecot-auth``, its
  auth-client socket: the users and passwords of Dovecot's passwd-file, as Postfix
  does with ``smtpd_sasl_type = dovecot``). ``faxbox demo`` and the e2e tests submit here.

On every mail from a session that logged in it writes, on top,
``Authentication-Results: <--authserv-id>; auth=pass smtp.auth=<login>``, the proof the
validator reads (``FAXBOX_VALIDATOR_AUTHSERV_IDS`` names this id). From every mail, on
every port, it first removes any Authentication-Results header that claims this id, so
only headers it wrote itself carry it (RFC 8601 §5), as OpenDMARC does for its own.

Where mail goes:

- a recipient in a local domain (``--local-domain``, e.g. alice@faxbox.test) is delivered
  to that Dovecot user over LMTP, so it shows up in their IMAP inbox;
- a recipient in a catch-all domain (``--catch-all fax.faxbox.test=fax@faxbox.test``, the
  fax realm) goes to that one mailbox, which is what the mail-poller watches;
- anything else would leave the machine; there is no internet here, so it is written to
  ``--sink DIR`` as an .eml file and logged.

Dovecot down or answering 4xx: the client gets 451 and retries (the notifier does).
An unknown local user gets 550, as from a real server.

With ``--password-file`` the MX port also offers AUTH PLAIN and LOGIN (still no TLS)
and takes any user name with that password, as compose.yaml's development mail server
(deploy/mail), where the notifier logs in as it would at a real relay; such a login is
stamped like a submission. Clients that do not log in are served as before.

    python deploy/local/mailrelay.py --port 2525 --lmtp-port 1124 \\
        --local-domain faxbox.test --catch-all fax.faxbox.test=fax@faxbox.test \\
        --sink var/mail-outbound --submission-port 2587 \\
        --dovecot-auth var/run/dovecot/auth-client --authserv-id relay.faxbox.test
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hmac
import logging
import os
import re
import signal
import smtplib
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

log = logging.getLogger("mailrelay")

DEFAULT_AUTHSERV_ID = "relay.faxbox.test"
_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")
_COMMENT = re.compile(r"\([^()]*\)")


def authserv_id_of(value: str) -> str:
    """The authserv-id an Authentication-Results value names (comments dropped)."""
    text = value
    while True:  # nested comments, innermost first
        stripped = _COMMENT.sub(" ", text)
        if stripped == text:
            break
        text = stripped
    return re.split(r"[\s;]", text.strip(), maxsplit=1)[0].lower() if text.strip() else ""


def without_our_results(content: bytes, authserv_id: str) -> bytes:
    """``content`` minus every Authentication-Results header that claims ``authserv_id``."""
    end = content.find(b"\r\n\r\n")
    sep = 4
    if end < 0 or (0 <= content.find(b"\n\n") < end):
        end, sep = content.find(b"\n\n"), 2
    if end < 0:
        end, sep = len(content), 0
    head, rest = content[:end], content[end:]
    lines = head.splitlines(keepends=True)
    fields: list[list[bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    kept: list[bytes] = []
    ours = authserv_id.lower()
    for field in fields:
        name = _HEADER_NAME.match(field[0])
        if name and name.group(1).lower() == b"authentication-results":
            value = b"".join(field)[name.end() :].decode("latin-1")
            if authserv_id_of(value) == ours:
                continue
        kept.extend(field)
    if not kept and sep:
        rest = rest[sep // 2 :]  # every header gone: the blank line still ends the head
    return b"".join(kept) + rest if kept else rest


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
    def __init__(
        self,
        routes: Routes,
        lmtp_host: str,
        lmtp_port: int,
        authserv_id: str = DEFAULT_AUTHSERV_ID,
    ) -> None:
        self.routes = routes
        self.lmtp_host = lmtp_host
        self.lmtp_port = lmtp_port
        self.authserv_id = authserv_id

    def proven(self, session: Session, content: bytes) -> bytes:
        """The mail as delivered: no header claiming our id but the one we add."""
        content = without_our_results(content, self.authserv_id)
        proof = session.auth_data if session.authenticated else None
        login = proof.login.decode("utf-8", "replace") if isinstance(proof, LoginPassword) else ""
        if not login:
            return content
        stamp = f"Authentication-Results: {self.authserv_id}; auth=pass smtp.auth={login}\r\n"
        return stamp.encode() + content

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = self.proven(session, envelope.original_content or b"")
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
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


class DovecotAuth:
    """Passwords checked by Dovecot's auth service over its auth-client socket.

    The client side of Dovecot's authentication protocol (version 1.2), as Postfix and
    Exim speak it: handshake, then ``AUTH`` with the PLAIN response; Dovecot answers OK
    (with the canonical user name) or FAIL after its own failure delay.
    """

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    async def verify(self, login: bytes, password: bytes) -> str | None:
        if b"\t" in login or b"\n" in login or not login:
            return None
        reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
        try:
            writer.write(f"VERSION\t1\t2\nCPID\t{os.getpid()}\n".encode())
            while (line := await asyncio.wait_for(reader.readline(), 10)) and line != b"DONE\n":
                pass
            response = base64.b64encode(b"\0" + login + b"\0" + password).decode()
            writer.write(f"AUTH\t1\tPLAIN\tservice=smtp\tresp={response}\n".encode())
            await writer.drain()
            answer = (await asyncio.wait_for(reader.readline(), 30)).decode().rstrip("\n")
        finally:
            writer.close()
        fields = answer.split("\t")
        if fields[:2] != ["OK", "1"]:
            return None
        user = next((f[5:] for f in fields[2:] if f.startswith("user=")), None)
        return user or login.decode("utf-8", "replace")


class SubmissionHandler(RelayHandler):
    """The submission port: AUTH PLAIN/LOGIN checked by Dovecot before MAIL FROM.

    aiosmtpd calls an authenticator synchronously; these handler methods replace its
    built-in PLAIN and LOGIN so the check with Dovecot is awaited, not blocking.
    """

    def __init__(self, auth: DovecotAuth, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.auth = auth

    async def _result(self, login: bytes, password: bytes) -> AuthResult:
        try:
            user = await self.auth.verify(login, password)
        except (TimeoutError, OSError) as exc:
            log.warning("Dovecot's auth service did not answer: %s", exc)
            return AuthResult(success=False, handled=False, message="454 4.7.0 try again later")
        if user is None:
            log.info("AUTH refused for %r", login.decode("utf-8", "replace"))
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=LoginPassword(user.encode(), b""))

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        blob = await _response(server, args, "")
        if blob is None:
            return AuthResult(success=False, handled=True)
        parts = blob.split(b"\0")
        if len(parts) != 3:
            await server.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._result(parts[1], parts[2])

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        login = await _response(server, args, "Username:")
        if login is None:
            return AuthResult(success=False, handled=True)
        password = await server.challenge_auth("Password:")
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        assert isinstance(password, bytes)
        return await self._result(login, password)


async def _response(server: SMTP, args: list[str], challenge: str) -> bytes | None:
    """The client's initial response, or the answer to ``challenge``; None if it gave none."""
    if len(args) > 1:
        try:
            return base64.b64decode(args[1], validate=True)
        except binascii.Error:
            await server.push("501 5.5.2 Can't decode base64")
            return None
    answer = await server.challenge_auth(challenge)
    return answer if isinstance(answer, bytes) else None


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
    p.add_argument(
        "--authserv-id",
        default=DEFAULT_AUTHSERV_ID,
        help="the id stamped into Authentication-Results (and stripped from incoming mail)",
    )
    p.add_argument("--submission-port", type=int, help="a port where AUTH is required")
    p.add_argument(
        "--dovecot-auth", type=Path, help="Dovecot's auth-client socket, for the submission port"
    )
    args = p.parse_args(argv)
    if args.submission_port is not None and args.dovecot_auth is None:
        p.error("--submission-port needs --dovecot-auth")
    return args


async def serve(args: argparse.Namespace) -> None:
    catch_all = {}
    for item in args.catch_all:
        domain, _, mailbox = item.partition("=")
        catch_all[domain.lower()] = mailbox.lower()
    routes = Routes(frozenset(d.lower() for d in args.local_domain), catch_all, args.sink)
    handler = RelayHandler(routes, args.lmtp_host, args.lmtp_port, args.authserv_id)
    authenticator = None
    if args.password_file is not None:
        authenticator = OnePassword(args.password_file.read_bytes().strip())
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            handler,
            hostname=args.authserv_id,
            data_size_limit=50 * 1024 * 1024,
            authenticator=authenticator,
            auth_require_tls=False,
        ),
        host=args.host,
        port=args.port,
    )
    servers = [server]
    if args.submission_port is not None:
        submission = SubmissionHandler(
            DovecotAuth(args.dovecot_auth), routes, args.lmtp_host, args.lmtp_port, args.authserv_id
        )
        servers.append(
            await loop.create_server(
                lambda: SMTP(
                    submission,
                    hostname=args.authserv_id,
                    data_size_limit=50 * 1024 * 1024,
                    auth_required=True,
                    auth_require_tls=False,
                ),
                host=args.host,
                port=args.submission_port,
            )
        )
        log.info("submission on %s:%d (AUTH by Dovecot)", args.host, args.submission_port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "mail relay on %s:%d -> LMTP %s:%d", args.host, args.port, args.lmtp_host, args.lmtp_port
    )
    await stop.wait()
    for each in servers:
        each.close()
        await each.wait_closed()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    # aiosmtpd warns about AUTH without TLS on every connection: this is a loopback
    # development server, which says so above.
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    asyncio.run(serve(parse_args()))


if __name__ == "__main__":
    main()
