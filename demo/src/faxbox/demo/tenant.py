"""The demo tenant: an account with its realm, two users with faxboxes and numbers, a carrier.

``seed`` is idempotent: it creates what is missing and leaves what exists (passwords are
set again, so the printed ones always work). The end-to-end tests seed their own tenants
with the same code, on their own realm, numbers and carrier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from faxbox.shared import passwords
from faxbox.shared.store import (
    Account,
    Carrier,
    Faxbox,
    NotFound,
    RetryPolicy,
    Role,
    Store,
    User,
)


@dataclass(frozen=True)
class DemoUser:
    email: str
    number: str
    identity: str
    password: str
    role: Role = Role.USER
    timezone: str = "UTC"


@dataclass(frozen=True)
class DemoTenant:
    realm: str = "fax.faxbox.test"
    account_name: str = "Demo"
    # Dovecot users of deploy/local/dovecot.sh, so their mail can be read over IMAP; the
    # numbers are in pstn-sim's "forward to our inbound receiver" range (+1 646 555 01xx).
    users: tuple[DemoUser, ...] = (
        DemoUser(
            "alice@faxbox.test",
            "+16465550101",
            "ALICE DEMO",
            "faxbox-demo",
            Role.ACCOUNT_ADMIN,
            "America/New_York",
        ),
        DemoUser("bob@faxbox.test", "+16465550102", "BOB DEMO", "faxbox-demo"),
    )
    carrier_name: str = "pstn-sim"
    carrier_host: str = "127.0.0.1"
    carrier_port: int = 5070
    carrier_channels: int = 16
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True)
class Seeded:
    account: Account
    users: dict[str, User]
    faxboxes: dict[str, Faxbox]
    carrier: Carrier


async def seed(store: Store, tenant: DemoTenant) -> Seeded:
    try:
        account = await store.get_account_by_realm(tenant.realm)
    except NotFound:
        account = await store.create_account(Account(name=tenant.account_name, realm=tenant.realm))
    users: dict[str, User] = {}
    faxboxes: dict[str, Faxbox] = {}
    for wanted in tenant.users:
        user = await store.find_user_by_email(wanted.email)
        if user is None:
            user = await store.create_user(
                User(account_id=account.id, email=wanted.email, role=wanted.role)
            )
        elif user.account_id != account.id:
            raise ValueError(f"{wanted.email} already belongs to another account")
        user = await store.set_password_hash(user.id, passwords.hash_password(wanted.password))
        users[wanted.email] = user
        settings: dict[str, Any] = {
            "caller_id": wanted.number,
            "identity": wanted.identity,
            "header_name": f"Faxbox demo {wanted.identity.title()}",
            "timezone": wanted.timezone,
            "retry": tenant.retry,
        }
        existing = await store.list_faxboxes(owner_user_id=user.id)
        if existing:
            faxbox = await store.update_faxbox(existing[0].id, **settings, enabled=True)
        else:
            faxbox = await store.create_faxbox(
                Faxbox(account_id=account.id, owner_user_id=user.id, **settings)
            )
        if wanted.number not in faxbox.numbers:
            await store.add_account_number(account.id, wanted.number)
            await store.assign_number(faxbox.id, wanted.number)
            faxbox = await store.get_faxbox(faxbox.id)
        faxboxes[wanted.email] = faxbox
    carrier = await _carrier(store, tenant)
    return Seeded(account, users, faxboxes, carrier)


async def _carrier(store: Store, tenant: DemoTenant) -> Carrier:
    for carrier in await store.list_carriers():
        if carrier.name != tenant.carrier_name:
            continue
        if (
            carrier.sip_host == tenant.carrier_host
            and carrier.sip_port == tenant.carrier_port
            and carrier.channel_cap == tenant.carrier_channels
        ):
            return carrier
        await store.remove_carrier(carrier.id)
    return await store.add_carrier(
        Carrier(
            name=tenant.carrier_name,
            flags=["fax"],
            channel_cap=tenant.carrier_channels,
            sip_host=tenant.carrier_host,
            sip_port=tenant.carrier_port,
        )
    )
