"""The benchmark figures of benchmarks/results/*.json as one table, checked against the targets.

    uv run python benchmarks/summary.py            # print the table (Markdown)
    uv run python benchmarks/summary.py --readme   # and put it into README.md

The README keeps the table between the two ``benchmarks`` marker comments.
"""

from __future__ import annotations

import argparse
import json
import operator
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"
BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"

Compare = Callable[[float, float], bool]
OPS: dict[str, Compare] = {"<=": operator.le, ">=": operator.ge}

# (result file, field, comparison, target, what it measures); the issues' figures.
TARGETS: tuple[tuple[str, str, str, float, str], ...] = (
    ("engine_cpu", "cpu_ratio_vs_spandsp", "<=", 2, "T.30 engine CPU per page vs spandsp's own"),
    ("render", "mix_ratio", ">=", 1.5, "rendering speed vs Ghostscript, mixed documents"),
    ("render", "long_ratio", ">=", 0.9, "rendering speed vs Ghostscript, long text documents"),
    ("render", "text_bytes_ratio", "<=", 1.0, "G4 bytes per text page vs Ghostscript"),
    ("intake_latency", "p50_s", "<=", 0.5, "IMAP APPEND to MailReceived, p50 (s)"),
    ("intake_latency", "p99_s", "<=", 2, "IMAP APPEND to MailReceived, p99 (s)"),
    ("transmitter", "g711_concurrent_calls", ">=", 100, "concurrent G.711 calls, one process"),
    ("transmitter", "t38_concurrent_calls", ">=", 200, "concurrent T.38 calls, one process"),
    ("history", "events_per_s", ">=", 2000, "history writes (events/s)"),
    ("portal", "p95_30d_ms", "<=", 50, "portal first page, 30 days, p95 (ms)"),
    ("portal", "p95_12m_ms", "<=", 200, "portal first page, 12 months, p95 (ms)"),
    ("e2e", "faxes_per_min", ">=", 300, "3-page faxes per minute, APPEND to FaxSent"),
    ("e2e", "dial_p50_s", "<=", 1, "APPEND to dialling, p50 (s)"),
    ("e2e", "dial_p99_s", "<=", 3, "APPEND to dialling, p99 (s)"),
)


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def measured_at(name: str, data: dict[str, Any]) -> str:
    stamp = data.get("measured_at")
    if stamp:
        return str(stamp)[:16].replace("T", " ")
    # Older result files carry no time stamp: the file's own time says when it was written.
    written = datetime.fromtimestamp((RESULTS / f"{name}.json").stat().st_mtime, UTC)
    return written.strftime("%Y-%m-%d %H:%M")


def table() -> tuple[str, int]:
    lines = [
        "| figure | measured | target | met | measured at |",
        "|---|---|---|---|---|",
    ]
    missed = 0
    for name, field, op, target, what in TARGETS:
        data = load(name)
        value = None if data is None else data.get(field)
        when = "" if data is None else measured_at(name, data)
        if value is None:
            met = "not measured"
            missed += 1
        elif OPS[op](float(value), target):
            met = "yes"
        else:
            met = "**no**"
            missed += 1
        shown = "—" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
        lines.append(f"| {what} (`{name}.{field}`) | {shown} | {op} {target:g} | {met} | {when} |")
    return "\n".join(lines) + "\n", missed


def update_readme(text: str) -> None:
    readme = README.read_text()
    block = f"{BEGIN}\n{text}{END}"
    if BEGIN in readme:
        readme = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), block, readme, flags=re.S)
    else:
        readme = readme.rstrip("\n") + f"\n\n## Benchmarks\n\n{block}\n"
    README.write_text(readme)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    text, missed = table()
    print(text, end="")
    print(f"{missed} figure(s) short of their target or not measured", file=sys.stderr)
    if args.readme:
        update_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
