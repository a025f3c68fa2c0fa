"""The admin CLI as an operator runs it: a separate process against the real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest

from faxbox.shared.settings import MongoSettings

pytestmark = pytest.mark.integration


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture(scope="module")
def faxbox_cli(mongo_settings: MongoSettings) -> Any:
    # The key and the caller-id scope are what each test gives (var/env sets a key).
    inherited = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FAXBOX_SECRET_KEY", "FAXBOX_CALLER_ID_SCOPE")
    }
    env = inherited | {
        "FAXBOX_MONGO_URL": mongo_settings.mongo_url,
        "FAXBOX_MONGO_DB": mongo_settings.mongo_db,
    }

    def run(*args: str, stdin: str | None = None, **extra_env: str) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "faxbox.admin", "--json", *args],
            env=env | extra_env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    yield run
    import asyncio

    from pymongo import AsyncMongoClient

    async def drop() -> None:
        client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_settings.mongo_url)
        await client.drop_database(mongo_settings.mongo_db)
        await client.close()

    asyncio.run(drop())


def one_line_error(result: Result, *fragments: str) -> None:
    assert result.code != 0, result
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_account_user_faxbox_carrier_lifecycle(faxbox_cli: Any) -> None:
    run = faxbox_cli
    acme = run("account", "create", "--name", "Acme", "--realm", "Fax.Acme.test")
    assert acme.code == 0, acme.err
    assert acme.json()["realm"] == "fax.acme.test"

    one_line_error(
        run("account", "create", "--name", "Other", "--realm", "fax.acme.test"),
        "fax.acme.test",
    )

    alice = run(
        "user",
        "create",
        "--realm",
        "fax.acme.test",
        "--email",
        "Alice@Acme.test",
        "--alternate-email",
        "faxes@acme.test",
    )
    assert alice.code == 0, alice.err
    assert alice.json()["alternate_email"] == "faxes@acme.test"
    assert "password_hash" not in alice.json()
    one_line_error(
        run("user", "create", "--realm", "fax.acme.test", "--email", "alice@ACME.test"),
        "already used",
    )
    assert run("user", "create", "--realm", "fax.acme.test", "--email", "bob@acme.test").code == 0

    # Numbers come from the account's inventory.
    not_held = run("faxbox", "enable", "--user", "alice@acme.test", "--number", "+12125551234")
    one_line_error(not_held, "+12125551234", "not in the inventory", "faxbox number add")
    one_line_error(run("faxbox", "show", "--user", "alice@acme.test"), "has no faxbox")
    added = run(
        "number", "add", "--realm", "fax.acme.test", "--number", "2125551234", "--number", "1001"
    )
    assert added.json() == {"account": "fax.acme.test", "added": ["+12125551234", "1001"]}
    assert run("number", "add", "--realm", "fax.acme.test", "--number", "+13125550188").code == 0

    box = run(
        "faxbox",
        "enable",
        "--user",
        "ALICE@acme.test",
        "--number",
        "+12125551234",
        "--number",
        "1001",
        "--identity",
        "ACME FAX",
        "--header-name",
        "Acme Inc",
        "--timezone",
        "America/New_York",
        "--permit",
        "@acme.test",
        "--no-success-mails",
    )
    assert box.code == 0, box.err
    data = box.json()
    assert sorted(data["numbers"]) == ["+12125551234", "1001"]
    assert data["enabled"] is True
    assert data["success_notifications"] is False
    assert data["timezone"] == "America/New_York"
    assert data["sender_auth"] == "required"  # the default

    # Bob cannot take Alice's number, and Bob's faxbox is not created half-way.
    taken = run("faxbox", "enable", "--user", "bob@acme.test", "--number", "2125551234")
    one_line_error(taken, "+12125551234", "already assigned")
    one_line_error(run("faxbox", "show", "--user", "bob@acme.test"), "has no faxbox")

    # An invalid number among valid ones: nothing written.
    bad = run(
        "faxbox",
        "enable",
        "--user",
        "bob@acme.test",
        "--number",
        "+13125550188",
        "--number",
        "+44 20 7946 0958",
    )
    one_line_error(bad, "cannot be assigned")
    one_line_error(run("faxbox", "show", "--user", "bob@acme.test"), "has no faxbox")
    free = run("faxbox", "enable", "--user", "bob@acme.test", "--number", "+13125550188")
    assert free.code == 0, free.err

    disabled = run("faxbox", "disable", "--user", "alice@acme.test")
    assert disabled.json()["enabled"] is False
    assert sorted(disabled.json()["numbers"]) == ["+12125551234", "1001"]
    again = run("faxbox", "enable", "--user", "alice@acme.test", "--identity", "ACME 2")
    assert again.json()["enabled"] is True
    assert again.json()["identity"] == "ACME 2"
    assert again.json()["header_name"] == "Acme Inc"
    assert again.json()["max_recipients"] == 10
    fewer = run("faxbox", "enable", "--user", "alice@acme.test", "--max-recipients", "3")
    assert fewer.json()["max_recipients"] == 3

    one_line_error(
        run("faxbox", "enable", "--user", "alice@acme.test", "--identity", "x" * 21), "identity"
    )
    one_line_error(
        run("faxbox", "enable", "--user", "alice@acme.test", "--timezone", "Mars/Olympus"),
        "time zone",
    )
    one_line_error(run("faxbox", "enable", "--user", "nobody@acme.test"), "no user")
    one_line_error(
        run("faxbox", "enable", "--user", "alice@acme.test", "--max-recipients", "0"),
        "max_recipients",
    )

    assert run("faxbox", "unassign", "--number", "1001").code == 0
    shown = run("faxbox", "show", "--user", "alice@acme.test").json()
    assert shown["numbers"] == ["+12125551234"]
    assert run("faxbox", "assign", "--user", "bob@acme.test", "--number", "1001").code == 0
    one_line_error(
        run("number", "remove", "--realm", "fax.acme.test", "--number", "1001"), "unassign it first"
    )
    assert run("number", "list", "--realm", "fax.acme.test").json() == [
        {"number": "+12125551234", "faxbox_id": shown["id"]},
        {
            "number": "+13125550188",
            "faxbox_id": run("faxbox", "show", "--user", "bob@acme.test").json()["id"],
        },
        {
            "number": "1001",
            "faxbox_id": run("faxbox", "show", "--user", "bob@acme.test").json()["id"],
        },
    ]

    # Caller id: one of the faxbox's own numbers, nothing else.
    one_line_error(
        run("faxbox", "enable", "--user", "alice@acme.test", "--caller-id", "+13125550188"),
        "caller id +13125550188",
        "own numbers",
    )
    own = run("faxbox", "enable", "--user", "alice@acme.test", "--caller-id", "2125551234")
    assert own.json()["caller_id"] == "+12125551234"
    # ... or, where the platform allows it, of the account's.
    wider = run(
        "faxbox",
        "enable",
        "--user",
        "alice@acme.test",
        "--caller-id",
        "+13125550188",
        FAXBOX_CALLER_ID_SCOPE="account",
    )
    assert wider.code == 0, wider.err
    assert wider.json()["caller_id"] == "+13125550188"

    off = run("faxbox", "enable", "--user", "alice@acme.test", "--sender-auth", "off")
    assert off.json()["sender_auth"] == "off"

    carrier = run(
        "carrier",
        "add",
        "--name",
        "sim",
        "--flag",
        "fax",
        "--priority",
        "10",
        "--channels",
        "30",
        "--sip-host",
        "127.0.0.1",
        "--sip-port",
        "5070",
        "--sip-username",
        "trunk",
        "--sip-password-stdin",
        stdin="s3cret-sip-password\n",
        FAXBOX_SECRET_KEY="k" * 32,
    )
    assert carrier.code == 0, carrier.err
    assert carrier.json()["sip_password"] == "sealed"
    listed = run("carrier", "list")
    assert [c["name"] for c in listed.json()] == ["sim"]
    assert "s3cret" not in listed.out
    no_key = run("carrier", "set-password", "--name", "sim", stdin="other\n")
    one_line_error(no_key, "FAXBOX_SECRET_KEY")
    one_line_error(run("carrier", "add", "--name", "sim"), "sim")
    one_line_error(run("carrier", "add", "--name", "x", "--flag", "Fax!"), "flag")


def test_show_help_prints_the_address_or_why_not(faxbox_cli: Any) -> None:
    run = faxbox_cli
    created = run(
        "account", "create", "--name", "Help", "--realm", "help.test", "--allow-countries", "US,GB"
    )
    assert created.code == 0, created.err
    ok = run("show-help", "00442079460958", "--realm", "help.test")
    assert ok.code == 0, ok.err
    assert ok.json()["to"] == "+442079460958@help.test"

    plain = subprocess.run(
        [
            sys.executable,
            "-m",
            "faxbox.admin",
            "show-help",
            "2125551234",
            "--realm",
            "help.test",
        ],
        env=os.environ | {"FAXBOX_MONGO_DB": "unused"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Different database: the realm is unknown there, and that is said plainly.
    assert plain.returncode != 0
    assert "help.test" in plain.stderr

    one_line_error(run("show-help", "19005551234", "--realm", "help.test"), "premium")
    one_line_error(run("show-help", "555123456", "--realm", "help.test"), "cannot be faxed")
    one_line_error(run("show-help", "+1212555123x", "--realm", "help.test"), "cannot be faxed")
    one_line_error(run("show-help", "2125551234", "--realm", "nowhere.test"), "nowhere.test")


def test_accounts_fax_home_until_the_platform_widens_them(faxbox_cli: Any) -> None:
    run = faxbox_cli
    created = run("account", "create", "--name", "Euro", "--realm", "euro.test", "--country", "de")
    assert created.json()["allowed_countries"] == ["DE"]
    assert created.json()["blocked_categories"] == ["premium_rate", "shared_cost"]
    one_line_error(run("show-help", "+442079460958", "--realm", "euro.test"), "GB", "reseller")
    widened = run("account", "update", "--realm", "euro.test", "--allow-countries", "DE,gb,FR")
    assert widened.json()["allowed_countries"] == ["DE", "GB", "FR"]
    assert run("show-help", "+442079460958", "--realm", "euro.test").code == 0
    one_line_error(
        run("account", "update", "--realm", "euro.test", "--allow-countries", "UK"),
        "United Kingdom is GB",
    )
    capped = run("account", "update", "--realm", "euro.test", "--daily-page-limit", "0")
    assert capped.json()["daily_page_limit"] == 0
    one_line_error(
        run("account", "update", "--realm", "euro.test", "--daily-page-limit", "-3"), "negative"
    )
    moved = run("account", "update", "--realm", "euro.test", "--country", "CA")
    assert "US" in moved.json()["allowed_countries"]  # a North American home: every +1 country
    assert "DE" not in moved.json()["allowed_countries"]


def test_a_number_another_account_holds_is_refused(faxbox_cli: Any) -> None:
    run = faxbox_cli
    for realm in ("one.test", "two.test"):
        assert run("account", "create", "--name", realm, "--realm", realm).code == 0
    assert run("number", "add", "--realm", "one.test", "--number", "+16175550100").code == 0
    one_line_error(
        run("number", "add", "--realm", "two.test", "--number", "6175550100"),
        "+16175550100",
        "another account",
    )
    assert run("number", "remove", "--realm", "one.test", "--number", "+16175550100").code == 0
    assert run("number", "add", "--realm", "two.test", "--number", "+16175550100").code == 0


def test_passwords_stored_in_clear_are_sealed_on_request(
    faxbox_cli: Any, mongo_settings: MongoSettings
) -> None:
    import asyncio

    from faxbox.shared.store import Carrier, Store

    async def legacy() -> None:
        store = await Store.connect(mongo_settings)
        try:
            await store.add_carrier(Carrier(name="old-trunk", sip_password="plain-secret"))
        finally:
            await store.close()

    asyncio.run(legacy())
    run = faxbox_cli
    listed = {c["name"]: c for c in run("carrier", "list").json()}
    assert listed["old-trunk"]["sip_password"] == "plain"
    one_line_error(run("carrier", "seal-passwords"), "FAXBOX_SECRET_KEY")
    sealed = run("carrier", "seal-passwords", FAXBOX_SECRET_KEY="k" * 32)
    assert sealed.json() == {"sealed": ["old-trunk sip_password"]}
    listed = {c["name"]: c for c in run("carrier", "list").json()}
    assert listed["old-trunk"]["sip_password"] == "sealed"
    assert "plain-secret" not in run("carrier", "list").out


def test_a_carriers_addresses_and_inbound_credentials(faxbox_cli: Any) -> None:
    run = faxbox_cli
    made = run(
        "carrier", "add", "--name", "edge-trunk", "--sip-host", "sip.example.net",
        "--sip-allow", "203.0.113.0/28", "--sip-allow", "198.51.100.7",
    )  # fmt: skip
    assert made.json()["sip_allow"] == ["203.0.113.0/28", "198.51.100.7/32"]
    one_line_error(
        run("carrier", "update", "--name", "edge-trunk", "--sip-allow", "not-an-address"),
        "not an IP address",
    )
    updated = run("carrier", "update", "--name", "edge-trunk", "--inbound-username", "trunk-in")
    assert updated.json()["inbound_username"] == "trunk-in"
    sealed = run(
        "carrier", "set-password", "--name", "edge-trunk", "--inbound",
        stdin="their-secret\n", FAXBOX_SECRET_KEY="k" * 32,
    )  # fmt: skip
    assert (sealed.json()["inbound_password"], sealed.json()["sip_password"]) == ("sealed", None)
    assert "their-secret" not in run("carrier", "list").out


def test_how_we_reach_a_carrier_is_set_when_added_and_changed_by_update(
    faxbox_cli: Any,
) -> None:
    run = faxbox_cli
    made = run(
        "carrier", "add", "--name", "reg-trunk", "--sip-host", "sip.carrier.example",
        "--sip-transport", "tls", "--sip-domain", "carrier.example", "--sip-username",
        "5551234", "--sip-password-stdin", "--register", "--register-expires", "300",
        stdin="reg-secret\n", FAXBOX_SECRET_KEY="k" * 32,
    )  # fmt: skip
    assert made.code == 0, made.err
    shown = made.json()
    assert (shown["sip_transport"], shown["sip_domain"], shown["sip_register"]) == (
        "tls",
        "carrier.example",
        True,
    )
    assert (shown["register_expires_s"], shown["sip_password"]) == (300, "sealed")
    updated = run(
        "carrier", "update", "--name", "reg-trunk", "--sip-transport", "tcp",
        "--outbound-proxy", "sip:sbc.carrier.example;transport=tcp", "--no-register",
        "--t38-in-invite",
    )  # fmt: skip
    assert updated.code == 0, updated.err
    changed = updated.json()
    assert changed["sip_transport"] == "tcp"
    assert changed["outbound_proxy"] == "sip:sbc.carrier.example;transport=tcp"
    assert (changed["sip_register"], changed["t38_in_invite"]) == (False, True)
    # What was not given stays, the sealed password included.
    assert (changed["sip_domain"], changed["sip_password"]) == ("carrier.example", "sealed")
    cleared = run("carrier", "update", "--name", "reg-trunk", "--outbound-proxy", "")
    assert cleared.json()["outbound_proxy"] is None
    one_line_error(run("carrier", "update", "--name", "reg-trunk"), "nothing to change")
    one_line_error(
        run("carrier", "update", "--name", "reg-trunk", "--register-expires", "5"),
        "register_expires_s",
    )
