"""Received faxes the database could not take yet: kept on disk until it can.

A call cannot be asked again once it is answered: the pages exist only in the file the
line wrote. When storing them or recording the announcement fails (the database is
down, for seconds or for an hour), the file and what is known about the call (a
:class:`Reception`) are moved to ``<spool>/pending/<fax id>/`` at once, which frees the
line, and :func:`store_pending` stores and announces each one as soon as the database
answers again, also after a restart of the process (the spool is the only state). Each
entry's ``reception.json`` is written last, with a rename: a directory without it is a
move the process did not finish, and its file is still where the call left it.

Storing is idempotent by the fax id: the announcement is the outbox's decision under
it, so a fax stored twice (a crash between recording and removing the entry, or two
replicas given one spool) is announced once.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from faxbox.fax.outcome import FaxOutcome

log = logging.getLogger(__name__)

RECEPTION = "reception.json"
PAGES = "received.tif"


class CallFacts(BaseModel):
    """What is known of an answered call from its answer on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fax_id: str
    account_id: str
    faxbox_id: str
    owner_user_id: str
    month: str
    caller: str
    called: str


class Reception(CallFacts):
    """One answered call, as the announcement needs it (besides its pages)."""

    duration_s: float
    outcome: FaxOutcome


def write_whole(path: Path, content: str) -> None:
    """``content`` in ``path`` through a rename: a reader finds it whole or not at all."""
    partial = path.with_name(f"{path.name}.part")
    partial.write_text(content)
    partial.replace(path)


@dataclass(frozen=True, slots=True)
class Pending:
    reception: Reception
    pages: Path  # may not exist: the call ended without a page file


class PendingSpool:
    """``<directory>/pending``: one directory per fax not stored yet."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory / "pending"

    def keep(self, reception: Reception, pages: Path) -> Pending:
        """Move ``pages`` (if the call wrote any) and ``reception`` into the spool."""
        entry = self.directory / reception.fax_id
        entry.mkdir(parents=True, exist_ok=True)
        kept = entry / PAGES
        if pages.exists():
            shutil.move(pages, kept)
        write_whole(entry / RECEPTION, reception.model_dump_json())
        log.warning("fax %s kept in %s until the database takes it", reception.fax_id, entry)
        return Pending(reception, kept)

    def all(self) -> list[Pending]:
        """What is waiting, oldest first."""
        if not self.directory.is_dir():
            return []
        found: list[tuple[float, Pending]] = []
        for entry in self.directory.iterdir():
            path = entry / RECEPTION
            try:
                reception = Reception.model_validate_json(path.read_bytes())
                found.append((path.stat().st_mtime, Pending(reception, entry / PAGES)))
            except FileNotFoundError:
                continue  # being written, or not a fax of ours
            except ValidationError:
                log.error("%s is not a reception this version can read; left for an operator", path)
        return [pending for _, pending in sorted(found, key=lambda each: each[0])]

    def count(self) -> int:
        return len(self.all())

    def done(self, fax_id: str) -> None:
        shutil.rmtree(self.directory / fax_id, ignore_errors=True)
