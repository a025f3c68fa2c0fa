"""Command line: run the simulator, or originate a fax through a running one.

    python -m faxbox.pstn_sim                      # serve (FAXBOX_PSTN_SIM_* settings)
    python -m faxbox.pstn_sim originate --from +12125550100 --to +16465550123 \\
        --file doc.pdf [--media t38] [--uri sip:...] [--drop-on-page N] [--tries N] \\
        [--control http://127.0.0.1:8070]

``originate`` prints the final call record as JSON (after the last try: see ``redial``);
exit status 0 when the fax went through, 1 when it failed, 2 on a usage or connection
error.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def _request(url: str, data: dict[str, Any] | None = None, timeout: float = 10) -> Any:
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def originate(args: argparse.Namespace) -> int:
    control = args.control.rstrip("/")
    payload: dict[str, Any] = {
        "from": args.from_,
        "to": args.to,
        "document": str(Path(args.file).resolve()),
        "media": args.media,
    }
    if args.uri:
        payload["uri"] = args.uri
    if args.drop_on_page:
        payload["drop_on_page"] = args.drop_on_page
    if args.tries:
        payload["tries"] = args.tries
    try:
        call_id = _request(f"{control}/originate", payload)["id"]
        deadline = time.monotonic() + args.timeout
        while True:
            record = _request(f"{control}/calls/{call_id}")
            if record.get("ended_at") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    except urllib.error.HTTPError as exc:
        print(exc.read().decode(errors="replace"))
        return 2
    except (urllib.error.URLError, OSError) as exc:
        print(json.dumps({"error": f"cannot reach {control}: {exc}"}))
        return 2
    print(json.dumps(record, indent=2))
    outcome = record.get("outcome") or {}
    return 0 if outcome.get("success") else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m faxbox.pstn_sim")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the simulator (the default)")
    orig = commands.add_parser("originate", help="send a fax from the network to a number")
    orig.add_argument("--from", dest="from_", metavar="NUMBER", required=True)
    orig.add_argument("--to", metavar="NUMBER", required=True)
    orig.add_argument(
        "--file", required=True, help="a PDF or fax TIFF (the simulator reads it: same host)"
    )
    orig.add_argument("--media", choices=("g711", "t38"), default="g711")
    orig.add_argument("--uri", help="SIP URI to call (default: the simulator's inbound_uri)")
    orig.add_argument("--drop-on-page", type=int, metavar="N", help="hang up while sending page N")
    orig.add_argument(
        "--tries", type=int, metavar="N", help="at most N tries (default: the simulator's)"
    )
    orig.add_argument("--control", default="http://127.0.0.1:8070")
    orig.add_argument("--timeout", type=float, default=3600, help="seconds to wait")
    args = parser.parse_args(argv)
    if args.command == "originate":
        return originate(args)
    # Imported here: the client needs none of the engine.
    from faxbox.pstn_sim.service import main as serve

    serve()
    return 0
