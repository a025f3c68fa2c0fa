"""What a chaos run sends: the configuration, the emails (some to several fax numbers)
and the inbound calls pstn-sim places, all drawn from one seeded RNG."""

from __future__ import annotations

import random
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from functools import cache
from typing import Literal

from faxbox.demo.document import demo_pdf
from tests.e2e.stack import ALICE, BOB, REALM

MTA_AUTHSERV_ID = "mx.chaos.test"
INTAKE_USER = "chaos@faxbox.test"
# pstn-sim's default table: every number listed below but 011x is answered by a fax
# machine that receives (no scenario row matches it); 011x is always busy.
RECEIVE_NUMBERS = [f"+1212555{n:04d}" for n in (*range(200, 400), *range(600, 1000))]
BUSY_NUMBERS = [f"+1212555{n:04d}" for n in range(110, 120)]
# Numbers of mails that are rejected before dialing: nothing may ever call them.
REJECT_NUMBERS = [f"+1212555{n:04d}" for n in range(400, 600)]
# Callers of the inbound faxes: one number per call, so the call, its history record and
# its mail are matched by the caller number alone.
CALLER_NUMBERS = [f"+1315555{n:04d}" for n in range(1000, 10000)]
BUSY_ATTEMPTS = 3  # the seeded tenant's retry policy (tests/e2e/stack.py Stack.seed)

Kind = Literal["receive", "busy", "reject"]
EXPECTED_STATUS: dict[Kind, str] = {"receive": "sent", "busy": "failed", "reject": "rejected"}


@dataclass(frozen=True)
class ChaosConfig:
    emails: int = 30
    inbound: int = 8
    seed: int | None = None
    # Emails and inbound calls come over this window; the chaos events fall inside it.
    window_s: float = 45.0
    kills_per_service: int = 1
    # SIGKILLs of one node of the 3-node RabbitMQ cluster (a different one each time when
    # there are several), each started again after down_s.
    rabbitmq_node_kills: int = 1
    restart_database: bool = True
    restart_pstn_sim: bool = True
    # Replicas of every service that can run twice here (tests/e2e/stack.py REPLICABLE):
    # claims, leases and the outbox race for real.
    replicas: int = 2
    # The database restart keeps FerretDB down this long instead of down_s: an outage
    # past every retry budget (the long run's 10 minutes), which must be waited out.
    database_outage_s: float | None = None
    # The whole cluster stopped this long (every node), besides the node kills.
    broker_outage_s: float | None = None
    # How long a killed service (or a server) stays down before it is started again.
    down_s: tuple[float, float] = (0.5, 3.0)
    # Quiescent: every email has its outcome and mail, and nothing changed for settle_s.
    settle_s: float = 10.0
    quiesce_timeout_s: float = 180.0
    reject_share: float = 0.15
    busy_share: float = 0.1
    # Emails to 2 or 3 numbers at once.
    several_share: float = 0.25
    max_pages: int = 3
    bob_share: float = 0.2
    # The line clock against the wall (the e2e tests' 20 by default). T.30's timers run on
    # it: at 20 a far end's 3 s wait for a page's confirmation is 150 ms of wall time, which
    # a stall of this machine under the run's kills and restarts can outlast; the far end
    # then hangs up on a page it has printed, and the redial prints it again.
    pace: float = 5.0


@dataclass(frozen=True)
class Recipient:
    number: str
    kind: Kind

    @property
    def expected_status(self) -> str:
        return EXPECTED_STATUS[self.kind]


@dataclass(frozen=True)
class Planned:
    """One email: its sender, its fax numbers (one outcome each) and its page count."""

    index: int
    sender: str
    recipients: tuple[Recipient, ...]
    pages: int
    message: EmailMessage

    @property
    def message_id(self) -> str:
        return mid(str(self.message["Message-ID"]))

    @property
    def rejected(self) -> bool:
        return self.recipients[0].kind == "reject"


@dataclass(frozen=True)
class InboundCall:
    """A fax pstn-sim sends to a faxbox's number, from a caller number of its own."""

    index: int
    caller: str
    to: str
    owner: str
    pages: int
    media: Literal["g711", "t38"]


