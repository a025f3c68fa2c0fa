"""Calls being received, on disk from the answer on: a receiver that dies mid-call leaves
what the caller's machine was told it delivered.

A receiving fax machine confirms each page (MCF) right after writing it, and the sender
takes a confirmed page as delivered. So a receiver killed after its confirmation of the
last page, before it stored the fax, would lose a fax its sender counts as sent. Each
answered call therefore gets ``<spool>/receiving/<fax id>/``: ``call.json`` (what the
announcement needs of the call) at the answer, the pages spandsp writes
(``received.tif``), and ``progress.json`` rewritten as each page ends (its report and
the sender's identity). The entry is removed once the fax is stored or kept in
``pending``.

At start-up, before any call is taken, what a dead process left here is moved to
``pending`` with the outcome its progress tells (``interrupted_outcome``): every page
ended, the last with the sender's end of document (EOP), is a fax received; anything
else is a reception cut off after the pages that arrived. The spool is one replica's
own, so an entry found at start-up belongs to no live call.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from faxbox.fax import spandsp
from faxbox.fax.outcome import T30_ERR_CALLDROPPED, FailureClass, FaxOutcome, PageStats, describe
from faxbox.fax.tiffcheck import count_pages
from faxbox.inbound.pending import PAGES, CallFacts, PendingSpool, Reception, write_whole

log = logging.getLogger(__name__)

CALL = "call.json"
PROGRESS = "progress.json"
# The post-page commands that end a document (with or without ECM's partial pages).
DOCUMENT_END = frozenset({"EOP", "PRI-EOP", "PPS-EOP", "PPS-PRI-EOP"})
CUT_BY_US = "Our fax receiver stopped during the call; the pages that had arrived are attached."


class AnsweredCall(CallFacts):
    """A call being received: a ``Reception`` but its ending."""

    answered_at: datetime


class Progress(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    remote_id: str = ""
    pages: list[PageStats] = []


class Receiving:
    """One call's entry: its pages file is ``pages``."""

    def __init__(self, entry: Path, call: AnsweredCall) -> None:
        self.entry = entry
        self.call = call
        self.pages = entry / PAGES
        self._progress = Progress()

    def page_received(self, page: PageStats, remote_id: str) -> None:
        """The line's hook, inside spandsp's callback: a small write, never raising."""
        self._progress = Progress(remote_id=remote_id, pages=[*self._progress.pages, page])
        try:
            write_whole(self.entry / PROGRESS, self._progress.model_dump_json())
        except OSError:
            log.exception("could not note the received page in %s", self.entry)

    def reception(self, duration_s: float, outcome: FaxOutcome) -> Reception:
        known = self.call.model_dump(exclude={"answered_at"})
        return Reception(**known, duration_s=duration_s, outcome=outcome)

    def close(self) -> None:
        shutil.rmtree(self.entry, ignore_errors=True)


class ReceivingSpool:
    """``<directory>/receiving``: one directory per call being received."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory / "receiving"

    def start(self, call: AnsweredCall) -> Receiving:
        entry = self.directory / call.fax_id
        entry.mkdir(parents=True, exist_ok=True)
        write_whole(entry / CALL, call.model_dump_json())
        return Receiving(entry, call)

    def recover(self, pending: PendingSpool, now: datetime) -> list[str]:
        """Move what a dead process left to ``pending``; the fax ids moved."""
        if not self.directory.is_dir():
            return []
        moved: list[str] = []
        for entry in sorted(self.directory.iterdir()):
            try:
                call = AnsweredCall.model_validate_json((entry / CALL).read_bytes())
            except FileNotFoundError:
                shutil.rmtree(entry, ignore_errors=True)  # died before the answer was noted
                continue
            except ValidationError:
                log.error("%s is not a call this version can read; left for an operator", entry)
                continue
            progress = Progress()
            with contextlib.suppress(FileNotFoundError, ValidationError):
                progress = Progress.model_validate_json((entry / PROGRESS).read_bytes())
            pages = entry / PAGES
            in_file = count_pages(pages) if pages.exists() else 0
            outcome = interrupted_outcome(progress, in_file)
            duration = max(0.0, (now - call.answered_at).total_seconds())
            receiving = Receiving(entry, call)
            pending.keep(receiving.reception(duration, outcome), pages)
            receiving.close()
            log.warning(
                "fax %s was being received when the process died: %d page(s) kept, %s",
                call.fax_id,
                outcome.pages_transferred,
                "complete" if outcome.success else "cut off",
            )
            moved.append(call.fax_id)
        return moved


def interrupted_outcome(progress: Progress, pages_in_file: int) -> FaxOutcome:
    """The outcome of a reception whose process died: complete when the last page that
    ended was the end of the document and every ended page is in the file."""
    ended = progress.pages
    arrived = min(len(ended), pages_in_file)
    complete = arrived > 0 and arrived == len(ended) and ended[-1].result in DOCUMENT_END
    code = spandsp.T30_ERR_OK if complete else T30_ERR_CALLDROPPED
    info = describe(code, receiving=True)
    last = ended[arrived - 1] if arrived else None
    return FaxOutcome(
        role="receive",
        success=complete,
        completion_code=code,
        completion_name=info.name,
        completion_text=spandsp.completion_code_to_str(code),
        failure_class=None if complete else FailureClass.LINE,
        message=info.message if complete else CUT_BY_US,
        hint=info.hint,
        pages_transferred=arrived,
        pages_in_file=pages_in_file,
        bit_rate=last.bit_rate if last else 0,
        ecm=last.ecm if last else False,
        x_resolution=last.x_resolution if last else 0,
        y_resolution=last.y_resolution if last else 0,
        remote_id=progress.remote_id,
        pages=list(ended[:arrived]),
    )
