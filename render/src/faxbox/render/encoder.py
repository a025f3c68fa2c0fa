"""The back half of rendering, shared by PDF and TIFF: grey pages to bits to Group 4.

Encoding runs on a second thread while the next page is drawn: PDFium, Pillow, numpy
and libtiff all release the GIL, so a document uses two cores within one process.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Final

import numpy as np
import numpy.typing as npt

from faxbox.render.bilevel import Conversion, GreyPage, choose, to_bits
from faxbox.render.g4tiff import FAX_WIDTH, G4TiffWriter
from faxbox.render.geometry import X_DPI, Geometry
from faxbox.render.model import RenderedPage, Resolution

# Pages handed to the encoder thread and not yet written: bounds memory to a few pages.
_ENCODE_QUEUE: Final = 2


class Encoder:
    """Turns grey pages into bits and G4 on one background thread, in order."""

    def __init__(self, page_count: int, resolution: Resolution, conversion: Conversion) -> None:
        self._writer = G4TiffWriter(page_count)
        self._resolution = resolution
        self._conversion = conversion
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="fax-encode")
        self._pending: list[Future[RenderedPage]] = []
        self.pages: list[RenderedPage] = []
        self._scratch: npt.NDArray[np.bool_] | None = None

    def _encode(
        self, grey: GreyPage, number: int, geometry: Geometry, conversion: Conversion
    ) -> RenderedPage:
        if self._scratch is None or self._scratch.size < grey.size:
            self._scratch = np.empty(grey.size, dtype=np.bool_)
        # Photo or text is judged on the page itself, not on the white margins a page
        # narrower than the line is centred between (a view: nothing is copied).
        conversion = choose(grey[:, geometry.left : geometry.left + geometry.columns], conversion)
        bits, used = to_bits(grey, conversion, X_DPI, self._resolution.y_dpi, self._scratch)
        self._writer.add_page(bits, X_DPI, self._resolution.y_dpi)
        return RenderedPage(number, grey.shape[0], used, geometry.rotated)

    def submit(
        self,
        grey: GreyPage,
        number: int,
        geometry: Geometry,
        conversion: Conversion | None = None,
    ) -> None:
        while len(self._pending) >= _ENCODE_QUEUE:
            self.pages.append(self._pending.pop(0).result())
        self._pending.append(
            self._pool.submit(self._encode, grey, number, geometry, conversion or self._conversion)
        )

    def finish(self) -> list[RenderedPage]:
        try:
            for future in self._pending:
                self.pages.append(future.result())
            self._pending.clear()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._writer.close()
        return self.pages

    @property
    def tiff(self) -> bytes:
        return self._writer.getvalue()

    def abandon(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._writer.close()


class PageBuffers:
    """Grey page buffers reused round-robin: a fresh 4 MB array per page costs more in
    page faults than filling a warm one. One more than the encoder can hold, plus the
    page being rendered, so a buffer is never overwritten while still being encoded."""

    def __init__(self, rows: int) -> None:
        self._buffers = [
            np.empty(rows * FAX_WIDTH, dtype=np.uint8) for _ in range(_ENCODE_QUEUE + 2)
        ]
        self._next = 0

    def take(self, rows: int) -> GreyPage:
        buffer = self._buffers[self._next]
        self._next = (self._next + 1) % len(self._buffers)
        if buffer.size < rows * FAX_WIDTH:
            buffer = np.empty(rows * FAX_WIDTH, dtype=np.uint8)
            self._buffers[self._next - 1] = buffer
        grey = buffer[: rows * FAX_WIDTH].reshape(rows, FAX_WIDTH)
        grey.fill(255)
        return grey
