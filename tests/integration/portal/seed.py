"""Two tenants (plus a reseller) with users, faxboxes, passwords, faxes and documents."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from faxbox.history.writes import HistoryWrites
from faxbox.shared import passwords
from faxbox.shared.contracts import DocumentRef
from faxbox.shared.store import Account, Faxbox, Role, Store, User
from faxbox.shared.store.monthly import month_key

PASSWORD = "correct horse battery"


def tiny_pdf(text: str = "fax") -> bytes:
    """A valid one-page PDF, built by hand (no PDF library needed)."""
    stream = f"BT /F1 24 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


@dataclass
class Tenant:
    account: Account
    admin: User
    users: list[User]
    faxboxes: dict[str, Faxbox] = field(default_factory=dict)
    # fax id -> (month, user id)
    faxes: dict[str, tuple[str, str]] = field(default_factory=dict)


# Numbers in A's inventory that no faxbox has yet.
A_SPARE_NUMBERS = ("+12125550177", "+12125550178", "4711", "4712")


@dataclass
class World:
    reseller: Tenant  # the reseller's own account; A is its customer
    a: Tenant
    b: Tenant  # unrelated tenant
    now: datetime
    platform: User  # the platform's operator, in an account of its own
    pdf: bytes = b""

    def fax_of(self, tenant: Tenant, user: User, *, recent: bool = True) -> tuple[str, str]:
        """(fax id, month) of one of the user's faxes."""
        for fax_id, (month, owner) in tenant.faxes.items():
            if owner == user.id and (not recent or month == month_key(self.now)):
                return fax_id, month
        raise LookupError(user.email)


async def _user(store: Store, account: Account, email: str, role: Role) -> User:
    user = await store.create_user(User(account_id=account.id, email=email, role=role))
    return await store.set_password_hash(user.id, passwords.hash_password(PASSWORD))


def history_doc(
    *,
    fax_id: str,
    account_id: str,
    user: User,
    faxbox: Faxbox,
    created_at: datetime,
    remote: str,
    direction: str = "outbound",
    status: str = "sent",
    documents: dict[str, DocumentRef] | None = None,
) -> dict[str, Any]:
    failed = status == "failed"
    return {
        "_id": fax_id,
        "account_id": account_id,
        "month": month_key(created_at),
        "direction": direction,
        "status": status,
        "status_rank": 90 if failed else 91,
        "user_id": user.id,
        "faxbox_id": faxbox.id,
        "local_number": faxbox.numbers[0] if faxbox.numbers else None,
        "remote_number": remote,
        "sender_email": user.email if direction == "outbound" else None,
        "pages": 1 if failed else 2,
        "pages_total": 2,
        "attempts": 3 if failed else 1,
        "result": {"failure_class": "busy", "code": 2, "text": "The line was busy."}
        if failed
        else None,
        "statistics": {
            "bit_rate": 14400,
            "ecm": True,
            "x_resolution": 7700,
            "y_resolution": 7700,
            "remote_station_id": "REMOTE FAX",
            "duration_s": 41.5,
        },
        "documents": {k: v.model_dump() for k, v in (documents or {}).items()},
        "notifications": [],
        "timeline": [
            {
                "message_id": f"{fax_id}-1",
                "type": "OutboundFaxRequested",
                "at": created_at,
                "summary": f"Fax to {remote} requested",
            },
            {
                "message_id": f"{fax_id}-2",
                "type": "FaxFailed" if failed else "FaxSent",
                "at": created_at + timedelta(minutes=1),
                "summary": "Failed: busy" if failed else "Sent 2 pages at 14400 bit/s",
            },
        ],
        "created_at": created_at,
        "updated_at": created_at + timedelta(minutes=1),
    }


async def _tenant(
    store: Store, name: str, realm: str, reseller_id: str | None, numbers: list[str]
) -> Tenant:
    account = await store.create_account(Account(name=name, realm=realm, reseller_id=reseller_id))
    role = Role.RESELLER_ADMIN if name.startswith("Reseller") else Role.ACCOUNT_ADMIN
    admin = await _user(store, account, f"admin@{realm}", role)
    users = [
        await _user(store, account, f"alice@{realm}", Role.USER),
        await _user(store, account, f"bob@{realm}", Role.USER),
    ]
    tenant = Tenant(account, admin, users)
    for user, number in zip(users, numbers, strict=True):
        box = await store.create_faxbox(Faxbox(account_id=account.id, owner_user_id=user.id))
        await store.add_account_number(account.id, number)
        await store.assign_number(box.id, number)
        tenant.faxboxes[user.id] = await store.get_faxbox(box.id)
    return tenant


async def build_world(store: Store) -> World:
    writes = HistoryWrites(store.history)
    now = datetime.now(UTC).replace(microsecond=0)
    reseller = await _tenant(store, "Reseller R", "r.portal.test", None, ["+12125550101", "9101"])
    a = await _tenant(
        store, "Acme", "acme.portal.test", reseller.account.id, ["+12125550111", "9111"]
    )
    b = await _tenant(store, "Bravo", "bravo.portal.test", None, ["+12125550121", "9121"])
    for number in A_SPARE_NUMBERS:
        await store.add_account_number(a.account.id, number)
    operators = await store.create_account(Account(name="Operators", realm="ops.portal.test"))
    platform = await _user(store, operators, "root@ops.portal.test", Role.PLATFORM_ADMIN)
    world = World(
        reseller=reseller, a=a, b=b, now=now, platform=platform, pdf=tiny_pdf("hello fax")
    )
    # Ages in days: two inside the default 30-day window, the rest older, across months.
    ages = [0.01, 2, 10, 40, 70, 100, 130]
    serial = 0
    for tenant in (a, b, reseller):
        for u_index, user in enumerate(tenant.users):
            box = tenant.faxboxes[user.id]
            for age in ages:
                serial += 1
                created = now - timedelta(days=age, minutes=u_index)
                fax_id = f"fax{serial:04d}{tenant.account.realm[:2]}"
                month = month_key(created)
                docs = {
                    "pdf": await store.documents.put(
                        tenant.account.id,
                        month,
                        world.pdf,
                        filename=f"{fax_id}.pdf",
                        content_type="application/pdf",
                    ),
                    "tiff": await store.documents.put(
                        tenant.account.id,
                        month,
                        b"II*\x00" + hashlib.sha256(fax_id.encode()).digest(),
                        filename=f"{fax_id}.tif",
                        content_type="image/tiff",
                    ),
                }
                remote = f"+1646555{serial:04d}"
                doc = history_doc(
                    fax_id=fax_id,
                    account_id=tenant.account.id,
                    user=user,
                    faxbox=box,
                    created_at=created,
                    remote=remote,
                    status="failed" if serial % 3 == 0 else "sent",
                    direction="inbound" if serial % 4 == 0 else "outbound",
                    documents=docs if age < 50 else None,
                )
                await writes.insert(tenant.account.id, doc)
                tenant.faxes[fax_id] = (month, user.id)
    return world
