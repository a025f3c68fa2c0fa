"""The chaos run's count on made-up evidence: each failing figure counts what it names.

No servers: the records, calls, pages and mails are built here as the services and
pstn-sim write them (tests/chaos/test_chaos.py runs the real thing).
"""

from __future__ import annotations

import random
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from tests.chaos.counting import count
from tests.chaos.plan import ChaosConfig, InboundCall, Planned, plan_emails, plan_inbound
from tests.e2e.stack import CapturedMail

HEADER_ROWS = 40


def _page(n: int) -> Image.Image:
    page = Image.new("1", (1728, 200), 1)
    ImageDraw.Draw(page).rectangle((100 + 50 * n, 20, 400 + 50 * n, 180), fill=0)
    return page


def _tiff(path: Path, pages: list[Image.Image]) -> Path:
    first, *rest = pages
    first.save(path, compression="group4", save_all=True, append_images=rest)
    return path


def _with_header(page: Image.Image) -> Image.Image:
    out = Image.new("1", (page.width, page.height + HEADER_ROWS), 1)
    ImageDraw.Draw(out).text((10, 10), "header line", fill=0)
    out.paste(page, (0, HEADER_ROWS))
    return out


class World:
    """The evidence of a run in which everything went right."""

    def __init__(self, tmp_path: Path, planned: list[Planned], inbound: list[InboundCall]):
        self.tmp = tmp_path
        self.planned, self.inbound = planned, inbound
        self.records: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.mails: list[CapturedMail] = []
        self.documents: dict[str, bytes] = {}
        for p in planned:
            for r in p.recipients:
                self._outbound(p, r.number, r.expected_status)
        for c in inbound:
            self.call("from_sim", c.caller, c.to, success=True, pages=c.pages)
            self.records.append(
                {
                    "_id": f"in-{c.index}",
                    "direction": "inbound",
                    "remote_number": c.caller,
                    "state": {"status": "received", "pages": c.pages},
                    "notifications": [{"kind": "received"}],
                }
            )
            self.mail(c.owner, f"Fax from {c.caller} ({c.pages} page{'s' * (c.pages > 1)})")

    def _outbound(self, p: Planned, number: str, status: str) -> None:
        fax_id = f"fax-{p.index}-{number}"
        pages = [_page(n) for n in range(p.pages)]
        self.documents[fax_id] = _tiff(self.tmp / f"{fax_id}.tif", pages).read_bytes()
        self.records.append(
            {
                "_id": fax_id,
                "direction": "outbound",
                "source_message_id": p.message_id,
                "remote_number": number,
                "state": {"status": status, "pages": p.pages if status == "sent" else 0},
                "attempts": 3 if status == "failed" else 1,
                "rejection_reasons": [{"code": "x"}] if status == "rejected" else [],
                "notifications": [{"kind": status}],
                "documents": {"fax_tiff": {"file_id": fax_id}},
            }
        )
        if status == "sent":
            self.call("to_sim", "+16465550101", number, success=True, pages=p.pages, fax=fax_id)
        if status == "failed":
            for _ in range(3):
                self.call("to_sim", "+16465550101", number, success=False, pages=0)
        subject = {
            "sent": f"Fax to {number} sent ({p.pages} pages)",
            "failed": f"Fax to {number} failed",
            "rejected": "Your fax to somebody was not sent",
        }[status]
        self.mail(p.sender, subject, in_reply_to=str(p.message["Message-ID"]))

    def call(
        self,
        direction: str,
        from_: str,
        to: str,
        *,
        success: bool,
        pages: int,
        fax: str | None = None,
    ) -> dict[str, Any]:
        call_id = f"sim-{len(self.calls)}"
        tiff = None
        if fax is not None and pages:
            pages_kept = [_with_header(_page(n)) for n in range(pages)]
            tiff = str(_tiff(self.tmp / f"{call_id}.tif", pages_kept))
        call = {
            "id": call_id,
            "direction": direction,
            "from": from_,
            "to": to,
            "outcome": {"success": success} if success or pages else None,
            "pages_received": pages,
            "received_tiff": tiff,
            "ended_at": "2026-12-07T00:00:00Z",
        }
        self.calls.append(call)
        return call

    def mail(self, to: str, subject: str, in_reply_to: str = "") -> None:
        message = EmailMessage()
        message["Subject"] = subject
        if in_reply_to:
            message["In-Reply-To"] = in_reply_to
        self.mails.append(CapturedMail((to,), message))

    async def count(self) -> dict[str, Any]:
        async def document(ref: dict[str, Any]) -> bytes:
            return self.documents[str(ref["file_id"])]

        return await count(
            self.planned, self.inbound, self.records, self.calls, self.mails, document, True
        )

    def sent(self) -> tuple[Planned, str, dict[str, Any]]:
        """An email with a sent fax of several pages, its number and its record."""
        for p in self.planned:
            for r in p.recipients:
                if r.kind == "receive" and p.pages > 1:
                    record = next(
                        x
                        for x in self.records
                        if x.get("source_message_id") == p.message_id
                        and x["remote_number"] == r.number
                    )
                    return p, r.number, record
        raise AssertionError("no sent fax of several pages in the plan")


