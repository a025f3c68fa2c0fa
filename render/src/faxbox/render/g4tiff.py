"""Multi-page Group 4 fax TIFF writer on libtiff through ctypes.

Pillow's writer is too slow for the renderer's budget (it re-packs bits and spends
~10 ms a page) and writes min-is-black, eight strips per page; libtiff's own G4 encoder
takes ~4 ms a page and lets every tag be set exactly as spandsp and fax machines want.

``TIFFSetField`` is variadic: ctypes cannot describe that in one prototype, so each
argument shape (one int, two ints, one double) gets its own function pointer to the
same symbol. On x86-64 and AArch64 Linux, a variadic callee reads promoted ints and
doubles where a fixed-argument call puts them, which is what makes this safe.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import tempfile
import threading
from types import TracebackType
from typing import Final

import numpy as np
import numpy.typing as npt

FAX_WIDTH: Final = 1728
ROW_BYTES: Final = FAX_WIDTH // 8

# TIFF 6.0 tags and values.
_NEW_SUBFILE_TYPE: Final = 254
_FILETYPE_PAGE: Final = 2
_IMAGE_WIDTH: Final = 256
_IMAGE_LENGTH: Final = 257
_BITS_PER_SAMPLE: Final = 258
_COMPRESSION: Final = 259
_COMPRESSION_CCITT_T6: Final = 4
_PHOTOMETRIC: Final = 262
_PHOTOMETRIC_MINISWHITE: Final = 0
_FILL_ORDER: Final = 266
_FILLORDER_MSB2LSB: Final = 1
_ORIENTATION: Final = 274
_ORIENTATION_TOPLEFT: Final = 1
_SAMPLES_PER_PIXEL: Final = 277
_ROWS_PER_STRIP: Final = 278
_X_RESOLUTION: Final = 282
_Y_RESOLUTION: Final = 283
_PLANAR_CONFIG: Final = 284
_PLANARCONFIG_CONTIG: Final = 1
_T6_OPTIONS: Final = 293
_RESOLUTION_UNIT: Final = 296
_RESUNIT_INCH: Final = 2
_PAGE_NUMBER: Final = 297

_LIBRARY_NAMES: Final = ("libtiff.so.6", "libtiff.so.5", "libtiff.so")

PackedPage = npt.NDArray[np.uint8]


class TiffWriteError(RuntimeError):
    """libtiff refused to open or write the output; a bug or a full disk, never the input."""


class _LibTiff:
    def __init__(self) -> None:
        lib = self._load()
        self.fd_open = ctypes.CFUNCTYPE(
            ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p
        )(("TIFFFdOpen", lib))
        self.set_int = ctypes.CFUNCTYPE(
            ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int
        )(("TIFFSetField", lib))
        self.set_int_pair = ctypes.CFUNCTYPE(
            ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_int
        )(("TIFFSetField", lib))
        self.set_double = ctypes.CFUNCTYPE(
            ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_double
        )(("TIFFSetField", lib))
        self.write_encoded_strip = ctypes.CFUNCTYPE(
            ctypes.c_int64, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_int64
        )(("TIFFWriteEncodedStrip", lib))
        self.write_raw_strip = ctypes.CFUNCTYPE(
            ctypes.c_int64, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_int64
        )(("TIFFWriteRawStrip", lib))
        self.write_directory = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(
            ("TIFFWriteDirectory", lib)
        )
        self.close = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(("TIFFClose", lib))

    @staticmethod
    def _load() -> ctypes.CDLL:
        errors: list[str] = []
        found = ctypes.util.find_library("tiff")
        for name in (*_LIBRARY_NAMES, *([found] if found else [])):
            try:
                return ctypes.CDLL(name)
            except OSError as exc:
                errors.append(str(exc))
        raise TiffWriteError(
            "libtiff is not installed (Debian package libtiff6): " + "; ".join(errors)
        )


_lib: _LibTiff | None = None
_lib_lock = threading.Lock()


def libtiff() -> _LibTiff:
    global _lib
    with _lib_lock:
        if _lib is None:
            _lib = _LibTiff()
        return _lib


def _anonymous_file() -> int:
    """A file descriptor for an unnamed file, in memory where the system allows it."""
    if hasattr(os, "memfd_create"):
        try:
            return os.memfd_create("faxbox-render", os.MFD_CLOEXEC)
        except OSError:
            pass
    fd, name = tempfile.mkstemp(prefix="faxbox-render-", suffix=".tif")
    os.unlink(name)
    return fd


class G4TiffWriter:
    """Writes 1-bit pages (``numpy.packbits`` rows, 1 = black) as a Class F style TIFF.

    Pages are written in the order given; ``page_count`` is needed up front for the
    PageNumber tag. ``getvalue()`` after ``close()`` returns the file's bytes.
    """

    def __init__(self, page_count: int) -> None:
        self._lib = libtiff()
        self._page_count = page_count
        self._written = 0
        self._fd = _anonymous_file()
        # libtiff closes the descriptor it is given; keep ours for reading back.
        handle = self._lib.fd_open(os.dup(self._fd), b"fax.tif", b"w")
        if not handle:
            os.close(self._fd)
            raise TiffWriteError("libtiff could not open the output")
        self._tif: int | None = handle
        self._data: bytes | None = None

    @property
    def pages_written(self) -> int:
        return self._written

    def add_page(self, bits: PackedPage, x_dpi: float, y_dpi: float) -> None:
        rows, row_bytes = bits.shape
        if row_bytes != ROW_BYTES or rows < 1:
            raise ValueError(f"a fax page is {ROW_BYTES} bytes a row, got {bits.shape}")
        page = np.ascontiguousarray(bits, dtype=np.uint8)
        tif = self._tags(rows, x_dpi, y_dpi)
        size = page.nbytes
        if self._lib.write_encoded_strip(tif, 0, page.ctypes.data, size) != size:
            raise TiffWriteError(f"libtiff could not encode page {self._written + 1}")
        self._end_page(tif)

    def add_encoded_page(self, g4: bytes, rows: int, x_dpi: float, y_dpi: float) -> None:
        """A page already coded in Group 4 (MSB first), stored as it is."""
        if rows < 1 or not g4:
            raise ValueError("an encoded page needs rows and data")
        tif = self._tags(rows, x_dpi, y_dpi)
        buffer = ctypes.create_string_buffer(g4, len(g4))
        if self._lib.write_raw_strip(tif, 0, ctypes.addressof(buffer), len(g4)) != len(g4):
            raise TiffWriteError(f"libtiff could not store page {self._written + 1}")
        self._end_page(tif)

    def _tags(self, rows: int, x_dpi: float, y_dpi: float) -> int:
        tif = self._tif
        if tif is None:
            raise TiffWriteError("the TIFF is already closed")
        lib = self._lib
        ok = all(
            (
                lib.set_int(tif, _NEW_SUBFILE_TYPE, _FILETYPE_PAGE),
                lib.set_int(tif, _IMAGE_WIDTH, FAX_WIDTH),
                lib.set_int(tif, _IMAGE_LENGTH, rows),
                lib.set_int(tif, _BITS_PER_SAMPLE, 1),
                lib.set_int(tif, _SAMPLES_PER_PIXEL, 1),
                lib.set_int(tif, _COMPRESSION, _COMPRESSION_CCITT_T6),
                lib.set_int(tif, _T6_OPTIONS, 0),
                lib.set_int(tif, _PHOTOMETRIC, _PHOTOMETRIC_MINISWHITE),
                lib.set_int(tif, _FILL_ORDER, _FILLORDER_MSB2LSB),
                lib.set_int(tif, _ORIENTATION, _ORIENTATION_TOPLEFT),
                lib.set_int(tif, _PLANAR_CONFIG, _PLANARCONFIG_CONTIG),
                lib.set_int(tif, _ROWS_PER_STRIP, rows),
                lib.set_double(tif, _X_RESOLUTION, float(x_dpi)),
                lib.set_double(tif, _Y_RESOLUTION, float(y_dpi)),
                lib.set_int(tif, _RESOLUTION_UNIT, _RESUNIT_INCH),
                lib.set_int_pair(tif, _PAGE_NUMBER, self._written, self._page_count),
            )
        )
        if not ok:
            raise TiffWriteError(f"libtiff refused a tag of page {self._written + 1}")
        return tif

    def _end_page(self, tif: int) -> None:
        if not self._lib.write_directory(tif):
            raise TiffWriteError(f"libtiff could not write page {self._written + 1}")
        self._written += 1

    def close(self) -> bytes:
        if self._data is not None:
            return self._data
        tif, self._tif = self._tif, None
        try:
            if tif is not None:
                self._lib.close(tif)
            size = os.fstat(self._fd).st_size
            chunks: list[bytes] = []
            offset = 0
            while offset < size:
                chunk = os.pread(self._fd, size - offset, offset)
                if not chunk:
                    break
                chunks.append(chunk)
                offset += len(chunk)
            self._data = b"".join(chunks)
        finally:
            os.close(self._fd)
        return self._data

    def getvalue(self) -> bytes:
        if self._data is None:
            raise TiffWriteError("close() the writer first")
        return self._data

    def __enter__(self) -> G4TiffWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def write_fax_tiff(pages: list[tuple[PackedPage, float, float]]) -> bytes:
    """Convenience for tests and small jobs: ``[(bits, x_dpi, y_dpi), ...]`` to TIFF bytes."""
    with G4TiffWriter(len(pages)) as writer:
        for bits, x_dpi, y_dpi in pages:
            writer.add_page(bits, x_dpi, y_dpi)
    return writer.getvalue()


__all__: list[str] = [
    "FAX_WIDTH",
    "ROW_BYTES",
    "G4TiffWriter",
    "PackedPage",
    "TiffWriteError",
    "write_fax_tiff",
]