def mid(value: str) -> str:
    return value.strip().strip("<>")


@cache
def document(pages: int) -> bytes:
    return demo_pdf(pages, title="Faxbox chaos")


def _recipients(
    config: ChaosConfig, rng: random.Random, free: list[str], shape: str | None
) -> list[Recipient]:
    # Every run has an email to several numbers, one of them busy, and one to a busy
    # number alone, whatever the draws: a run without them would prove less than it says.
    if shape == "several":
        kinds: list[Kind] = ["receive", "busy"]
    elif shape == "busy":
        kinds = ["busy"]
    else:
        count = rng.choice((2, 3)) if rng.random() < config.several_share else 1
        kinds = ["busy" if rng.random() < config.busy_share else "receive" for _ in range(count)]
    chosen: list[Recipient] = []
    for kind in kinds:
        if kind == "busy":
            busy = rng.choice([n for n in BUSY_NUMBERS if n not in {r.number for r in chosen}])
            chosen.append(Recipient(busy, "busy"))
        else:
            if not free:
                raise ValueError(f"at most {len(RECEIVE_NUMBERS)} fax numbers that receive")
            chosen.append(Recipient(free.pop(), "receive"))
    return chosen


def plan_emails(config: ChaosConfig, rng: random.Random) -> list[Planned]:
    free = RECEIVE_NUMBERS.copy()
    rng.shuffle(free)
    rejects = rng.sample(REJECT_NUMBERS, max(1, round(config.emails * config.reject_share)))
    kinds = ["reject"] * len(rejects) + ["fax"] * (config.emails - len(rejects))
    rng.shuffle(kinds)
    faxes = [i for i, kind in enumerate(kinds) if kind == "fax"]
    shapes = dict(zip(rng.sample(faxes, min(2, len(faxes))), ("several", "busy"), strict=False))
    planned: list[Planned] = []
    for index, kind in enumerate(kinds):
        sender = BOB.email if rng.random() < config.bob_share else ALICE.email
        pages = rng.randint(1, config.max_pages)
        pdf = document(pages)
        attachments: list[tuple[str, bytes]] = [("pages.pdf", pdf)]
        if kind == "reject":
            number = rejects.pop()
            recipients = [Recipient(number, "reject")]
            to = f"{number}@{REALM}"
            fault = rng.choice(("no attachment", "two attachments", "bad number"))
            if fault == "no attachment":
                attachments = []
            elif fault == "two attachments":
                attachments = [("a.pdf", pdf), ("b.pdf", pdf)]
            else:
                to = f"12345@{REALM}"
        else:
            recipients = _recipients(config, rng, free, shapes.get(index))
            to = ", ".join(f"{r.number}@{REALM}" for r in recipients)
        message = EmailMessage()
        # Put straight into the intake folder: the proof is what the MTA in front of it
        # writes for a sender who logged in (the run trusts that MTA's id, no other).
        message["Authentication-Results"] = f"{MTA_AUTHSERV_ID}; auth=pass smtp.auth={sender}"
        message["From"] = sender
        message["To"] = to
        message["Subject"] = f"chaos {index}"
        message["Message-ID"] = make_msgid(idstring=f"chaos{index}", domain="client.test")
        message.set_content(f"Chaos email {index} ({kind}, {len(recipients)} number(s)).\n")
        for filename, data in attachments:
            message.add_attachment(data, maintype="application", subtype="pdf", filename=filename)
        planned.append(Planned(index, sender, tuple(recipients), pages, message))
    return planned


def plan_inbound(config: ChaosConfig, rng: random.Random) -> list[InboundCall]:
    callers = rng.sample(CALLER_NUMBERS, config.inbound)
    calls: list[InboundCall] = []
    for index, caller in enumerate(callers):
        owner = rng.choice((ALICE, BOB))
        calls.append(
            InboundCall(
                index=index,
                caller=caller,
                to=owner.number,
                owner=owner.email,
                pages=rng.randint(1, config.max_pages),
                media=rng.choice(("g711", "t38")),
            )
        )
    return calls
