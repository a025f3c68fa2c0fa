"""What a chaos run's outcome is, counted from the evidence: the history collections,
pstn-sim's call log (tests/chaos/line.py) with the pages it received, and the mails the
notifier sent (the SMTP capture).

Outbound, per fax (one per number of an email; a rejected email is one):
- ``terminal``: exactly one history record, in the expected terminal status (numbers
  that receive: sent; always-busy numbers: failed after 3 attempts; bad mails:
  rejected); ``lost``: no terminal record; ``duplicate_records``: more than one record
  (or a record for a number the email did not name); ``wrong_outcome``: another status;
- ``history_incomplete``: terminal records without their notification, pages, attempts
  or reasons, and received faxes with the wrong page count;
- on the line, per fax to a number that receives: a call *completed* when the far end
  ended it with every page confirmed (or, cut by a pstn-sim restart, holds every page on
  its disk). ``sent_without_call``: marked sent with no completed call;
  ``completed_not_sent``: a completed call for a fax not marked sent;
  ``duplicates_on_line``: faxes the far end holds complete more than once, counting
  only pages their sender knew were confirmed (see ``complete_copies``); ``pages_not_equal``: the
  completed call's pages are not the rendered document's, pixel for pixel below the
  header line (calls with error correction; ``faxes_without_ecm`` counts the others);
  ``pages_resent``: pages the far end received more than once without a second
  completion (cut calls sent again); ``calls_for_rejected``: calls to numbers of
  rejected mails; ``busy_calls_over_policy``: dials to always-busy numbers beyond 3 per
  fax;
- ``missing_mails`` / ``extra_mails``: each fax must get exactly one mail, to its sender,
  In-Reply-To its email's Message-ID, of its outcome's kind and naming its number (a
  rejected email: one rejection mail); any other mail is extra.

Inbound, per call pstn-sim placed (a caller number of its own): ``inbound_lost``: the
call completed at pstn-sim's end (every page confirmed) but there is no received record
with its pages or no "Fax from" mail to the faxbox's owner; ``inbound_duplicated``: more
than one received record or mail for one call, or more records or mails than pstn-sim's
answered tries of it (pstn-sim redials a call that failed before any page: each try is in
its record's ``tries``, counted in ``inbound_tries`` / ``inbound_redialled``; an answered
try that ended without a page may leave a failure record and mail). A call that did not
complete may have one record and mail (a partial fax) or none.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.line import (
    Page,
    completed,
    decode_pages,
    pages_equal,
    pages_held,
    pages_on_paper,
)
from tests.chaos.plan import BUSY_ATTEMPTS, InboundCall, Planned, Recipient, mid
from tests.e2e.stack import CapturedMail

TERMINAL = {"sent", "failed", "partially_sent", "rejected"}
Documents = Callable[[dict[str, Any]], Awaitable[bytes]]


def status_of(record: dict[str, Any]) -> str | None:
    state = record.get("state")
    if isinstance(state, dict):
        return str(state.get("status")) if state.get("status") else None
    status = record.get("status")
    return str(status) if status else None


def _state(record: dict[str, Any]) -> dict[str, Any]:
    state = record.get("state")
    return state if isinstance(state, dict) else record


@dataclass
class Tally:
    figures: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def bad(self, figure: str, problem: str, n: int = 1) -> None:
        self.figures[figure] += n
        self.problems.append(f"{figure}: {problem}")


def _outbound_records(
    planned: list[Planned], records: list[dict[str, Any]], tally: Tally
) -> dict[tuple[str, str], dict[str, Any]]:
    """The one terminal record of each fax, by (email, number); the rest are counted."""
    by_email: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("direction") != "inbound":
            by_email.setdefault(mid(str(record.get("source_message_id") or "")), []).append(record)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for p in planned:
        mine = by_email.pop(p.message_id, [])
        for r in p.recipients:
            # A rejected email's record names what the mail said, not our number.
            of_fax = mine if p.rejected else [x for x in mine if x.get("remote_number") == r.number]
            finished = [x for x in of_fax if status_of(x) in TERMINAL]
            what = f"email {p.index} to {r.number} ({r.kind})"
            if not finished:
                tally.bad("lost", f"{what}: records {[status_of(x) for x in of_fax]}")
            elif len(of_fax) > 1:
                tally.bad("duplicate_records", f"{what}: faxes {[x['_id'] for x in of_fax]}")
            elif status_of(finished[0]) != r.expected_status:
                tally.bad(
                    "wrong_outcome", f"{what}: fax {finished[0]['_id']} {status_of(finished[0])}"
                )
            else:
                found[(p.message_id, r.number)] = finished[0]
        numbers = {r.number for r in p.recipients}
        for x in mine:
            if not p.rejected and x.get("remote_number") not in numbers:
                tally.bad(
                    "duplicate_records", f"email {p.index}: a fax to {x.get('remote_number')}"
                )
    for message_id, strays in by_email.items():
        tally.bad("duplicate_records", f"records of no planned email {message_id}", len(strays))
    return found


def _history_gaps(p: Planned, r: Recipient, record: dict[str, Any]) -> list[str]:
    status = status_of(record)
    kinds = {n.get("kind") for n in record.get("notifications") or []}
    gaps = [] if status in kinds else [f"no {status} notification"]
    state = _state(record)
    if status == "sent" and state.get("pages") != p.pages:
        gaps.append(f"pages {state.get('pages')} of {p.pages}")
    # Not == 3: an attempt claimed but cut off before it dialled (its worker killed,
    # the broker gone) counts too; the calls on the line are checked separately.
    if status == "failed" and (record.get("attempts") or 0) < BUSY_ATTEMPTS:
        gaps.append(f"attempts {record.get('attempts')}")
    if status == "rejected" and not record.get("rejection_reasons"):
        gaps.append("no rejection reasons")
    return gaps


def complete_copies(calls: list[dict[str, Any]], pages: int) -> int:
    """How many times the far end holds the whole document, as its sender knew it.

    What a call leaves that its sender knew was confirmed: every page of a completed
    call; of a cut call, every page but its last. spandsp writes a page to disk before
    it sends the page's confirmation (MCF), and a call cut then (the far end killed, or
    the sender killed while the MCF was on its way) leaves a page on paper that no
    sender could know arrived; sending it again is a resent page. The earlier pages of
    a cut call were confirmed: the sender only goes on to a page after the last one's
    MCF. (What this cannot see: a sender killed in the milliseconds between an MCF
    and its write to the job; tests/integration/test_transmitter_crash.py kills one
    right after the write.)

    A redial carries only the pages not yet confirmed (a suffix of the document), so
    only a call that leaves all ``pages`` is a copy by itself; the pieces of cut and
    resumed calls add up to one more copy at most.
    """

    def known(call: dict[str, Any]) -> int:
        on_paper = pages_on_paper(call)
        return on_paper if completed(call) else max(0, on_paper - 1)

    whole = sum(1 for c in calls if known(c) >= pages)
    pieces = sum(known(c) for c in calls if known(c) < pages)
    return whole + (1 if pieces >= pages else 0)


async def _line(
    planned: list[Planned],
    found: dict[tuple[str, str], dict[str, Any]],
    calls: list[dict[str, Any]],
    documents: Documents,
    tally: Tally,
) -> None:
    to_sim = [c for c in calls if c["direction"] == "to_sim"]
    by_number: dict[str, list[dict[str, Any]]] = {}
    for call in to_sim:
        by_number.setdefault(call["to"], []).append(call)
    rendered: dict[str, list[Page]] = {}
    for p in planned:
        for r in p.recipients:
            if r.kind != "receive":
                continue
            mine = by_number.get(r.number, [])
            done = [
                c
                for c in mine
                if completed(c) or (c.get("cut_by_restart") and pages_on_paper(c) >= p.pages)
            ]
            record = found.get((p.message_id, r.number))
            sent = record is not None and status_of(record) == "sent"
            what = f"email {p.index} to {r.number}"
            copies = complete_copies(mine, p.pages)
            if copies > 1:
                tally.bad("duplicates_on_line", f"{what}: received complete {copies} times")
            if sent and not done and not await _on_paper(record, mine, documents, rendered):
                tally.bad("sent_without_call", f"{what}: marked sent, no completed call")
            if done and not sent and record is not None:
                tally.bad("completed_not_sent", f"{what}: completed, marked {status_of(record)}")
            received = sum(pages_on_paper(c) for c in mine)
            resent = received - p.pages * max(1, copies)
            if resent > 0:
                tally.figures["pages_resent"] += resent
            if sent and done and record is not None and not _with_ecm(done[0]):
                # Without error correction (the redial after a protocol failure turns it
                # off), a line error changes or drops rows of a page the far end still
                # accepts: no fax system can promise its pixels.
                tally.figures["faxes_without_ecm"] += 1
            elif sent and done and record is not None:
                tally.figures["faxes_compared"] += 1
                problem = await _compare(record, done[0], documents, rendered)
                if problem:
                    tally.bad("pages_not_equal", f"{what}: {problem}")
    tally.figures["calls_completed"] += sum(1 for c in to_sim if completed(c))
    tally.figures["calls_cut"] += sum(1 for c in to_sim if pages_on_paper(c) and not completed(c))
    # More dials to an always-busy number than its faxes' attempts allow.
    busy = Counter(r.number for p in planned for r in p.recipients if r.kind == "busy")
    dialled = Counter(c["to"] for c in to_sim)
    for number, faxes in busy.items():
        over = dialled[number] - BUSY_ATTEMPTS * faxes
        if over > 0:
            tally.bad(
                "busy_calls_over_policy",
                f"{number}: {dialled[number]} dials for {faxes} fax(es)",
                over,
            )
    rejected = {r.number for p in planned if p.rejected for r in p.recipients}
    for call in to_sim:
        if call["to"] in rejected:
            tally.bad("calls_for_rejected", f"call {call['id']} to {call['to']}")


def _with_ecm(call: dict[str, Any]) -> bool:
    """Whether the call ran with error correction (a call cut by a restart: unknown, so
    taken as with)."""
    return (call.get("outcome") or {}).get("ecm") is not False


async def _on_paper(
    record: dict[str, Any] | None,
    calls: list[dict[str, Any]],
    documents: Documents,
    rendered: dict[str, list[Page]],
) -> bool:
    """Whether the far end holds every page of the fax, from calls none of which it
    completed: a sender killed right after the last page's confirmation (MCF) knows the
    fax was sent, and its restart says so without a call, while the far end, never told
    the call is over (no DCN, no BYE), ends it as failed with every page on its disk. A
    redial carries only the pages after the confirmed ones, so the pages may be spread
    over several calls: each received page is matched to the document's, pixel for pixel.
    """
    ref = ((record or {}).get("documents") or {}).get("fax_tiff")
    kept = [c for c in calls if c.get("received_tiff") and pages_on_paper(c)]
    if not ref or not kept:
        return False
    key = str(ref.get("file_id"))
    if key not in rendered:
        rendered[key] = decode_pages(await documents(ref))
    document = rendered[key]
    held: set[int] = set()
    for call in kept:
        held |= pages_held(decode_pages(Path(call["received_tiff"])), document)
    return len(held) == len(document)


async def _compare(
    record: dict[str, Any],
    call: dict[str, Any],
    documents: Documents,
    rendered: dict[str, list[Page]],
) -> str | None:
    ref = (record.get("documents") or {}).get("fax_tiff")
    if not ref:
        return "no rendered document in the history record"
    if not call.get("received_tiff"):
        return f"call {call['id']}: no pages kept"
    key = str(ref.get("file_id"))
    if key not in rendered:
        rendered[key] = decode_pages(await documents(ref))
    return pages_equal(decode_pages(Path(call["received_tiff"])), rendered[key])


_OUTBOUND_SUBJECT = re.compile(
    r"^(?:Fax to (?P<number>\S+) (?P<kind>sent|failed)\b"
    r"|Your fax to .* was (?P<rejected>not) sent$)"
)
_INBOUND_SUBJECT = re.compile(r"^Fax from (?P<caller>\S+) (?:\((?P<pages>\d+) pages?\)|could not)")


def _mails(
    planned: list[Planned], inbound: list[InboundCall], mails: list[CapturedMail], tally: Tally
) -> dict[str, list[CapturedMail]]:
    """Outbound mails checked here; inbound ones returned by caller."""
    by_reply = {p.message_id: p for p in planned}
    good: Counter[tuple[str, str]] = Counter()
    callers = {c.caller: c for c in inbound}
    inbound_mails: dict[str, list[CapturedMail]] = {}
    for mail in mails:
        subject = mail.header("Subject")
        incoming = _INBOUND_SUBJECT.match(subject)
        if incoming and incoming["caller"] in callers:
            call = callers[incoming["caller"]]
            if mail.rcpt_tos == (call.owner,):
                inbound_mails.setdefault(call.caller, []).append(mail)
                continue
        email = by_reply.get(mid(mail.header("In-Reply-To")))
        match = _OUTBOUND_SUBJECT.match(subject)
        key: tuple[str, str] | None = None
        if email is not None and match and mail.rcpt_tos == (email.sender,):
            if email.rejected and match["rejected"]:
                key = (email.message_id, email.recipients[0].number)
            for r in email.recipients:
                if match["number"] == r.number and match["kind"] == r.expected_status:
                    key = (email.message_id, r.number)
        if key is not None and good[key] == 0:
            good[key] += 1
            continue
        tally.bad(
            "extra_mails",
            f"to {mail.rcpt_tos}: {subject!r} (In-Reply-To {mail.header('In-Reply-To') or '-'})",
        )
    for p in planned:
        for r in p.recipients:
            if good[(p.message_id, r.number)] == 0:
                tally.bad("missing_mails", f"email {p.index} to {r.number} ({r.kind}), {p.sender}")
    return inbound_mails


def _inbound(
    inbound: list[InboundCall],
    records: list[dict[str, Any]],
    calls: list[dict[str, Any]],
    mails: dict[str, list[CapturedMail]],
    tally: Tally,
) -> None:
    records_of: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("direction") == "inbound":
            records_of.setdefault(str(record.get("remote_number")), []).append(record)
    placed: dict[str, list[dict[str, Any]]] = {}
    for call in calls:
        if call["direction"] == "from_sim":
            placed.setdefault(call["from"], []).append(call)
    for planned_call in inbound:
        caller = planned_call.caller
        what = f"inbound {planned_call.index} from {caller}"
        mine = records_of.pop(caller, [])
        their_mails = mails.get(caller, [])
        line = placed.get(caller, [])
        if not line:
            tally.bad("inbound_not_placed", f"{what}: pstn-sim has no such call")
            continue
        tally.figures["inbound_placed"] += 1
        tries = [t for c in line for t in c.get("tries") or [c]]
        tally.figures["inbound_tries"] += len(tries)
        tally.figures["inbound_redialled"] += len(tries) > 1
        # Each answered try may leave its record and mail (one that ended without a page
        # is reported as failed, then redialled); only one may say "received".
        answered = max(1, sum(1 for t in tries if t.get("answered_at")))
        received_here = [r for r in mine if status_of(r) == "received"]
        received_mails = [m for m in their_mails if m.header("Subject").startswith("Fax from")]
        received_mails = [m for m in received_mails if "could not" not in m.header("Subject")]
        if (
            len(received_here) > 1
            or len(received_mails) > 1
            or len(mine) > answered
            or len(their_mails) > answered
        ):
            tally.bad(
                "inbound_duplicated",
                f"{what}: {len(mine)} records, {len(their_mails)} mails, {answered} answered",
            )
            continue
        if not any(completed(c) for c in line):
            continue
        tally.figures["inbound_completed"] += 1
        received = [r for r in mine if status_of(r) == "received"]
        wanted = f"Fax from {caller} ({planned_call.pages} page"
        if not received or not any(m.header("Subject").startswith(wanted) for m in their_mails):
            states = [status_of(r) for r in mine]
            subjects = [m.header("Subject") for m in their_mails]
            tally.bad("inbound_lost", f"{what}: completed; records {states}, mails {subjects}")
            continue
        pages = _state(received[0]).get("pages")
        if pages != planned_call.pages or "received" not in {
            n.get("kind") for n in received[0].get("notifications") or []
        }:
            tally.bad(
                "history_incomplete",
                f"{what}: pages {pages} of {planned_call.pages}, "
                f"notifications {received[0].get('notifications')}",
            )
    for caller, strays in records_of.items():
        tally.bad("inbound_duplicated", f"records from {caller}, no planned call", len(strays))


async def count(
    planned: list[Planned],
    inbound: list[InboundCall],
    records: list[dict[str, Any]],
    calls: list[dict[str, Any]],
    mails: list[CapturedMail],
    documents: Documents,
    quiescent: bool,
) -> dict[str, Any]:
    tally = Tally()
    found = _outbound_records(planned, records, tally)
    for p in planned:
        for r in p.recipients:
            record = found.get((p.message_id, r.number))
            if record is None:
                continue
            tally.figures["terminal"] += 1
            gaps = _history_gaps(p, r, record)
            if gaps:
                tally.bad("history_incomplete", f"fax {record['_id']}: {', '.join(gaps)}")
    await _line(planned, found, calls, documents, tally)
    inbound_mails = _mails(planned, inbound, mails, tally)
    _inbound(inbound, records, calls, inbound_mails, tally)
    recipients = [r for p in planned for r in p.recipients]
    figures: dict[str, Any] = {
        "emails": len(planned),
        "faxes": len(recipients),
        "emails_to_several_numbers": sum(1 for p in planned if len(p.recipients) > 1),
        "inbound": len(inbound),
        "kinds": dict(Counter(r.kind for r in recipients)),
        "pages": dict(Counter(p.pages for p in planned)),
        "calls": len(calls),
        "calls_cut_by_pstn_restart": sum(1 for c in calls if c.get("cut_by_restart")),
        "mails": len(mails),
        "quiescent": quiescent,
    }
    for name in COUNTED:
        figures[name] = tally.figures[name]
    figures["problems"] = tally.problems
    return figures


# Every figure the count makes; those in FAILING must be 0 (report.py).
COUNTED = (
    "terminal",
    "lost",
    "duplicate_records",
    "wrong_outcome",
    "history_incomplete",
    "duplicates_on_line",
    "sent_without_call",
    "completed_not_sent",
    "pages_not_equal",
    "faxes_compared",
    "faxes_without_ecm",
    "pages_resent",
    "calls_completed",
    "calls_cut",
    "calls_for_rejected",
    "busy_calls_over_policy",
    "missing_mails",
    "extra_mails",
    "inbound_placed",
    "inbound_tries",
    "inbound_redialled",
    "inbound_completed",
    "inbound_not_placed",
    "inbound_lost",
    "inbound_duplicated",
)
