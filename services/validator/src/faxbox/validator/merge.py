"""Several rendered fax TIFFs as one, pages in order (faxboxes with ``merge_attachments``).

Each attachment is rendered on its own (so each gets the renderer's checks and its own
tone choice per page); the pages are then decoded and written again through the same
Group 4 writer, which keeps every tag the transmitter's check expects. Decoding a G4
page costs a few milliseconds, far less than rendering it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from faxbox.render import X_DPI, G4TiffWriter


def _frames(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as image:
        return int(getattr(image, "n_frames", 1))


def concatenate(tiffs: Sequence[bytes], y_dpi: int) -> bytes:
    """One multi-page fax TIFF with every page of ``tiffs``, in order."""
    total = sum(_frames(t) for t in tiffs)
    with G4TiffWriter(total) as writer:
        for data in tiffs:
            with Image.open(io.BytesIO(data)) as image:
                for index in range(int(getattr(image, "n_frames", 1))):
                    image.seek(index)
                    # Pillow reads min-is-white as white = True, whatever the file says.
                    white = np.asarray(image.convert("1"), dtype=np.bool_)
                    writer.add_page(np.packbits(~white, axis=1), X_DPI, y_dpi)
    return writer.getvalue()
