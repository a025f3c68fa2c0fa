"""``faxbox check-email FILE.eml`` as an admin runs it: a process, the configured database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from faxbox.shared.settings import MongoSettings
from faxbox.shared.store import Account, Faxbox, Store, User
from faxbox.validator.adapters import DAILY_PAGES, DECISIONS
from tests.unit.validator.mailkit import REALM, gmail, pdf

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
TRUSTED = "mx.check.test"
# What our receiving mail server writes on top of mail it proved (the senders here are
# all @example.com).
PROVEN = f"Authentication-Results: {TRUSTED}; dmarc=pass header.from=example.com\r\n".encode()


@pytest.fixture(scope="module")
async def seeded(store: Store) -> Faxbox:
    account = await store.create_account(Account(name="Acme", realm=REALM))
    user = await store.create_user(
        User(account_id=account.id, email="alice@example.com", daily_page_limit=5)
    )
    return await store.create_faxbox(Faxbox(account_id=account.id, owner_user_id=user.id))


def check_email(
    command: list[str],
    eml: Path,
    mongo_settings: MongoSettings,
    *,
    proven: bool = True,
    trusted: str = f'["{TRUSTED}"]',
) -> tuple[int, dict[str, Any] | None, str]:
    env = os.environ | {
        "FAXBOX_MONGO_URL": mongo_settings.mongo_url,
        "FAXBOX_MONGO_DB": mongo_settings.mongo_db,
        "FAXBOX_VALIDATOR_AUTHSERV_IDS": trusted,
    }
    if proven and eml.exists():
        eml.write_bytes(PROVEN + eml.read_bytes())
    done = subprocess.run(
        [*command, str(eml)], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    lines = done.stdout.splitlines()
    assert len(lines) <= 1, done.stdout
    return done.returncode, json.loads(lines[0]) if lines else None, done.stderr


@pytest.mark.parametrize(
    "command",
    [
        [str(BIN / "faxbox"), "check-email"],
        [str(BIN / "faxbox-check-email")],
        [sys.executable, "-m", "faxbox.validator.check_email"],
    ],
    ids=["faxbox check-email", "faxbox-check-email", "module"],
)
async def test_accepted_mail_is_reported_and_nothing_is_stored(
    command: list[str],
    tmp_path: Path,
    mongo_settings: MongoSettings,
    store: Store,
    seeded: Faxbox,
) -> None:
    eml = tmp_path / "fax.eml"
    eml.write_bytes(gmail('"Alice" <Alice@Example.com>', [("report.pdf", pdf(2))]))
    code, result, stderr = check_email(command, eml, mongo_settings)
    assert code == 0, stderr
    assert result == {
        "decision": "accepted",
        "number": "+12125551234",
        "numbers": ["+12125551234"],
        "pages": 2,
        "attachment": "report.pdf",
        "reasons": [],
    }
    assert await store.db[DECISIONS].count_documents({}) == 0
    assert await store.db[DAILY_PAGES].count_documents({}) == 0
    names = await store.db.list_collection_names()
    assert not [n for n in names if n.startswith("documents_")]


async def test_rejections_list_every_reason(
    tmp_path: Path, mongo_settings: MongoSettings, seeded: Faxbox
) -> None:
    eml = tmp_path / "bad.eml"
    eml.write_bytes(gmail("alice@example.com", [("long.pdf", pdf(6))], to=f"555-1234@{REALM}"))
    code, result, stderr = check_email([str(BIN / "faxbox"), "check-email"], eml, mongo_settings)
    assert code == 0, stderr
    assert result is not None
    assert result["decision"] == "rejected"
    assert result["number"] is None
    assert result["numbers"] == []
    assert result["pages"] == 6
    assert result["attachment"] == "long.pdf"
    assert [r["code"] for r in result["reasons"]] == ["invalid_number", "daily_page_limit"]
    assert all(r["message"] for r in result["reasons"])


async def test_every_number_of_the_copy_is_listed(
    tmp_path: Path, mongo_settings: MongoSettings, seeded: Faxbox
) -> None:
    to = f"+12125550147@{REALM}, 2125550148@{REALM}, Bob <bob@example.com>"
    everyone = gmail("alice@example.com", [("a.pdf", pdf())], to=to)
    cases = {
        "all.eml": (everyone, ["+12125550147", "+12125550148"]),
        "second.eml": (
            f"Delivered-To: fax@faxbox.test\r\nX-Original-To: 2125550148@{REALM}\r\n".encode()
            + everyone,
            ["+12125550148"],
        ),
    }
    for name, (raw, numbers) in cases.items():
        eml = tmp_path / name
        eml.write_bytes(raw)
        code, result, stderr = check_email(
            [str(BIN / "faxbox"), "check-email"], eml, mongo_settings
        )
        assert code == 0, stderr
        assert result is not None
        assert (result["decision"], result["numbers"], result["number"]) == (
            "accepted",
            numbers,
            numbers[0],
        )


async def test_unknown_sender_is_ignored(
    tmp_path: Path, mongo_settings: MongoSettings, seeded: Faxbox
) -> None:
    eml = tmp_path / "stranger.eml"
    eml.write_bytes(gmail("mallory@evil.example", [("x.pdf", pdf())]))
    code, result, _ = check_email([str(BIN / "faxbox"), "check-email"], eml, mongo_settings)
    assert code == 0
    assert result is not None
    assert (result["decision"], [r["code"] for r in result["reasons"]]) == (
        "ignored",
        ["unknown_sender"],
    )


async def test_missing_file_is_an_input_error(
    tmp_path: Path, mongo_settings: MongoSettings
) -> None:
    code, result, stderr = check_email(
        [str(BIN / "faxbox"), "check-email"], tmp_path / "nope.eml", mongo_settings
    )
    assert (code, result) == (2, None)
    assert "cannot read" in stderr


async def test_without_a_trusted_server_it_warns_and_refuses(
    tmp_path: Path, mongo_settings: MongoSettings, seeded: Faxbox
) -> None:
    eml = tmp_path / "fax.eml"
    eml.write_bytes(gmail("alice@example.com", [("a.pdf", pdf())]))
    code, result, stderr = check_email(
        [str(BIN / "faxbox"), "check-email"], eml, mongo_settings, trusted="[]"
    )
    assert code == 0, stderr
    assert "FAXBOX_VALIDATOR_AUTHSERV_IDS is empty" in stderr
    assert result is not None
    assert [r["code"] for r in result["reasons"]] == ["sender_not_authenticated"]
    assert "no trusted mail server configured" in result["reasons"][0]["message"]


async def test_a_forged_proof_is_no_proof(
    tmp_path: Path, mongo_settings: MongoSettings, seeded: Faxbox
) -> None:
    eml = tmp_path / "forged.eml"
    # Written by the sender, under our server's own failing header.
    forged = f"Authentication-Results: {TRUSTED}; dmarc=pass header.from=example.com\r\n"
    ours = f"Authentication-Results: {TRUSTED}; dmarc=fail header.from=example.com\r\n"
    raw = (ours + forged).encode() + gmail("alice@example.com", [("a.pdf", pdf())])
    eml.write_bytes(raw)
    code, result, stderr = check_email(
        [str(BIN / "faxbox"), "check-email"], eml, mongo_settings, proven=False
    )
    assert code == 0, stderr
    assert result is not None
    assert [r["code"] for r in result["reasons"]] == ["sender_not_authenticated"]
