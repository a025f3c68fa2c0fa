"""Fakes of the notifier's own ports: who may send, the mail server, the directory."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

from PIL import Image

from faxbox.notifier.ports import Claim, ClaimBusy
from faxbox.shared.contracts import (
    DocumentRef,
    FailureClass,
    FaxFailed,
    FaxFailure,
    FaxSent,
    TransferStatistics,
)
from faxbox.shared.store import Account, Faxbox, NotFound, User

AT = datetime(2026, 11, 10, 9, 30, tzinfo=UTC)


@dataclass
class FakeClaims:
    """Same rules as MongoSendClaims, in memory; ``now`` is moved by the test."""

    now: datetime = AT
    lease: timedelta = timedelta(seconds=120)
    entries: dict[str, dict[str, object]] = field(default_factory=dict)
    counter: int = 0

    async def claim(self, key: str, new_message_id: str) -> Claim:
        self.counter += 1
        owner = f"o{self.counter}"
        entry = self.entries.get(key)
        if entry is None:
            self.entries[key] = {
                "state": "claimed",
                "mid": new_message_id,
                "owner": owner,
                "until": self.now + self.lease,
            }
            return Claim(key, owner, new_message_id, maybe_sent_before=False)
        until = entry["until"]
        assert isinstance(until, datetime)
        if entry["state"] == "claimed" and until > self.now:
            raise ClaimBusy(key, 5)
        was_claimed = entry["state"] == "claimed"
        entry.update(state="claimed", owner=owner, until=self.now + self.lease)
        return Claim(key, owner, str(entry["mid"]), maybe_sent_before=was_claimed)

    async def release(self, claim: Claim, reason: str) -> None:
        if self.entries[claim.key]["owner"] == claim.owner:
            self.entries[claim.key]["state"] = "released"


@dataclass
class FakeMailer:
    script: list[Exception] = field(default_factory=list)
    sent: list[tuple[EmailMessage, list[str]]] = field(default_factory=list)

    async def send(self, message: EmailMessage, recipients: list[str]) -> None:
        if self.script:
            raise self.script.pop(0)
        self.sent.append((message, recipients))


@dataclass
class FakeDirectory:
    users: dict[str, User]
    faxboxes: dict[str, Faxbox]
    account: Account

    async def get_user(self, user_id: str) -> User:
        if user_id not in self.users:
            raise NotFound("user", user_id)
        return self.users[user_id]

    async def get_faxbox(self, faxbox_id: str) -> Faxbox:
        if faxbox_id not in self.faxboxes:
            raise NotFound("faxbox", faxbox_id)
        return self.faxboxes[faxbox_id]

    async def get_account(self, account_id: str) -> Account:
        return self.account


def tiff_page(width: int = 1728, height: int = 1100) -> bytes:
    out = io.BytesIO()
    Image.new("1", (width, height), 1).save(out, format="TIFF", compression="group4", dpi=(204, 98))
    return out.getvalue()


def ref(file_id: str) -> DocumentRef:
    return DocumentRef(
        account_id="acc1",
        month="202611",
        file_id=file_id,
        filename="f",
        content_type="image/tiff",
        length=1,
        sha256=hashlib.sha256().hexdigest(),
    )


def sent_event(faxbox_id: str = "fbx_1", tiff: str = "tiff1") -> FaxSent:
    return FaxSent(
        fax_id="fax_1",
        account_id="acc1",
        month="202611",
        occurred_at=AT,
        user_id="usr_1",
        faxbox_id=faxbox_id,
        destination="+14155550123",
        attempts=1,
        carrier_id="c",
        statistics=TransferStatistics(
            pages_transferred=1,
            pages_total=1,
            bit_rate=9600,
            ecm=False,
            x_resolution=8031,
            y_resolution=3850,
            remote_station_id=" FAX ",
            duration_s=20,
        ),
        transmitted_tiff=ref(tiff),
    )


def failed_event() -> FaxFailed:
    return FaxFailed(
        fax_id="fax_2",
        account_id="acc1",
        month="202611",
        occurred_at=AT,
        user_id="usr_1",
        faxbox_id="fbx_1",
        destination="+14155550123",
        attempts=3,
        failure=FaxFailure(
            failure_class=FailureClass.resources,
            code=-1,
            text="No carrier line is available for this number.",
        ),
        pages_sent=0,
        pages_total=2,
    )