def _world(tmp_path: Path) -> World:
    config = ChaosConfig(emails=20, inbound=4, max_pages=3)
    rng = random.Random(7)
    return World(tmp_path, plan_emails(config, rng), plan_inbound(config, rng))


FAILING = (
    "lost",
    "duplicate_records",
    "wrong_outcome",
    "history_incomplete",
    "duplicates_on_line",
    "sent_without_call",
    "completed_not_sent",
    "pages_not_equal",
    "busy_calls_over_policy",
    "missing_mails",
    "extra_mails",
    "inbound_lost",
    "inbound_duplicated",
)


def _failing(figures: dict[str, Any]) -> dict[str, int]:
    return {name: figures[name] for name in FAILING if figures[name]}


async def test_a_run_where_everything_went_right_counts_nothing_bad(tmp_path: Path) -> None:
    world = _world(tmp_path)
    figures = await world.count()
    assert _failing(figures) == {}, figures["problems"]
    assert figures["terminal"] == figures["faxes"] > figures["emails"]
    assert figures["faxes_compared"] == figures["kinds"]["receive"]
    assert figures["inbound_completed"] == 4


async def test_a_second_complete_call_is_a_duplicate_on_the_line(tmp_path: Path) -> None:
    world = _world(tmp_path)
    p, number, record = world.sent()
    world.call("to_sim", "+16465550101", number, success=True, pages=p.pages, fax=record["_id"])
    figures = await world.count()
    assert _failing(figures) == {"duplicates_on_line": 1}


async def test_a_cut_call_sent_again_is_pages_resent_not_a_duplicate(tmp_path: Path) -> None:
    world = _world(tmp_path)
    _p, number, record = world.sent()
    world.call("to_sim", "+16465550101", number, success=False, pages=1, fax=record["_id"])
    figures = await world.count()
    assert _failing(figures) == {}
    assert figures["pages_resent"] == 1


async def test_a_complete_fax_whose_last_page_is_sent_again_is_pages_resent(
    tmp_path: Path,
) -> None:
    # The far end held every page (its last confirmation lost, or it was killed with the
    # page on its disk); the redial carried the last page only: one fax, one page resent.
    world = _world(tmp_path)
    _p, number, record = world.sent()
    world.call("to_sim", "+16465550101", number, success=True, pages=1, fax=record["_id"])
    figures = await world.count()
    assert _failing(figures) == {}, figures["problems"]
    assert figures["pages_resent"] == 1


async def test_a_one_page_fax_cut_with_its_page_unconfirmed_and_sent_again_is_one_fax(
    tmp_path: Path,
) -> None:
    # The far end wrote the page and was cut before its MCF reached the sender: the
    # sender could not know, and sends the page again.
    world = _world(tmp_path)
    p, number, record = next(
        (p, r.number, x)
        for p in world.planned
        for r in p.recipients
        if r.kind == "receive" and p.pages == 1
        for x in world.records
        if x.get("source_message_id") == p.message_id and x["remote_number"] == r.number
    )
    world.call("to_sim", "+16465550101", number, success=False, pages=1, fax=record["_id"])
    figures = await world.count()
    assert _failing(figures) == {}, figures["problems"]
    assert figures["pages_resent"] == 1
    # Two calls the far end completed are two faxes, one page or many.
    world.call("to_sim", "+16465550101", number, success=True, pages=p.pages, fax=record["_id"])
    figures = await world.count()
    assert _failing(figures) == {"duplicates_on_line": 1}


async def test_pages_that_differ_from_the_rendered_document_fail(tmp_path: Path) -> None:
    world = _world(tmp_path)
    p, number, _record = world.sent()
    (call,) = [c for c in world.calls if c["to"] == number]
    # The document's pages in the wrong order.
    _tiff(
        Path(call["received_tiff"]),
        [_with_header(_page(n)) for n in reversed(range(p.pages))],
    )
    figures = await world.count()
    assert _failing(figures) == {"pages_not_equal": 1}


async def test_sent_without_a_complete_call_fails(tmp_path: Path) -> None:
    world = _world(tmp_path)
    _, number, _ = world.sent()
    world.calls = [c for c in world.calls if c["to"] != number]
    figures = await world.count()
    assert _failing(figures) == {"sent_without_call": 1}


