"""SMTP delivery through aiosmtplib: STARTTLS or implicit TLS, optional AUTH."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Literal

import aiosmtplib

from faxbox.notifier.ports import MailDeferred, MailRefused

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpMailer:
    host: str
    port: int
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0
    tls_context: ssl.SSLContext | None = None

    async def send(self, message: EmailMessage, recipients: list[str]) -> None:
        try:
            refused, _answer = await aiosmtplib.send(
                message,
                recipients=recipients,
                hostname=self.host,
                port=self.port,
                use_tls=self.security == "tls",
                start_tls=self.security == "starttls",
                username=self.username,
                password=self.password,
                timeout=self.timeout_s,
                tls_context=self.tls_context,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            answers = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            if all(500 <= r.code < 600 for r in exc.recipients):
                raise MailRefused(f"every recipient refused: {answers}") from exc
            raise MailDeferred(f"recipients deferred: {answers}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            answer = f"{exc.code} {exc.message}"
            if 500 <= exc.code < 600:
                raise MailRefused(f"SMTP server refused the mail: {answer}") from exc
            raise MailDeferred(f"SMTP server deferred the mail: {answer}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise MailDeferred(f"SMTP server unreachable: {type(exc).__name__}: {exc}") from exc
        if refused:
            # The others took it: the mail counts as sent, a retry would duplicate it.
            log.warning(
                "some recipients refused",
                extra={"refused": {k: f"{v.code} {v.message}" for k, v in refused.items()}},
            )
