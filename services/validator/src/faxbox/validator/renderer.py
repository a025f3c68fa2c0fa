"""Renderer ports over ``faxbox.render``."""

from __future__ import annotations

import asyncio

from faxbox.render import (
    DEFAULT_MAX_LENGTH_MM,
    DEFAULT_MEMORY_LIMIT_BYTES,
    RenderedDocument,
    render,
    render_document,
)


class ProcessRenderer:
    """Each document in a child process killed after ``timeout_s`` and held to
    ``memory_limit_bytes`` of address space; ``concurrency`` at once.

    The children do the CPU work, so the event loop only waits in a thread; the
    semaphore bounds how many cores (and how much memory) rendering takes.
    """

    def __init__(
        self,
        timeout_s: float,
        concurrency: int,
        max_length_mm: float = DEFAULT_MAX_LENGTH_MM,
        memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
    ) -> None:
        self._timeout_s = timeout_s
        self._slots = asyncio.Semaphore(concurrency)
        self._max_length_mm = max_length_mm
        self._memory_limit_bytes = memory_limit_bytes

    async def render(
        self, data: bytes, kind: str, resolution: str, max_pages: int
    ) -> RenderedDocument:
        async with self._slots:
            return await asyncio.to_thread(
                render_document,
                data,
                kind=kind,
                resolution=resolution,
                timeout_s=self._timeout_s,
                max_pages=max_pages,
                max_length_mm=self._max_length_mm,
                memory_limit_bytes=self._memory_limit_bytes,
            )


class InlineRenderer:
    """Renders in this process (no time limit): for tests and tools that isolate themselves."""

    async def render(
        self, data: bytes, kind: str, resolution: str, max_pages: int
    ) -> RenderedDocument:
        return await asyncio.to_thread(
            render, data, kind=kind, resolution=resolution, max_pages=max_pages
        )
