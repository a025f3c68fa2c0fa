"""Who may see what. Everything out of reach is reported as *not found*, never as
*forbidden*, so ids of other tenants cannot be probed.

Roles:

* ``user``: their own faxes (history documents whose ``user_id`` is theirs) and the
  documents of those faxes; no administration.
* ``account_admin``: every fax, user and faxbox of their own account.
* ``reseller_admin``: a user of the reseller's *own* account; the reseller id of the
  customer accounts (``Account.reseller_id``) is that account's id. A reseller admin
  administers their own account and every account whose ``reseller_id`` is it (one
  level: customers of a customer are not included).
* ``platform_admin``: the platform's operator: every account, the queue dashboard and
  re-drive. Resellers see only their own and their customers' accounts.

Adding numbers to an account's inventory and widening the countries it may fax is for
reseller and platform admins (on the accounts they reach); account admins assign the
account's numbers to its faxboxes.
"""

from __future__ import annotations

from typing import Any

from faxbox.portal.security import Principal
from faxbox.shared.store import Account, Faxbox, NotFound, Role, Store, User


class Forbidden(Exception):
    """The role does not allow this kind of page at all (e.g. a user on admin pages)."""


async def visible_accounts(store: Store, principal: Principal) -> list[Account]:
    own = await store.get_account(principal.user.account_id)
    if principal.is_platform_admin:
        return [own, *(a for a in await store.list_accounts() if a.id != own.id)]
    if principal.role != Role.RESELLER_ADMIN:
        return [own]
    customers = await store.list_accounts(reseller_id=own.id)
    return [own, *(a for a in customers if a.id != own.id)]


async def account_in_scope(store: Store, principal: Principal, account_id: str) -> Account:
    """The account, if the principal may see it; NotFound otherwise."""
    user = principal.user
    if account_id == user.account_id:
        return await store.get_account(account_id)
    if principal.is_platform_admin:
        try:
            return await store.get_account(account_id)
        except (NotFound, ValueError):
            raise NotFound("account", account_id) from None
    if principal.role == Role.RESELLER_ADMIN:
        try:
            account = await store.get_account(account_id)
        except (NotFound, ValueError):
            raise NotFound("account", account_id) from None
        if account.reseller_id == user.account_id:
            return account
    raise NotFound("account", account_id)


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("administration needs an account or reseller admin")


async def managed_account(store: Store, principal: Principal, account_id: str) -> Account:
    """An account whose numbers and countries the principal may change."""
    account = await account_in_scope(store, principal, account_id)
    if not principal.manages_accounts:
        raise Forbidden(
            "numbers and countries of an account are set by its reseller or the platform's "
            "administrator"
        )
    return account


async def admin_account(store: Store, principal: Principal, account_id: str) -> Account:
    # Scope first: another tenant's id is "not found" whatever the role.
    account = await account_in_scope(store, principal, account_id)
    require_admin(principal)
    return account


async def user_in_scope(
    store: Store, principal: Principal, account_id: str, user_id: str
) -> tuple[Account, User]:
    """A user the principal administers, in the account named by the URL."""
    account = await admin_account(store, principal, account_id)
    try:
        user = await store.get_user(user_id)
    except NotFound:
        raise NotFound("user", user_id) from None
    if user.account_id != account.id:
        raise NotFound("user", user_id)
    return account, user


async def faxbox_of(store: Store, user: User) -> Faxbox | None:
    boxes = await store.list_faxboxes(owner_user_id=user.id)
    return boxes[0] if boxes else None


def history_filter(principal: Principal, account_id: str) -> dict[str, Any]:
    """The condition every history read adds for this principal in ``account_id``.

    Call only after :func:`account_in_scope` has accepted the account.
    """
    if principal.is_admin:
        return {}
    return {"user_id": principal.user.id}
