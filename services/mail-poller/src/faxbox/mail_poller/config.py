"""How one intake mailbox is reached, as read from the service settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class MailboxConfig(BaseModel):
    """One watched IMAP folder.

    ``name`` identifies the mailbox in the intake ledger and in the lease; it must stay
    the same across restarts and replicas, so it defaults to user@host:port/folder.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = ""
    host: str
    port: int = Field(default=993, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "tls"
    ca_file: Path | None = Field(
        default=None, description="CA bundle to verify the server with (default: system CAs)."
    )
    username: str
    auth: Literal["login", "xoauth2"] = "login"
    password: SecretStr | None = None
    password_file: Path | None = None
    token_file: Path | None = Field(default=None, description="XOAUTH2 access token file.")
    token_command: str | None = Field(
        default=None,
        description="Command printing an access token (or JSON with access_token, expires_in).",
    )
    token_lifetime_s: float = Field(
        default=3000.0,
        gt=0,
        description="How long a token is trusted when its source does not say (refreshed before).",
    )
    folder: str = "INBOX"
    processed_folder: str = Field(
        default="Faxbox/Processed",
        description="'/' separates levels; translated to the server's own delimiter.",
    )
    oversize_folder: str = Field(
        default="Faxbox/Oversize",
        description="Mails over the size cap go here, unread ('/' separates levels).",
    )
    failed_folder: str = Field(
        default="Faxbox/Failed",
        description="Mails that could not be fetched after every try go here.",
    )
    use_idle: bool = Field(default=True, description="Use IDLE when the server advertises it.")
    push: bool = Field(
        default=True,
        description="Register for the server's push when the service has "
        "FAXBOX_MAIL_POLLER_IMAP_PUSH_HOST.",
    )
    poll_interval_s: float = Field(default=30.0, gt=0)
    idle_refresh_s: float = Field(
        default=600.0,
        gt=0,
        description="Re-issue IDLE this often (RFC 2177: under 29 minutes) and rescan.",
    )
    command_timeout_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> MailboxConfig:
        if self.auth == "login" and self.password is None and self.password_file is None:
            raise ValueError(f"mailbox {self.username}: LOGIN needs password or password_file")
        if self.auth == "xoauth2" and (self.token_file is None) == (self.token_command is None):
            raise ValueError(
                f"mailbox {self.username}: XOAUTH2 needs exactly one of token_file, token_command"
            )
        if not self.name:
            # Frozen model: set through object.__setattr__ once, at validation.
            object.__setattr__(
                self, "name", f"{self.username}@{self.host}:{self.port}/{self.folder}"
            )
        return self

    def password_value(self) -> str:
        if self.password is not None:
            return self.password.get_secret_value()
        assert self.password_file is not None
        # Read at each login so a rotated secret file is picked up without a restart.
        return self.password_file.read_text().strip()
