"""The long chaos run: N emails through the whole stack while everything is killed.

    set -a; . var/env; set +a
    uv run --frozen python -m tests.chaos.run --emails 200
    uv run --frozen python -m tests.chaos.run --emails 200 --seed 1234   # same plan again

Restarts the machine's RabbitMQ node and this clone's FerretDB once each (other tests
running at the same time will see them go away). Prints the figures and writes them to
benchmarks/results/chaos.json (``--out``); exits 1 on any loss, duplicate, extra or
missing mail. The service logs stay in test-artifacts/chaos/<time>/. What it does and
what the figures mean: tests/chaos/chaos.py.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from tests.chaos.chaos import REPO, Chaos, ChaosConfig, Servers, failures, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=200)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--window", type=float, default=None, help="seconds to append over (default 1.5/email)"
    )
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs per process")
    parser.add_argument(
        "--replicas", type=int, default=2, help="processes per service that can run twice"
    )
    parser.add_argument("--quiesce-timeout", type=float, default=600.0)
    parser.add_argument(
        "--database-outage",
        type=float,
        default=None,
        help="keep FerretDB down this many seconds (e.g. 600) instead of a short restart",
    )
    parser.add_argument(
        "--broker-outage",
        type=float,
        default=None,
        help="keep RabbitMQ stopped this many seconds (every node of FAXBOX_CHAOS_RABBITMQ_NODES)",
    )
    parser.add_argument(
        "--no-rabbitmq-restart",
        action="store_true",
        help="leave the machine's RabbitMQ node alone (other clones use it)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/chaos.json")
    args = parser.parse_args()
    config = ChaosConfig(
        emails=args.emails,
        seed=args.seed,
        window_s=args.window if args.window is not None else 1.5 * args.emails,
        kills_per_service=args.kills,
        quiesce_timeout_s=args.quiesce_timeout,
        database_outage_s=args.database_outage,
        replicas=args.replicas,
        broker_outage_s=args.broker_outage,
        restart_rabbitmq=not args.no_rabbitmq_restart,
    )
    directory = REPO / "test-artifacts" / "chaos" / time.strftime("%Y%m%d-%H%M%S")
    chaos = Chaos(config, Servers.from_env(), directory)
    figures = asyncio.run(chaos.run())
    figures["config"] = {
        "emails": config.emails,
        "window_s": config.window_s,
        "kills_per_service": config.kills_per_service,
        "replicas": config.replicas,
        "database_outage_s": config.database_outage_s,
        "broker_outage_s": config.broker_outage_s,
        "restart_rabbitmq": config.restart_rabbitmq,
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
