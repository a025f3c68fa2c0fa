"""The long chaos run (issue 18's): by default 300 emails and 50 inbound faxes on the
3-node RabbitMQ cluster, two replicas of every service, each process SIGKILLed 3 times,
3 RabbitMQ node kills, a pstn-sim restart mid-calls and one 10-minute FerretDB outage.

    set -a; . var/env; set +a
    flock -o -x /tmp/faxbox-servers.lock uv run --frozen python -m tests.chaos.run
    uv run --frozen python -m tests.chaos.run --seed 1234      # the same plan again
    uv run --frozen python -m tests.chaos.run --emails 60 --inbound 10 --database-outage 60

Starts the local RabbitMQ cluster unless FAXBOX_AMQP_URL lists one (and stops it again
if it was not running) and kills this clone's FerretDB (other tests running at the same
time see it go away: run it under the servers lock). Prints the figures and writes them
to benchmarks/results/chaos.json (``--out``); exits 1 when any failing figure is not 0
(tests/chaos/report.py). The service logs stay in test-artifacts/chaos/<time>/. What it
does and what the figures mean: tests/chaos/chaos.py and tests/chaos/counting.py.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from tests.chaos.chaos import REPO, Chaos, ChaosConfig, Servers
from tests.chaos.report import failures, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=300)
    parser.add_argument("--inbound", type=int, default=50, help="faxes pstn-sim sends in")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--window", type=float, default=None, help="seconds to send over (default 1.5/email)"
    )
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs per service process")
    parser.add_argument("--node-kills", type=int, default=3, help="RabbitMQ node SIGKILLs")
    parser.add_argument(
        "--replicas", type=int, default=2, help="processes per service that can run twice"
    )
    parser.add_argument("--quiesce-timeout", type=float, default=1200.0)
    parser.add_argument(
        "--database-outage",
        type=float,
        default=600.0,
        help="seconds FerretDB stays down (0: a short restart instead)",
    )
    parser.add_argument(
        "--broker-outage",
        type=float,
        default=None,
        help="also stop every RabbitMQ node for this many seconds",
    )
    parser.add_argument(
        "--pace", type=float, default=ChaosConfig.pace, help="line clock against the wall"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/chaos.json")
    args = parser.parse_args()
    config = ChaosConfig(
        emails=args.emails,
        inbound=args.inbound,
        seed=args.seed,
        window_s=args.window if args.window is not None else 1.5 * args.emails,
        kills_per_service=args.kills,
        rabbitmq_node_kills=args.node_kills,
        quiesce_timeout_s=args.quiesce_timeout,
        database_outage_s=args.database_outage or None,
        replicas=args.replicas,
        broker_outage_s=args.broker_outage,
        pace=args.pace,
    )
    directory = REPO / "test-artifacts" / "chaos" / time.strftime("%Y%m%d-%H%M%S")
    chaos = Chaos(config, Servers.from_env(), directory)
    figures = asyncio.run(chaos.run())
    figures["config"] = {
        "emails": config.emails,
        "inbound": config.inbound,
        "window_s": config.window_s,
        "kills_per_service": config.kills_per_service,
        "rabbitmq_node_kills": config.rabbitmq_node_kills,
        "replicas": config.replicas,
        "database_outage_s": config.database_outage_s,
        "pace": config.pace,
        "broker_outage_s": config.broker_outage_s,
    }
    report(figures, args.out)
    bad = failures(figures)
    if bad:
        print(f"FAILED: {', '.join(bad)}; logs in {directory}")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
