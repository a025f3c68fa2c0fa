"""Real-world documents nobody here wrote, each faxed or refused for the true reason.

The files are the test corpora that PDF and imaging libraries ship in their source
distributions on PyPI (Pillow, pikepdf, pypdf) and PDF manuals from Debian's -doc
packages, fetched and cached outside the repository by ``deploy/local/corpus.sh``.

What each file should come to is decided by two independent readers, never by our own
output: PDFium and pypdf for a PDF (page counts; whether a password is needed), Pillow
and libtiff (``tiffinfo`` for the directories, ``tiffcp`` decoding every one) for a
TIFF. Where both read the same number of pages the file must be faxed with that many
pages, or refused only for a limit the readers' own figures break (too many pages, a
page too long to print); where both fail it must be refused as unreadable; where they
disagree it may go either way, but never with a reason that is not about the file
being unreadable (or needing a password, when one reader says so). Every file goes
through ``render_document``, the child process the validator uses, and must finish
within its time limit.
"""

from __future__ import annotations

import io
import logging
import re
import subprocess
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from PIL import Image
from pypdf import PasswordType, PdfReader

from faxbox.render import (
    DEFAULT_MAX_LENGTH_MM,
    DEFAULT_MAX_PAGES,
    DEFAULT_TIMEOUT_S,
    RefusalCode,
    RenderRefused,
    render_document,
    sniff_kind,
)

pytestmark = pytest.mark.integration

REPO: Final = Path(__file__).resolve().parents[3]
# The fax line is 1728 pixels at 204 dpi; a page narrower than it keeps its true size.
LINE_INCHES: Final = 1728 / 204
UNREADABLE: Final = frozenset(
    {
        RefusalCode.UNREADABLE_DOCUMENT,
        RefusalCode.UNSUPPORTED_TIFF,
        RefusalCode.UNSUPPORTED_DOCUMENT,
    }
)


@pytest.fixture(scope="module")
def corpus() -> list[Path]:
    fetched = subprocess.run(
        ["bash", str(REPO / "deploy/local/corpus.sh")], capture_output=True, text=True
    )
    assert fetched.returncode == 0, f"corpus.sh failed:\n{fetched.stdout}\n{fetched.stderr}"
    root = Path(fetched.stdout.strip().splitlines()[-1])
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".pdf", ".tif", ".tiff")
    )
    return [p for p in files if sniff_kind(p.read_bytes()[:1024]) is not None]


# --- the readers' verdicts --------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """One reader's view: pages it counts, or that it needs a password, or neither."""

    pages: int | None = None
    encrypted: bool = False
    too_long: frozenset[int] = frozenset()  # page numbers longer than the limit


def _longer_than_the_limit(width_in: float, height_in: float) -> bool:
    # The documented rule (faxbox.render.geometry): a landscape page up to 2:1 is turned,
    # a page wider than the line is scaled down to it, and none is enlarged.
    if height_in < width_in <= 2 * height_in:
        width_in, height_in = height_in, width_in
    length_in = height_in * min(1.0, LINE_INCHES / width_in)
    return length_in * 25.4 > DEFAULT_MAX_LENGTH_MM


def read_with_pypdf(data: bytes) -> Reading:
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            return Reading(encrypted=True)
        too_long: set[int] = set()
        for number, page in enumerate(reader.pages, start=1):
            box = page.cropbox
            width, height = float(box.width) / 72, float(box.height) / 72
            if page.rotation % 180:
                width, height = height, width
            if _longer_than_the_limit(abs(width), abs(height)):
                too_long.add(number)
        return Reading(pages=len(reader.pages), too_long=frozenset(too_long))
    except Exception:
        return Reading()


def read_with_pdfium(data: bytes) -> Reading:
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        needs_password = exc.err_code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY)
        return Reading(encrypted=needs_password)
    try:
        return Reading(pages=len(pdf))
    finally:
        pdf.close()


def _reduced(subfile_type: int) -> bool:
    return bool(subfile_type & 1)


def read_with_pillow(path: Path) -> Reading:
    try:
        with Image.open(path) as image:
            pages = 0
            for index in range(getattr(image, "n_frames", 1)):
                image.seek(index)
                image.load()
                if not _reduced(int(getattr(image, "tag_v2", {}).get(254, 0))):
                    pages += 1
            return Reading(pages=pages or getattr(image, "n_frames", 1))
    except Exception:
        return Reading()


_DIRECTORY: Final = re.compile(r"^=== TIFF directory \d+ ===$", re.M)
_SUBFILE: Final = re.compile(r"Subfile Type: .*\((\d+) = ")


def read_with_libtiff(path: Path, scratch: Path) -> Reading:
    info = subprocess.run(
        ["tiffinfo", str(path)], capture_output=True, text=True, errors="replace", timeout=60
    )
    # The main chain only: EXIF and SubIFD directories are printed inside their parent.
    directories = [d.split("\n--- ")[0] for d in _DIRECTORY.split(info.stdout)[1:]]
    if info.returncode != 0 or not directories:
        return Reading()
    # tiffcp decodes every directory's image data: it fails where libtiff cannot.
    decoded = subprocess.run(
        ["tiffcp", "-c", "none", str(path), str(scratch)], capture_output=True, timeout=60
    )
    if decoded.returncode != 0:
        return Reading()
    pages = 0
    for directory in directories:
        subfile = _SUBFILE.search(directory)
        if subfile is None or not _reduced(int(subfile.group(1))):
            pages += 1
    return Reading(pages=pages or len(directories))


