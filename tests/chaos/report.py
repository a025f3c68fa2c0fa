"""The results of a chaos run: which figures fail it, the file they are written to, the
commit they were measured on."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

from tests.support import RabbitServer

REPO = Path(__file__).resolve().parents[2]

# Any of these not 0 fails the run.
FAILING = (
    "lost",
    "duplicate_records",
    "wrong_outcome",
    "history_incomplete",
    "duplicates_on_line",
    "sent_without_call",
    "completed_not_sent",
    "pages_not_equal",
    "calls_for_rejected",
    "busy_calls_over_policy",
    "missing_mails",
    "extra_mails",
    "dead_letters",
    "inbound_not_placed",
    "inbound_lost",
    "inbound_duplicated",
)
# Printed after the failing figures (the file has everything).
SHOWN = (
    "emails",
    "faxes",
    "emails_to_several_numbers",
    "terminal",
    "inbound",
    "inbound_completed",
    "inbound_redialled",
    "inbound_tries",
    "pages_resent",
    "faxes_compared",
    "faxes_without_ecm",
    "calls",
    "calls_completed",
    "calls_cut",
    "calls_cut_by_pstn_restart",
    "rabbitmq_node_kills",
    "database_outage_s",
    "broker_outage_s",
    "pstn_sim_restarts",
    "database_restarts",
    "kills",
    "crashes",
    "quiescent",
    "duration_s",
    "seed",
    "commit",
)


def dead_letters(rabbit: RabbitServer, vhost: str) -> int:
    """Messages left in the run's dead-letter queues (every one is a failure here)."""
    queues = rabbit.api("GET", f"/api/queues/{urllib.parse.quote(vhost, '')}?columns=name,messages")
    assert isinstance(queues, list)
    return sum(int(q.get("messages") or 0) for q in queues if str(q["name"]).endswith(".dlq"))


def commit() -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


def failures(figures: dict[str, Any]) -> list[str]:
    bad = [f"{name}={figures[name]}" for name in FAILING if figures.get(name)]
    if figures.get("terminal") != figures.get("faxes"):
        bad.append(f"terminal={figures.get('terminal')} of {figures.get('faxes')} faxes")
    if not figures.get("quiescent"):
        bad.append("not quiescent")
    return bad


def report(figures: dict[str, Any], out: Path) -> None:
    """Print the figures and write them (with the events and problems) to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    for name in (*FAILING, *SHOWN):
        print(f"{name:>26}: {figures.get(name)}")
    for problem in figures.get("problems", [])[:50]:
        print(f"  problem: {problem}")
    print(f"figures written to {out}")
