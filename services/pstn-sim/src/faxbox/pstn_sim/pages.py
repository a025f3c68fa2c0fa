"""Which pages of a document a call carried: a digest of each page's image.

A Faxbox transmitter draws its header line above every page it sends (the time, and
``page x/y``), so the same document page differs from call to call only in that strip.
``page_digests`` hashes each page's pixels below it (``faxbox.render.strip_rows`` at the
page's vertical resolution): the digest of a received page equals that of the
document's page it came from, which is how a test tells a resumed call (pages 3-5 only)
from one that sent a page again. Pixel-equal arrival needs ECM (or a clean line).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from faxbox.render import strip_rows

_CM_PER_INCH = 2.54
_RESOLUTION_UNIT_CM = 3


def _y_dpi(image: Image.Image) -> float:
    dpi = image.info.get("dpi")
    if dpi:
        return float(dpi[1])
    tags = getattr(image, "tag_v2", {})
    y = float(tags.get(283, 196))
    return y * _CM_PER_INCH if tags.get(296) == _RESOLUTION_UNIT_CM else y


def page_digests(path: Path, *, below_header: bool) -> list[str]:
    """SHA-256 of each page's black and white pixels, below our header line when
    ``below_header`` (a received page), else the whole page (the document's own)."""
    digests: list[str] = []
    with Image.open(path) as image:
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            black = np.asarray(image.convert("L")) < 128
            if below_header:
                black = black[strip_rows(_y_dpi(image)) :]
            digests.append(hashlib.sha256(np.packbits(black, axis=1).tobytes()).hexdigest())
    return digests
