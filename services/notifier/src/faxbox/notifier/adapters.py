"""The notifier's ports, implemented on the shared store."""

from __future__ import annotations

from faxbox.shared.store import Account, Faxbox, Store, User


class StoreDirectory:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def get_user(self, user_id: str) -> User:
        return await self.store.get_user(user_id)

    async def get_faxbox(self, faxbox_id: str) -> Faxbox:
        return await self.store.get_faxbox(faxbox_id)

    async def get_account(self, account_id: str) -> Account:
        return await self.store.get_account(account_id)
