"""The evidence of the line: pstn-sim's call log, kept across pstn-sim's restarts.

pstn-sim keeps its call log in memory, and the run restarts it mid-calls. So the log is
read every second and once more right before the SIGKILL, and merged by call id (ids
carry a per-process prefix, so a new process never reuses one). A call still open at
the kill was cut by it: what the far end holds of it is what is on its disk, the pages
in ``<data dir>/<call id>.tif`` (spandsp writes each page there at the page's end,
before it confirms the page to the sender, so a confirmed page is always there; a page
that was there but not yet confirmed can make the sender send it again).
"""

from __future__ import annotations

import io
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from faxbox.fax.tiffcheck import count_pages
from tests.e2e.stack import Stack

Page = npt.NDArray[np.uint8]


@dataclass
class LineLog:
    stack: Stack
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Calls open when their pstn-sim process was killed.
    cut_by_restart: set[str] = field(default_factory=set)

    @property
    def data_dir(self) -> Path:
        return self.stack.directory / "pstn-sim"

    def poll(self) -> bool:
        """Merge pstn-sim's log in; False while pstn-sim does not answer."""
        try:
            calls: list[dict[str, Any]] = self.stack.calls()
        except (urllib.error.URLError, OSError, TimeoutError, ValueError):
            return False
        for call in calls:
            self.records[call["id"]] = call
        return True

    def process_killed(self) -> int:
        """Mark the calls that were open as cut by the kill; how many there were."""
        open_ids = {i for i, c in self.records.items() if c.get("ended_at") is None}
        self.cut_by_restart |= open_ids
        return len(open_ids)

    def calls(self) -> list[dict[str, Any]]:
        """Every call seen, in order; a call cut by a restart carries ``cut_by_restart``
        and the pages found on disk."""
        out: list[dict[str, Any]] = []
        for call_id, record in self.records.items():
            call = dict(record)
            if call_id in self.cut_by_restart:
                call["cut_by_restart"] = True
                call["ended_at"] = call.get("ended_at") or "pstn-sim restarted"
                path = self.data_dir / f"{call_id}.tif"
                if call["direction"] == "to_sim" and path.exists():
                    call["received_tiff"] = str(path)
                    call["pages_received"] = count_pages(path)
            out.append(call)
        return out

    def open_calls(self) -> bool:
        return any(c["ended_at"] is None for c in self.calls())


def completed(call: dict[str, Any]) -> bool:
    """The far end ended the call with every page confirmed (its T.30 said so)."""
    outcome = call.get("outcome") or {}
    return bool(outcome.get("success"))


def pages_on_paper(call: dict[str, Any]) -> int:
    """Pages the far end holds from this call."""
    return int(call.get("pages_received") or 0)


def decode_pages(data: bytes | Path) -> list[Page]:
    """Every page as 0 (black) / 255 (white), whatever the photometric or fill order."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    frames: list[Page] = []
    with Image.open(source) as image:
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            frames.append(np.array(image.convert("L"), dtype=np.uint8))
    return frames


def pages_equal(received: list[Page], document: list[Page]) -> str | None:
    """None when the received pages are the document's last ``len(received)`` pages
    (a resumed call carries only the rest), pixel for pixel below the header line the
    transmitter draws above each page; else what differs."""
    if not received or len(received) > len(document):
        return f"{len(received)} page(s) received of a {len(document)}-page document"
    for offset, (got, original) in enumerate(
        zip(received, document[len(document) - len(received) :], strict=True)
    ):
        header_rows = got.shape[0] - original.shape[0]
        if header_rows < 0 or got.shape[1] != original.shape[1]:
            return f"page {offset + 1}: {got.shape} received, {original.shape} sent"
        if not np.array_equal(got[header_rows:], original):
            changed = int(np.count_nonzero(got[header_rows:] != original))
            return f"page {offset + 1}: {changed} pixels differ"
    return None


def pages_held(received: list[Page], document: list[Page]) -> set[int]:
    """Which pages of the document (0-based) one call's received pages are: a run of
    consecutive pages (a call carries a suffix of the document, and a cut call the start
    of it), found where every received page equals the document's below the header line."""
    count = len(received)
    for start in range(len(document) - count, -1, -1):
        if pages_equal(received, document[: start + count]) is None:
            return set(range(start, start + count))
    return set()
