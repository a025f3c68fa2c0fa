"""The demo's document: a small multi-page PDF made here, so the demo needs no sample files."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from PIL import Image, ImageDraw, ImageFont

# A4 at 150 dpi: plenty for a fax (204 x 196 dpi fine mode is about 1728 px wide).
_DPI = 150
_A4_PX = (1240, 1754)


def demo_pdf(pages: int = 3, title: str = "Faxbox demo") -> bytes:
    # Bilevel pages: the PDF stays small (about 7 KB a page), like a scanned letter.
    images = [_page(n, pages, title) for n in range(1, pages + 1)]
    out = io.BytesIO()
    images[0].save(out, "PDF", resolution=_DPI, save_all=True, append_images=images[1:])
    return out.getvalue()


def _page(number: int, total: int, title: str) -> Image.Image:
    width, height = _A4_PX
    page = Image.new("L", _A4_PX, 255)
    draw = ImageDraw.Draw(page)
    big = ImageFont.load_default(size=72)
    text = ImageFont.load_default(size=28)
    draw.text((100, 120), title, fill=0, font=big)
    draw.text((100, 230), f"Page {number} of {total}", fill=0, font=big)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    draw.text((100, 340), f"Sent by email at {stamp}, faxed over T.30.", fill=0, font=text)
    # Something that shows scaling or skew at a glance: a frame, a grid and a diagonal.
    draw.rectangle((80, 420, width - 80, height - 120), outline=0, width=6)
    for x in range(80, width - 80, 120):
        draw.line((x, 420, x, height - 120), fill=0, width=2)
    for y in range(420, height - 120, 120):
        draw.line((80, y, width - 80, y), fill=0, width=2)
    draw.line((80, 420, width - 80, height - 120), fill=0, width=8)
    for row in range(number):
        draw.ellipse((140 + row * 160, 480, 240 + row * 160, 580), fill=0)
    return page.convert("1", dither=Image.Dither.NONE)
