"""Builders for the validator's test mail corpus: real MIME, real PDFs and TIFFs.

Nothing is checked in: every message is made here with the standard library's MIME
classes, shaped the way Gmail, Outlook and Apple Mail shape theirs, and every document
with pypdf or Pillow (blank pages, so rendering takes milliseconds).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email import encoders
from email.message import EmailMessage, Message
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import make_msgid

from PIL import Image
from pypdf import PdfWriter

from faxbox.shared.store import Account, Faxbox, User
from faxbox.validator.authz import Candidate

REALM = "acme.fax.test"
NUMBER = "+12125551234"
FAX_TO = f"{NUMBER}@{REALM}"

# A 1x1 PNG: what signature logos look like to the parser.
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
    b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


def pdf(pages: int = 1, *, password: str | None = None) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=612, height=792)
    if password is not None:
        writer.encrypt(user_password=password, owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def tiff(pages: int = 3) -> bytes:
    frames = [Image.new("1", (1728, 1100), 1) for _ in range(pages)]
    out = io.BytesIO()
    frames[0].save(
        out, "TIFF", save_all=True, append_images=frames[1:], compression="group4", dpi=(204, 98)
    )
    return out.getvalue()


# --- message shapes -----------------------------------------------------------------------


def _headers(msg: Message, sender: str, to: str, extra: dict[str, str] | None) -> Message:
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = "Fax"
    msg["Message-ID"] = make_msgid(domain="example.com")
    for name, value in (extra or {}).items():
        msg[name] = value
    return msg


def _pdf_part(data: bytes, name: str, *, disposition: str = "attachment") -> MIMEApplication:
    part = MIMEApplication(data, "pdf", name=name)
    part.add_header("Content-Disposition", disposition, filename=name)
    return part


def gmail(
    sender: str,
    attachments: Sequence[tuple[str, bytes]] = (),
    *,
    to: str = FAX_TO,
    headers: dict[str, str] | None = None,
) -> bytes:
    """multipart/mixed: multipart/alternative (text + HTML), then the attachments."""
    msg = MIMEMultipart("mixed")
    body = MIMEMultipart("alternative")
    body.attach(MIMEText("Please fax this.", "plain"))
    body.attach(MIMEText("<p>Please fax this.</p>", "html"))
    msg.attach(body)
    for name, data in attachments:
        msg.attach(_pdf_part(data, name))
    return _headers(msg, sender, to, headers).as_bytes()


def outlook(sender: str, attachment: tuple[str, bytes], *, to: str = FAX_TO) -> bytes:
    """multipart/mixed: multipart/related (HTML + inline logo with a Content-ID), then the PDF."""
    msg = MIMEMultipart("mixed")
    related = MIMEMultipart("related")
    related.attach(MIMEText('<p>Fax</p><img src="cid:image001.png@01DA">', "html"))
    logo = MIMEImage(PNG, "png", name="image001.png")
    logo.add_header("Content-ID", "<image001.png@01DA>")
    logo.add_header("Content-Disposition", "inline", filename="image001.png")
    related.attach(logo)
    msg.attach(related)
    msg.attach(_pdf_part(attachment[1], attachment[0]))
    return _headers(msg, sender, to, None).as_bytes()


def apple_mail(sender: str, attachment: tuple[str, bytes], *, to: str = FAX_TO) -> bytes:
    """Apple Mail puts PDFs inline between text parts, Content-Disposition: inline."""
    msg = MIMEMultipart("mixed")
    msg.attach(MIMEText("Here it is:", "plain"))
    part = MIMEApplication(attachment[1], "pdf", name=attachment[0])
    part.set_param("x-unix-mode", "0644")
    part.add_header("Content-Disposition", "inline", filename=attachment[0])
    msg.attach(part)
    msg.attach(MIMEText("\nThanks", "plain"))
    return _headers(msg, sender, to, None).as_bytes()


def octet_stream(
    sender: str, data: bytes, filename: str | None, *, disposition: str = "attachment"
) -> bytes:
    msg = MIMEMultipart("mixed")
    msg.attach(MIMEText("scan attached", "plain"))
    part = MIMEBase("application", "octet-stream")
    part.set_payload(data)
    encoders.encode_base64(part)
    if filename is not None:
        part.add_header("Content-Disposition", disposition, filename=filename)
    else:
        part.add_header("Content-Disposition", disposition)
    msg.attach(part)
    return _headers(msg, sender, FAX_TO, None).as_bytes()


def with_attachment_named(sender: str, data: bytes, header_value: str) -> bytes:
    """A PDF whose Content-Disposition is given verbatim (RFC 2231 / 2047 names)."""
    msg = EmailMessage()
    msg.set_content("fax")
    msg.add_attachment(data, maintype="application", subtype="pdf", filename="x.pdf")
    _headers(msg, sender, FAX_TO, None)
    attachment = next(iter(msg.iter_attachments()))
    del attachment["Content-Disposition"]
    attachment["Content-Disposition"] = header_value
    del attachment["Content-Type"]
    attachment["Content-Type"] = "application/pdf"
    return msg.as_bytes()


def forwarded(
    sender: str, inner_attachments: Iterable[tuple[str, bytes]], outer: Iterable[tuple[str, bytes]]
) -> bytes:
    inner = MIMEMultipart("mixed")
    inner.attach(MIMEText("original message", "plain"))
    for name, data in inner_attachments:
        inner.attach(_pdf_part(data, name))
    _headers(inner, "someone@elsewhere.example", "alice@example.com", None)
    msg = MIMEMultipart("mixed")
    msg.attach(MIMEText("---------- Forwarded message ---------", "plain"))
    for name, data in outer:
        msg.attach(_pdf_part(data, name))
    wrapper = MIMEBase("message", "rfc822")
    wrapper.set_payload([inner])
    wrapper.add_header("Content-Disposition", "attachment", filename="original.eml")
    msg.attach(wrapper)
    return _headers(msg, sender, FAX_TO, None).as_bytes()


def tiff_mail(sender: str, data: bytes, name: str = "scan.tif") -> bytes:
    msg = MIMEMultipart("mixed")
    msg.attach(MIMEText("scan", "plain"))
    part = MIMEImage(data, "tiff", name=name)
    part.add_header("Content-Disposition", "attachment", filename=name)
    msg.attach(part)
    return _headers(msg, sender, FAX_TO, None).as_bytes()


# --- the directory -------------------------------------------------------------------------


@dataclass
class World:
    """One account with faxboxes of every kind the corpus needs."""

    account: Account = field(
        default_factory=lambda: Account(id="acc_acme", name="Acme", realm=REALM)
    )
    users: dict[str, User] = field(default_factory=dict)
    faxboxes: dict[str, Faxbox] = field(default_factory=dict)
    inventory: set[str] = field(default_factory=set)  # the account's numbers

    def add(self, email: str, alternate: str | None = None, **faxbox: object) -> Faxbox:
        user = User(
            id=f"usr_{len(self.users) + 1}",
            account_id=self.account.id,
            email=email,
            alternate_email=alternate,
            daily_page_limit=faxbox.pop("user_limit", None),  # type: ignore[arg-type]
        )
        self.users[user.id] = user
        # The corpus is about reading mail: its faxboxes take the sender on its word
        # unless a case says otherwise (dave keeps the real default, required).
        box = Faxbox.model_validate(
            {"id": f"fbx_{len(self.faxboxes) + 1}", "account_id": self.account.id}
            | {"owner_user_id": user.id, "sender_auth": "off"}
            | faxbox
        )
        self.faxboxes[box.id] = box
        return box


def standard_world() -> World:
    world = World()
    world.add(
        "Alice@Example.com",
        alternate="alice.notify@example.org",
        numbers=["+12125550100"],
        caller_id="+12125550100",
    )
    world.add("bob@example.com", permission_list=["@partner.example", "carol@other.example"])
    world.add("dave@secure.example", sender_auth="required")
    world.add("erin@example.com", enabled=False)
    world.add("frank@example.com", merge_attachments=True)
    return world


class FakeDirectory:
    def __init__(self, world: World) -> None:
        self.world = world

    async def account_by_realm(self, realm: str) -> Account | None:
        return self.world.account if realm == self.world.account.realm else None

    async def holds_number(self, account_id: str, number: str) -> bool:
        return account_id == self.world.account.id and number in self.world.inventory

    async def sender_candidates(self, account_id: str, sender: str) -> list[Candidate]:
        return [
            Candidate(box, self.world.users[box.owner_user_id])
            for box in self.world.faxboxes.values()
            if box.account_id == account_id
        ]

    async def account(self, account_id: str) -> Account | None:
        return self.world.account if account_id == self.world.account.id else None

    async def faxbox(self, faxbox_id: str) -> Faxbox | None:
        return next((b for b in self.world.faxboxes.values() if b.id == faxbox_id), None)

    async def user(self, user_id: str) -> User | None:
        return self.world.users.get(user_id)


class FakeCounters:
    def __init__(self) -> None:
        self.pages: dict[str, int] = {}
        self.faxes: dict[str, set[str]] = {}

    async def used(self, key: str) -> int:
        return self.pages.get(key, 0)

    def user_pages(self) -> int:
        """Pages counted against users (the account's counter counts them too)."""
        return sum(v for k, v in self.pages.items() if k.startswith("user:"))

    async def reserve(self, key: str, fax_id: str, pages: int, limit: int) -> bool:
        counted = self.faxes.setdefault(key, set())
        if fax_id in counted:
            return True
        if self.pages.get(key, 0) + pages > limit:
            return False
        self.pages[key] = self.pages.get(key, 0) + pages
        counted.add(fax_id)
        return True

    async def release(self, key: str, fax_id: str, pages: int) -> None:
        if fax_id in self.faxes.get(key, set()):
            self.faxes[key].discard(fax_id)
            self.pages[key] -= pages


class FakeClaims:
    def __init__(self) -> None:
        self.held: dict[str, str] = {}

    async def claim(self, key: str, fax_id: str) -> bool:
        return self.held.setdefault(key, fax_id) == fax_id

    async def release(self, key: str, fax_id: str) -> None:
        if self.held.get(key) == fax_id:
            del self.held[key]
