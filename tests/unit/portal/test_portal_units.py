"""Pure parts of the portal: token comparison, date ranges, number search, the dashboard's
summary (with in-memory fakes of our own ports), passwords and assignable numbers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from faxbox.portal.api import FaxOut
from faxbox.portal.dashboard import (
    Dashboard,
    ManagementApiError,
    load_dashboard,
    redrivable,
    registration_rows,
    summarize,
    vhost_of,
)
from faxbox.portal.faxes import DateRange, available_kinds, document_ref, number_filter
from faxbox.portal.security import tokens_match
from faxbox.portal.views import failure_text, range_note
from faxbox.shared import numbers, passwords
from faxbox.shared.routing import SUBSCRIPTIONS, Topology
from faxbox.shared.store import NotFound
from faxbox.shared.store.records import HistoryRecord
from faxbox.shared.store.registrations import SipRegistrationRecord

# --- sessions ---------------------------------------------------------------------------


def test_tokens_match_needs_both() -> None:
    assert tokens_match("a", "a")
    assert not tokens_match("a", "b")
    assert not tokens_match(None, None)
    assert not tokens_match("", "")
    assert not tokens_match("a", None)


# --- date ranges and search ---------------------------------------------------------------


def test_default_range_is_the_last_30_days() -> None:
    now = datetime(2026, 3, 15, 12, tzinfo=UTC)
    r = DateRange.resolve(None, None, now=now)
    assert r.end == now
    assert r.start == now - timedelta(days=30)
    naive = DateRange.resolve(datetime(2026, 1, 1), datetime(2026, 2, 1))
    assert naive.start.tzinfo is UTC
    with pytest.raises(ValueError, match="after its start"):
        DateRange.resolve(now, now - timedelta(days=1))


def test_range_note_says_older_faxes_are_outside() -> None:
    r = DateRange(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
    assert "older than 2026-01-01 are outside this range" in range_note(r)


@pytest.mark.parametrize(
    ("typed", "pattern"),
    [("+1 (212) 555", "1212555"), ("4711", "4711"), ("*99#", r"\*99\#"), ("", None), ("+", None)],
)
def test_number_filter(typed: str, pattern: str | None) -> None:
    found = number_filter(typed)
    if pattern is None:
        assert found is None
        return
    assert found is not None
    regexes = {c[k]["$regex"] for c in found["$or"] for k in c}
    assert len(regexes) == 1
    (regex,) = regexes
    assert re.fullmatch(regex, typed.replace(" ", "").replace("(", "").replace(")", "").lstrip("+"))


# --- history records ---------------------------------------------------------------------


def _record(**fields: Any) -> HistoryRecord:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    base: dict[str, Any] = {
        "_id": "fax1",
        "account_id": "acc1",
        "month": "202603",
        "created_at": now,
        "updated_at": now,
    }
    return HistoryRecord.from_doc(base | fields)


def _ref(account: str, name: str = "f.pdf") -> dict[str, Any]:
    return {
        "account_id": account,
        "month": "202603",
        "file_id": "doc1",
        "filename": name,
        "content_type": "application/pdf",
        "length": 3,
        "sha256": "0" * 64,
    }


def test_failure_text_comes_from_result_or_rejection() -> None:
    failed = _record(
        status="failed", result={"failure_class": "busy", "code": 2, "text": "Line busy."}
    )
    assert failure_text(failed) == "Line busy."
    rejected = _record(
        status="rejected",
        rejection_reasons=[{"code": "no_attachment", "text": "No PDF attached."}],
    )
    assert failure_text(rejected) == "No PDF attached."
    assert failure_text(_record(status="sent")) is None
    assert FaxOut.of(failed).failure == "Line busy."


def test_document_kinds_fall_back_and_stay_in_the_account() -> None:
    record = _record(documents={"partial_pdf": _ref("acc1"), "fax_tiff": _ref("acc1", "f.tif")})
    assert available_kinds(record) == ["pdf", "tiff"]
    assert document_ref(record, "pdf").filename == "f.pdf"
    with pytest.raises(NotFound):
        document_ref(record, "original")
    foreign = _record(documents={"pdf": _ref("acc2")})
    with pytest.raises(NotFound):
        document_ref(foreign, "pdf")


# --- dashboard ---------------------------------------------------------------------------


class FakeQueues:
    def __init__(self, raw: list[dict[str, Any]] | Exception) -> None:
        self.raw = raw

    async def queues(self) -> list[dict[str, Any]]:
        if isinstance(self.raw, Exception):
            raise self.raw
        return self.raw


class FakeProbe:
    def __init__(self, healthy: set[str]) -> None:
        self.healthy = healthy

    async def check(self, url: str) -> tuple[bool, str]:
        ok = url in self.healthy
        return ok, "HTTP 200" if ok else "ConnectError"


RAW = [
    {
        "name": "fx.validator",
        "messages": 7,
        "messages_ready": 5,
        "messages_unacknowledged": 2,
        "consumers": 3,
        "message_stats": {
            "publish_details": {"rate": 12.5},
            "deliver_get_details": {"rate": 11},
        },
    },
    {"name": "fx.validator.dlq", "messages": 4, "consumers": 0},
    {"name": "fx.validator.retry.5s", "messages": 1},
    {"name": "fx.validator.retry.30s", "messages": 2},
    {"name": "other.validator", "messages": 99},
]


def test_summarize_one_row_per_consuming_service() -> None:
    rows = summarize(RAW, Topology("fx"))
    assert [r.service for r in rows] == sorted(SUBSCRIPTIONS)
    validator = next(r for r in rows if r.service == "validator")
    assert (validator.depth, validator.ready, validator.unacked) == (7, 5, 2)
    assert validator.consumers == 3
    assert validator.publish_rate == 12.5
    assert validator.deliver_rate == 11.0
    assert validator.dead_letter_depth == 4
    assert validator.retry_depth == 3
    transmitter = next(r for r in rows if r.service == "transmitter")
    assert not transmitter.declared
    assert transmitter.depth == 0


async def test_load_dashboard_with_health_and_a_broken_api() -> None:
    board = await load_dashboard(
        FakeQueues(RAW),
        FakeProbe({"http://v/readyz"}),
        Topology("fx"),
        {"validator": "http://v/readyz", "notifier": "http://n/readyz"},
    )
    assert isinstance(board, Dashboard)
    assert board.queue_error is None
    assert [(h.service, h.healthy) for h in board.health] == [
        ("notifier", False),
        ("validator", True),
    ]
    broken = await load_dashboard(
        FakeQueues(ManagementApiError("down")), FakeProbe(set()), Topology("fx"), {}
    )
    assert broken.queues == []
    assert broken.queue_error == "down"


def test_vhost_and_redrivable() -> None:
    assert vhost_of("amqp://guest:guest@h:5672/") == "/"
    assert vhost_of("amqp://guest:guest@h:5672") == "/"
    assert vhost_of("amqp://u:p@h/test-vh%2Fx") == "test-vh/x"
    assert redrivable("validator")
    assert not redrivable("portal")


# --- shared helpers the portal relies on -------------------------------------------------


def test_passwords_hash_and_verify() -> None:
    hashed = passwords.hash_password("long enough")
    assert hashed.startswith("$argon2id$")
    assert passwords.verify_password(hashed, "long enough")
    assert not passwords.verify_password(hashed, "wrong one!")
    assert not passwords.verify_password(None, "long enough")
    assert not passwords.verify_password("not a hash", "long enough")
    assert not passwords.verify_password(hashed, "x" * 5000)
    assert not passwords.needs_rehash(hashed)
    with pytest.raises(ValueError, match="8 to"):
        passwords.hash_password("short")


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("4711", "4711"),
        (" 12125550100 ", "+12125550100"),
        ("+442079460958", "+442079460958"),
        ("2125550100", "+12125550100"),
        ("19005550100", "+19005550100"),
    ],
)
def test_assignable_numbers(raw: str, key: str) -> None:
    assert numbers.assignable(raw) == key


@pytest.mark.parametrize("raw", ["123456789", "+1 212 555 0100", "abc", ""])
def test_unassignable_numbers(raw: str) -> None:
    with pytest.raises(numbers.NumberRefused):
        numbers.assignable(raw)


def test_registration_rows_show_expired_registrations_of_a_dead_replica() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def record(state: str, expires_in: int | None, instance: str) -> SipRegistrationRecord:
        return SipRegistrationRecord(
            id=f"car_1|{instance}",
            carrier_id="car_1",
            carrier_name="voip",
            instance=instance,
            aor="sip:5551234@carrier.example",
            registrar="sip:carrier.example;transport=tls",
            state=state,
            expires_at=now + timedelta(seconds=expires_in) if expires_in is not None else None,
            last_status=200 if state == "registered" else 403,
            last_reason="OK" if state == "registered" else "Forbidden",
            updated_at=now,
        )

    rows = registration_rows(
        [
            record("registered", 300, "rx-1"),
            record("registered", -10, "rx-2"),  # its replica stopped refreshing
            record("failed", None, "rx-3"),
        ],
        now,
    )
    assert [(r.instance, r.state, r.expires_in_s) for r in rows] == [
        ("rx-1", "registered", 300),
        ("rx-2", "expired", 0),
        ("rx-3", "failed", None),
    ]


def test_the_api_v1_document_has_an_example_for_every_answer() -> None:
    """The OpenAPI document covers sending and webhooks with examples (docs/api.md too)."""
    import json
    from unittest.mock import MagicMock

    from faxbox.portal.app import create_app
    from faxbox.portal.clientaddr import TrustedProxies
    from faxbox.portal.deps import PortalDeps
    from faxbox.portal.outbound import SendLimits

    deps = MagicMock(spec=PortalDeps)
    deps.signin = object()
    # Fields with a factory are not on the class the spec reads.
    deps.send_limits = SendLimits()
    deps.proxies = TrustedProxies()
    document = create_app(deps).openapi()
    operations = [
        (method, path, op)
        for path, ops in document["paths"].items()
        if path.startswith("/api/v1/")
        for method, op in ops.items()
    ]
    assert len(operations) == 12
    for method, path, op in operations:
        if method == "delete":
            continue  # 204: nothing to show
        assert '"example' in json.dumps(op), f"{method.upper()} {path} has no example"
    post = document["paths"]["/api/v1/faxes"]["post"]
    form = post["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    assert form.endswith("Body_send_fax_api_v1_faxes_post")
    assert "Idempotency-Key" in [p["name"] for p in post["parameters"]]
