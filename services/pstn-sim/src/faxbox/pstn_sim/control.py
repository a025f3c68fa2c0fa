"""The control API (JSON over HTTP/1.1 on 127.0.0.1): the call log, originate, reset.

- ``GET /healthz``
- ``GET /calls`` → list of call records (filters: ``?to=&from=&direction=&behaviour=&media=``)
- ``GET /calls/{id}``; ``GET /calls/{id}/tiff`` (the pages received)
- ``POST /originate`` ``{"from", "to", "document", "media": "g711"|"t38", "uri"?,
  "drop_on_page"?, "tries"?, "window_s"?}`` → ``{"id"}``: the call is tried again
  while it fails before any page (``redial``; ``tries``/``window_s`` bound it), and its
  record (``tries``: each try) ends with the last try
- ``GET /counts`` → ``{number: calls}``: calls to the simulator per dialled number
  (what ``busy_first`` counts)
- ``POST /reset`` clears the log and the counts
- ``GET /scenarios`` → the scenario table in use

One request per connection; small bodies only. No authentication: bind it to loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import urllib.parse
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from faxbox.pstn_sim.redial import RedialPolicy
from faxbox.pstn_sim.scenarios import table_json
from faxbox.pstn_sim.sim import Simulator

log = logging.getLogger("faxbox.pstn_sim.control")

MAX_BODY = 64 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


class OriginateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str = Field(alias="from", min_length=1)
    to: str = Field(min_length=1)
    document: Path
    media: Literal["g711", "t38"] = "g711"
    uri: str | None = None
    drop_on_page: int | None = Field(default=None, ge=1)
    # The redial policy's bounds for this call (``redial``); the settings' when absent.
    tries: int | None = Field(default=None, ge=1)
    window_s: float | None = Field(default=None, ge=0)


Response = tuple[int, str, bytes]
# GET /calls?to=+16465550123&direction=from_sim ...
FILTERS = frozenset({"to", "from", "direction", "behaviour", "media"})


def _redial(default: RedialPolicy, request: OriginateRequest) -> RedialPolicy:
    return dataclasses.replace(
        default,
        tries=request.tries or default.tries,
        window_s=default.window_s if request.window_s is None else request.window_s,
    )


def _json(status: int, data: object) -> Response:
    return status, "application/json", json.dumps(data).encode()


class ControlServer:
    def __init__(self, sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = sim
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, content_type, body = await asyncio.wait_for(self._read_and_route(reader), 10)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            writer.close()
            return
        except Exception as exc:
            log.exception("control request failed")
            status, content_type, body = _json(500, {"error": str(exc)})
        try:
            reason = _REASONS.get(status, "Error")
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_and_route(self, reader: asyncio.StreamReader) -> Response:
        request_line = (await reader.readline()).decode("latin-1").split()
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip() or 0)
        if len(request_line) < 2:
            return _json(400, {"error": "bad request line"})
        if length > MAX_BODY:
            return _json(400, {"error": "body too large"})
        body = await reader.readexactly(length) if length else b""
        method, target = request_line[0].upper(), request_line[1]
        return await self.route(method, target, body)

    async def route(self, method: str, target: str, body: bytes) -> Response:
        path, _, query_text = target.partition("?")
        # A literal + is a phone number's, not a form-encoded space.
        query_text = query_text.replace("+", "%2B")
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(query_text).items()}
        parts = [p for p in path.split("/") if p]
        if parts == ["healthz"]:
            return _json(200, {"status": "alive", "sip_uri": self.sim.sip_uri})
        if parts == ["scenarios"] and method == "GET":
            return 200, "application/json", table_json(self.sim.table).encode()
        if parts == ["calls"] and method == "GET":
            wanted = {k: v for k, v in query.items() if k in FILTERS}
            await self.sim.digest_pages(self.sim.calls.all())
            records = [r.public() for r in self.sim.calls.all()]
            return _json(200, [r for r in records if all(r[k] == v for k, v in wanted.items())])
        if len(parts) in (2, 3) and parts[0] == "calls" and method == "GET":
            record = self.sim.calls.get(parts[1])
            if record is None:
                return _json(404, {"error": "no such call"})
            if len(parts) == 2:
                await self.sim.digest_pages([record])
                return _json(200, record.public())
            if parts[2] == "tiff" and record.received_tiff:
                data = await asyncio.to_thread(Path(record.received_tiff).read_bytes)
                return 200, "image/tiff", data
            return _json(404, {"error": "no received pages"})
        if parts == ["counts"] and method == "GET":
            return _json(200, self.sim.calls.dial_counts())
        if parts == ["reset"] and method == "POST":
            self.sim.calls.reset()
            return _json(200, {"reset": True})
        if parts == ["originate"] and method == "POST":
            try:
                request = OriginateRequest.model_validate_json(body or b"{}")
            except ValidationError as exc:
                return _json(400, {"error": exc.errors(include_url=False, include_context=False)})
            if not request.document.is_file():
                return _json(400, {"error": f"no such document: {request.document}"})
            record = self.sim.originate(
                request.from_,
                request.to,
                request.document,
                request.media,
                request.uri,
                request.drop_on_page,
                _redial(self.sim.redial, request),
            )
            return _json(200, {"id": record.id})
        if parts and parts[0] in ("calls", "counts", "reset", "originate", "scenarios"):
            return _json(405, {"error": "method not allowed"})
        return _json(404, {"error": "not found"})
