"""``faxbox demo [run|seed]``."""

from __future__ import annotations

import asyncio
import sys

from pymongo.errors import PyMongoError

from faxbox.demo.run import DemoSettings, run_demo
from faxbox.demo.tenant import DemoTenant, seed
from faxbox.shared.store import Store


async def _seed(settings: DemoSettings, tenant: DemoTenant) -> None:
    async with await Store.connect(settings) as store:
        seeded = await seed(store, tenant)
    print(f"demo tenant: account {seeded.account.name!r}, realm {tenant.realm}")
    for user in tenant.users:
        print(
            f"  {user.email:22} number {user.number}  portal password {user.password}"
            f"  ({user.role.value})"
        )
    print(
        f"  carrier {seeded.carrier.name} sip:{tenant.carrier_host}:{tenant.carrier_port} "
        f"({tenant.carrier_channels} channels)"
    )


def main(action: str = "run") -> int:
    settings = DemoSettings()
    tenant = DemoTenant()
    try:
        if action == "seed":
            asyncio.run(_seed(settings, tenant))
            return 0
        return asyncio.run(run_demo(settings, tenant))
    except PyMongoError as exc:
        print(f"faxbox demo: database unavailable: {exc}", file=sys.stderr)
        return 69
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