async def test_sent_by_a_sender_killed_after_the_last_confirmation_is_on_paper(
    tmp_path: Path,
) -> None:
    # The far end confirmed every page and was never told the call was over: it ended
    # the call as failed, every page on its disk; the restarted sender said "sent".
    world = _world(tmp_path)
    p, number, record = world.sent()
    (call,) = [c for c in world.calls if c["to"] == number]
    call["outcome"] = {"success": False}
    figures = await world.count()
    assert _failing(figures) == {}, figures["problems"]
    # The same with the pages spread over two calls, neither completed: the first cut
    # after page 1, the redial carrying the rest.
    world.calls.remove(call)
    first = world.call("to_sim", "+16465550101", number, success=False, pages=1, fax=record["_id"])
    rest = world.call("to_sim", "+16465550101", number, success=False, pages=0)
    pages = [_with_header(_page(n)) for n in range(1, p.pages)]
    rest["received_tiff"] = str(_tiff(tmp_path / "rest.tif", pages))
    rest["pages_received"] = len(pages)
    figures = await world.count()
    assert _failing(figures) == {}, figures["problems"]
    # Without the last page anywhere, "sent" has no call behind it.
    _tiff(Path(rest["received_tiff"]), pages[:-1] or [_with_header(_page(99))])
    assert first["received_tiff"]
    figures = await world.count()
    assert _failing(figures) == {"sent_without_call": 1}


async def test_dials_to_a_busy_number_beyond_the_policy_fail(tmp_path: Path) -> None:
    world = _world(tmp_path)
    busy = next(r.number for p in world.planned for r in p.recipients if r.kind == "busy")
    world.call("to_sim", "+16465550101", busy, success=False, pages=0)
    figures = await world.count()
    assert _failing(figures) == {"busy_calls_over_policy": 1}


async def test_lost_extra_and_missing_mails(tmp_path: Path) -> None:
    world = _world(tmp_path)
    lost = world.records.pop(0)
    extra = world.mails[1]
    world.mails.append(extra)
    world.mails.pop(0)
    figures = await world.count()
    assert figures["lost"] == 1, figures["problems"]
    assert (figures["extra_mails"], figures["missing_mails"]) == (1, 1), figures["problems"]
    assert lost["remote_number"] in " ".join(figures["problems"])


async def test_inbound_lost_and_duplicated(tmp_path: Path) -> None:
    world = _world(tmp_path)
    first, second = world.inbound[0], world.inbound[1]
    world.records = [r for r in world.records if r.get("remote_number") != first.caller]
    world.mails.append(next(m for m in world.mails if second.caller in m.header("Subject")))
    figures = await world.count()
    assert _failing(figures) == {"inbound_lost": 1, "inbound_duplicated": 1}


async def test_a_redialled_inbound_call_is_one_fax(tmp_path: Path) -> None:
    """Refused during an outage, answered without a page, then received: no duplicate."""
    world = _world(tmp_path)
    call = world.inbound[0]
    (line,) = [c for c in world.calls if c["from"] == call.caller]
    answered = "2026-12-07T12:00:00Z"
    line["tries"] = [
        {"sip_status": 503, "answered_at": None},
        {"sip_status": 200, "answered_at": answered},
        {"sip_status": 200, "answered_at": answered},
    ]
    world.records.append(
        {
            "_id": "in-failed-try",
            "direction": "inbound",
            "remote_number": call.caller,
            "state": {"status": "failed", "pages": 0},
            "notifications": [{"kind": "inbound_failed"}],
        }
    )
    world.mail(call.owner, f"Fax from {call.caller} could not be received")
    figures = await world.count()
    assert _failing(figures) == {}, figures["problems"]
    assert (figures["inbound_tries"], figures["inbound_redialled"]) == (len(world.inbound) + 2, 1)
    # A second "received" for it is a duplicate, however many tries there were.
    world.mail(call.owner, f"Fax from {call.caller} ({call.pages} page{'s' * (call.pages > 1)})")
    assert _failing(await world.count()) == {"inbound_duplicated": 1}


async def test_pages_of_a_call_without_error_correction_are_not_held_to_pixels(
    tmp_path: Path,
) -> None:
    world = _world(tmp_path)
    p, number, _record = world.sent()
    (call,) = [c for c in world.calls if c["to"] == number]
    # A line error took rows off the first page: a call without ECM cannot help it.
    _tiff(
        Path(call["received_tiff"]),
        [_with_header(_page(0)).crop((0, 0, 1728, 180))]
        + [_with_header(_page(n)) for n in range(1, p.pages)],
    )
    call["outcome"] = {"success": True, "ecm": False}
    figures = await world.count()
    assert _failing(figures) == {}, figures["problems"]
    assert figures["faxes_without_ecm"] == 1
    call["outcome"] = {"success": True, "ecm": True}
    assert _failing(await world.count()) == {"pages_not_equal": 1}
