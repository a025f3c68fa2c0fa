"""Helpers for the renderer's tests: PDFs made by Ghostscript, pages decoded by Pillow.

Test PDFs are made here: vector pages by Ghostscript from a few lines of PostScript
(``gs`` comes from deploy/local/apt.sh; without it these tests fail, not skip).
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from faxbox.fax.tiffcheck import check_tiff
from faxbox.render import RenderedDocument, Resolution

A4 = (595, 842)
FAX_WIDTH = 1728

Pixels = npt.NDArray[np.uint8]


def gs_pdf(pages: list[str], size: tuple[int, int] = A4) -> bytes:
    """One PostScript snippet per page, on pages of ``size`` points."""
    width, height = size
    program = "\n".join(f"{page}\nshowpage" for page in pages)
    return subprocess.run(
        [
            "gs",
            "-q",
            "-dNOPAUSE",
            "-dBATCH",
            "-dSAFER",
            "-sDEVICE=pdfwrite",
            f"-dDEVICEWIDTHPOINTS={width}",
            f"-dDEVICEHEIGHTPOINTS={height}",
            "-dFIXEDMEDIA",
            "-sOutputFile=-",
            "-",
        ],
        input=program.encode(),
        capture_output=True,
        check=True,
    ).stdout


def text_ps(lines: int = 40) -> str:
    body = [
        f"60 {780 - 18 * i} moveto (Line {i}: the quick brown fox jumps) show" for i in range(lines)
    ]
    return "/Helvetica findfont 11 scalefont setfont\n" + "\n".join(body)


def pages_of(document: RenderedDocument) -> list[Pixels]:
    """Every page as 0 (black) / 255 (white), decoded by Pillow, not by our writer."""
    frames: list[Pixels] = []
    with Image.open(io.BytesIO(document.tiff)) as image:
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            assert image.mode == "1"
            assert image.info.get("compression") == "group4"
            frames.append(np.asarray(image.convert("L")))
    return frames


def checked(document: RenderedDocument, tmp_path: Path, name: str = "out.tif") -> list[Pixels]:
    """The pre-flight check the fax sender runs must accept every page as it is."""
    path = tmp_path / name
    path.write_bytes(document.tiff)
    fax = check_tiff(path)
    assert fax.page_count == document.page_count
    wanted = "fine" if document.resolution is Resolution.FINE else "standard"
    for page, rendered in zip(fax.pages, document.pages, strict=True):
        assert page.width == FAX_WIDTH
        assert page.length == rendered.rows
        assert page.resolution == wanted
        assert page.compression == 4
    return pages_of(document)


def black_box(page: Pixels) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(page == 0)
    return int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
