"""A document rendered in a child process bounded in time and memory.

PDFium and Pillow are C code: a hostile or damaged file can make them loop, take all
memory or crash, and none of that may take the caller with it. ``render_document`` runs
``render`` in a fresh worker per document and waits at most ``timeout_s`` for it. The
worker first limits its own address space (``RLIMIT_AS``, ``memory_limit_bytes``, 1 GiB
by default), so an image bomb makes its allocations fail (MemoryError: refused as
``too_complex``) instead of growing until the machine runs out; and it raises its own
``oom_score_adj`` to the maximum, so should the machine run out anyway, the kernel's OOM
killer takes the worker, never the service that started it (a worker killed that way is
refused as ``too_complex`` too).
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import resource
import signal
import threading
from pathlib import Path
from typing import Final

from faxbox.render.bilevel import Conversion
from faxbox.render.document import render
from faxbox.render.errors import RenderRefused, out_of_memory, rendering_timeout, unreadable
from faxbox.render.geometry import DEFAULT_MAX_LENGTH_MM
from faxbox.render.model import DEFAULT_MAX_PAGES, DocumentKind, RenderedDocument, Resolution

log = logging.getLogger("faxbox.render")

DEFAULT_TIMEOUT_S: Final = 120.0
DEFAULT_MEMORY_LIMIT_BYTES: Final = 1 << 30
_OOM_SCORE_ADJ_MAX: Final = 1000


def bound_self(memory_limit_bytes: int) -> None:
    """Limit this process's address space, and offer it first to the OOM killer."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
    try:
        Path("/proc/self/oom_score_adj").write_text(str(_OOM_SCORE_ADJ_MAX))
    except OSError:  # no procfs (not Linux): the address-space limit still holds
        log.debug("could not raise the render worker's oom_score_adj")


def _child_main(
    conn: multiprocessing.connection.Connection,
    data: bytes,
    kind: str | None,
    resolution: str,
    max_pages: int,
    conversion: str,
    max_length_mm: float,
    memory_limit_bytes: int,
) -> None:
    bound_self(memory_limit_bytes)
    try:
        document = render(data, kind, resolution, max_pages, conversion, max_length_mm)
        result: tuple[str, object] = ("ok", document)
    except RenderRefused as exc:
        result = ("refused", exc)
    except MemoryError:
        result = ("refused", out_of_memory(memory_limit_bytes))
    except Exception as exc:
        # Anything else is a damaged file that PDFium or Pillow could not cope with.
        result = ("error", f"{type(exc).__name__}: {exc}")
    conn.send(result)
    conn.close()


_context_lock = threading.Lock()
_context: multiprocessing.context.BaseContext | None = None


def _worker_context() -> multiprocessing.context.BaseContext:
    """A forkserver with this module preloaded: a new worker is a fork of a small, idle,
    thread-free process that has PDFium loaded already, so it starts in milliseconds and
    is safe to start from a process running threads (the service's event loop, its bus
    client), where a plain fork is not."""
    global _context
    with _context_lock:
        if _context is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context(
                "forkserver" if "forkserver" in methods else "spawn"
            )
            if isinstance(context, multiprocessing.context.ForkServerContext):
                context.set_forkserver_preload([__name__])
            _context = context
        return _context


def render_document(
    data: bytes,
    kind: DocumentKind | str | None = None,
    resolution: Resolution | str = Resolution.FINE,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_pages: int = DEFAULT_MAX_PAGES,
    conversion: Conversion | str = Conversion.AUTO,
    max_length_mm: float = DEFAULT_MAX_LENGTH_MM,
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
) -> RenderedDocument:
    """Render in a child process, killed after ``timeout_s``, its address space at most
    ``memory_limit_bytes``; raises ``RenderRefused``.

    Blocking: from asyncio, call it through ``asyncio.to_thread``.
    """
    context = _worker_context()
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(  # type: ignore[attr-defined]
        target=_child_main,
        args=(
            sender,
            data,
            None if kind is None else DocumentKind(kind).value,
            Resolution(resolution).value,
            max_pages,
            Conversion(conversion).value,
            max_length_mm,
            memory_limit_bytes,
        ),
        name="fax-render",
        daemon=True,
    )
    try:
        process.start()
        sender.close()
        try:
            ready = receiver.poll(timeout_s)
            message = receiver.recv() if ready else None
        except (EOFError, OSError):
            process.join(1.0)
            log.warning("the rendering worker died (exit code %s)", process.exitcode)
            if process.exitcode == -signal.SIGKILL:
                # Nobody here killed it: the kernel's OOM killer took it, as it should.
                raise out_of_memory(memory_limit_bytes) from None
            # Without a word: PDFium or Pillow crashed on the file.
            raise unreadable() from None
        if message is None:
            raise rendering_timeout(timeout_s)
    finally:
        if process.is_alive():
            process.kill()
        process.join()
        process.close()
        receiver.close()
    status, payload = message
    if status == "ok" and isinstance(payload, RenderedDocument):
        return payload
    if status == "refused" and isinstance(payload, RenderRefused):
        raise payload
    log.warning("rendering failed in the worker: %s", payload)
    raise unreadable()