# --- what should happen -----------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    verdict: str  # "pages", "encrypted", "unreadable" or "disputed"
    readings: tuple[Reading, Reading]

    @property
    def pages(self) -> int | None:
        return self.readings[0].pages if self.verdict == "pages" else None


def expect(path: Path, scratch: Path) -> Expected:
    data = path.read_bytes()
    if path.suffix.lower() == ".pdf":
        readings = (read_with_pdfium(data), read_with_pypdf(data))
    else:
        readings = (read_with_pillow(path), read_with_libtiff(path, scratch))
    first, second = readings
    if first.encrypted and second.encrypted:
        return Expected("encrypted", readings)
    if first.pages is not None and first.pages == second.pages:
        return Expected("pages", readings)
    if first.pages is None and second.pages is None and not (first.encrypted or second.encrypted):
        return Expected("unreadable", readings)
    return Expected("disputed", readings)


def judge(expected: Expected, outcome: int | RenderRefused) -> str | None:
    """Why ``outcome`` (pages faxed, or the refusal) is wrong, or None."""
    pages = expected.pages
    if expected.verdict == "pages" and pages is not None:
        too_long = expected.readings[1].too_long
        if pages == 0:
            wanted: object = RefusalCode.EMPTY_DOCUMENT
        elif pages > DEFAULT_MAX_PAGES:
            wanted = RefusalCode.TOO_MANY_PAGES
        elif too_long:
            wanted = RefusalCode.PAGE_TOO_LARGE
        else:
            wanted = pages
    elif expected.verdict == "encrypted":
        wanted = RefusalCode.ENCRYPTED_PDF
    elif expected.verdict == "unreadable":
        if isinstance(outcome, RenderRefused) and outcome.code in UNREADABLE:
            return None
        return f"both readers fail, so it must be refused as unreadable, got {outcome!r}"
    else:
        counts = {r.pages for r in expected.readings} - {None}
        if isinstance(outcome, int) and outcome in counts:
            return None
        if isinstance(outcome, RenderRefused) and outcome.code in UNREADABLE:
            return None
        # A PDF with a user password and an empty owner password: pypdf opens it as its
        # owner, PDFium asks for the password; "it is protected" is true either way.
        needs_password = any(r.encrypted for r in expected.readings)
        if isinstance(outcome, RenderRefused) and outcome.code is RefusalCode.ENCRYPTED_PDF:
            return None if needs_password else f"no reader asks for a password, got {outcome!r}"
        return f"the readers disagree {expected.readings}, got {outcome!r}"
    got = outcome.code if isinstance(outcome, RenderRefused) else outcome
    return None if got == wanted else f"expected {wanted!r}, got {outcome!r}"


def _fax(path: Path) -> tuple[int | RenderRefused, float]:
    """The file through the validator's renderer: (pages faxed or the refusal, seconds)."""
    started = time.monotonic()
    try:
        outcome: int | RenderRefused = render_document(path.read_bytes()).page_count
    except RenderRefused as refused:
        outcome = refused
    return outcome, time.monotonic() - started


def test_every_real_world_document_ends_in_the_decision_its_readers_imply(
    corpus: list[Path], tmp_path: Path
) -> None:
    assert len(corpus) >= 200, f"the corpus has only {len(corpus)} files"
    logging.disable(logging.WARNING)  # pypdf and PDFium complain about every odd file
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = [expect(path, tmp_path / "decoded.tif") for path in corpus]
            # Two documents at a time, each in its own worker as in the validator: a
            # worker's start costs ~0.25 s here, where it imports pytest again.
            with ThreadPoolExecutor(2) as pool:
                outcomes = list(pool.map(_fax, corpus))
    finally:
        logging.disable(logging.NOTSET)
    wrong: list[str] = []
    for path, wanted, (outcome, elapsed) in zip(corpus, expected, outcomes, strict=True):
        problem = judge(wanted, outcome)
        if problem is None and elapsed >= DEFAULT_TIMEOUT_S:
            problem = f"took {elapsed:.0f} s, over the {DEFAULT_TIMEOUT_S:g} s limit"
        if problem is not None:
            wrong.append(f"{path}: {problem}")
    verdicts = Counter(e.verdict for e in expected)
    slowest = max((elapsed, path.name) for path, (_, elapsed) in zip(corpus, outcomes, strict=True))
    print(f"{len(corpus)} files: {dict(verdicts)}; slowest {slowest[0]:.2f} s ({slowest[1]})")
    assert not wrong, "\n".join(wrong)
    # Most of the corpus is readable by both readers, and so faxed: the test means something.
    assert verdicts["pages"] >= 0.8 * len(corpus)
    assert verdicts["encrypted"] >= 5
