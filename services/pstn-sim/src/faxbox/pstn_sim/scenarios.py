"""The scenario table: which remote fax machine (or line fault) answers a dialled number.

Rows are tried in order; the first whose ``pattern`` (a regular expression, searched in
the dialled number in E.164 form with the +) matches decides. A number no row matches
is answered by a fax machine that receives (``receive``).

``busy_first: N`` on a row makes each number it matches busy (486) to its first N calls
before the row's behaviour applies (a redial that gets through). Calls are counted per
dialled number by the simulator since its start or the last ``POST /reset``.
``drop_first: N`` on a ``drop_on_page`` row drops only the first N calls a number answers;
the calls after receive (a redial that resumes after the confirmed pages).

Each call's record lists a digest of every page received (``page_digests``, see
``pages``): the pixels below our header line, equal to the digest of the document's
page, so a test can tell which pages of the document a call carried.

Numbers in the default table are in the fictional 555-01XX range (reserved for films
and examples) of real area codes, so they pass ``faxbox.shared.numbers`` (libphonenumber
refuses the 555 area code itself):

==========================  ============================================================
+1 212 555 011x             busy (486)
+1 212 555 012x             no answer (rings; 480 after ``ring_s`` of line time)
+1 212 555 013x             rejected (603)
+1 212 555 014x             drop during page 2
+1 212 555 015x             lossy line (0.1 % of packets lost, 10 ms jitter)
+1 212 555 016x             a person answers (no fax tones)
+1 212 555 017x             T.38 refused (488), receives on G.711
+1 212 555 018x             busy (486) to the first call to a number, then receives
+1 212 555 0193 to 0197     drop during page 3 of the first call to a number, then receives
+1 646 555 01xx             our faxboxes' numbers: forwarded to the inbound receiver
anything else               a fax machine that receives (e.g. +1 212 555 0100)
==========================  ============================================================

About ``lossy``: on G.711 a lost packet is 20 ms of silence in the modem signal. V.17
with ECM re-sends the damaged frames, but a loss during a V.21 control frame or a
training can fail the call (spandsp 0.0.6 then reports T30_ERR_UNEXPECTED,
T30_ERR_TX_ECMPHD or the call drops). Measured at pace 20 with 3 A4 pages, 0.1 % loss
completed 5 calls in 6 with the SIP layer's default jitter buffer and 1 seed in 5 with
40-packet buffers (it depends on where the losses fall); 0.5 % fails most. The default
row has a fixed seed, so the same packets (by arrival order) are lost on every call and
a given document on a given setup behaves the same every time: seed 3 completes the
tests' 3-page document at pace 20 with 40-packet jitter buffers, with about 60 ECM
frame re-sends. T.38 with UDPTL redundancy (3) survives 2-5 % loss.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter


class Behaviour(StrEnum):
    RECEIVE = "receive"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    REJECT = "reject"
    DROP_ON_PAGE = "drop_on_page"
    LOSSY = "lossy"
    HUMAN = "human"
    REFUSE_T38 = "refuse_t38"
    FORWARD = "forward"


def _valid_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from exc
    return value


class Scenario(BaseModel):
    """One row. Times are line time (divided by the pace on a faster clock)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pattern: Annotated[str, AfterValidator(_valid_regex)]
    behaviour: Behaviour
    # no_answer: how long it rings before the network gives up with 480.
    ring_s: float = Field(default=60.0, ge=0)
    # Ringing before a fax machine (or person) answers.
    answer_after_s: float = Field(default=0.0, ge=0)
    # drop_on_page: the page during which the line goes dead.
    page: int = Field(default=2, ge=1)
    # lossy: fraction of media packets lost each way; jitter_ms: extra random delay.
    loss: float = Field(default=0.02, ge=0, lt=1)
    jitter_ms: float = Field(default=0.0, ge=0)
    # lossy: a seed makes the losses repeatable (tests); None: different every call.
    seed: int | None = None
    # The SIP final response for busy (486) and reject (603).
    status: int | None = Field(default=None, ge=400, le=699)
    # human: line time the person stays on before hanging up.
    hold_s: float = Field(default=60.0, gt=0)
    # Busy (486) to the first N calls to each number, whatever the behaviour.
    busy_first: int = Field(default=0, ge=0)
    # drop_on_page: only the first N calls to each number answered are dropped; the ones
    # after receive (a redial that resumes). 0: every call is dropped.
    drop_first: int = Field(default=0, ge=0)

    def matches(self, number: str) -> bool:
        return re.search(self.pattern, number) is not None

    @property
    def final_status(self) -> int:
        if self.status is not None:
            return self.status
        return 486 if self.behaviour is Behaviour.BUSY else 603

    def on_call(self, nth: int) -> Scenario:
        """The row that answers the ``nth`` call (1 = the first) to a number it matches."""
        if nth <= self.busy_first:
            return self.model_copy(update={"behaviour": Behaviour.BUSY, "status": None})
        dropped_calls = self.busy_first + self.drop_first
        if self.behaviour is Behaviour.DROP_ON_PAGE and self.drop_first and nth > dropped_calls:
            return self.model_copy(update={"behaviour": Behaviour.RECEIVE})
        return self


DEFAULT_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(pattern=r"^\+1212555011\d$", behaviour=Behaviour.BUSY),
    Scenario(pattern=r"^\+1212555012\d$", behaviour=Behaviour.NO_ANSWER),
    Scenario(pattern=r"^\+1212555013\d$", behaviour=Behaviour.REJECT),
    Scenario(pattern=r"^\+1212555014\d$", behaviour=Behaviour.DROP_ON_PAGE, page=2),
    Scenario(
        pattern=r"^\+1212555015\d$", behaviour=Behaviour.LOSSY, loss=0.001, jitter_ms=10, seed=3
    ),
    Scenario(pattern=r"^\+1212555016\d$", behaviour=Behaviour.HUMAN),
    Scenario(pattern=r"^\+1212555017\d$", behaviour=Behaviour.REFUSE_T38),
    Scenario(pattern=r"^\+1212555018\d$", behaviour=Behaviour.RECEIVE, busy_first=1),
    Scenario(
        pattern=r"^\+1212555019[3-7]$", behaviour=Behaviour.DROP_ON_PAGE, page=3, drop_first=1
    ),
    Scenario(pattern=r"^\+164655501\d\d$", behaviour=Behaviour.FORWARD),
)

DEFAULT_ROW = Scenario(pattern="", behaviour=Behaviour.RECEIVE)

_TABLE = TypeAdapter(list[Scenario])


def parse_table(data: str | bytes) -> tuple[Scenario, ...]:
    """A JSON list of rows, e.g. ``[{"pattern": "^\\\\+1", "behaviour": "busy"}]``."""
    return tuple(_TABLE.validate_json(data))


def load_table(path: Path | None) -> tuple[Scenario, ...]:
    if path is None:
        return DEFAULT_SCENARIOS
    return parse_table(path.read_bytes())


def table_json(table: tuple[Scenario, ...]) -> str:
    return json.dumps([row.model_dump(mode="json") for row in table], indent=2)


def choose(table: tuple[Scenario, ...], number: str) -> Scenario:
    for row in table:
        if row.matches(number):
            return row
    return DEFAULT_ROW
