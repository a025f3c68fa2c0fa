"""The settling policy: what becomes of a delivery once its handler returned or raised.

One rule for every consumer, decided by :func:`decide` and carried out by the bus:

- the handler returned → :class:`Ack`;
- :class:`PermanentError` (retrying cannot help: bad input, a contract that cannot be
  honoured) → :class:`DeadLetter` with its reason, kind ``permanent``;
- an **outage** of something we depend on — the database or the broker unreachable, a
  connection reset, a timeout talking to them (see :func:`is_infrastructure`; the error
  may also be the cause of the one the handler raised) → :class:`Retry` with a capped
  backoff, **forever**: an outage longer than any retry budget must end with the work
  done once the outage ends, never in the dead-letter queue. These waits do not use up
  the transient budget below, and the bus reports them (``faxbox_infrastructure_waits_total``,
  and ``faxbox_waiting_on_infrastructure`` = 1 while a queue's last settlement was
  one) so an operator can be alerted;
- :class:`RetryLater` (the handler's own schedule: a redial, a busy channel) →
  :class:`Retry` after that delay, rounded **up** to the ladder; it does not count
  against the transient budget either;
- :class:`TransientError` or any other exception (a bug, an unexpected reply) →
  :class:`Retry` along ``retry_delays_s``, at most ``max_transient_attempts`` times in
  all, then :class:`DeadLetter` with kind ``exhausted``: a message that fails for a
  reason nobody foresaw must not loop forever.

Every delay is one of :data:`RETRY_LADDER_S`. A delay waits in a durable held queue on the
broker (``<prefix>.<service>.retry.<N>s.held``, see :mod:`faxbox.shared.delays`), so a fixed
ladder keeps their number
bounded whatever delays faxboxes configure for their redials.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from aiormq.exceptions import AMQPError
from pymongo.errors import ConnectionFailure, ExecutionTimeout, OperationFailure, WTimeoutError

RETRY_LADDER_S: Final[tuple[int, ...]] = (
    1, 2, 3, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400,
)  # fmt: skip

# Server replies that mean "not now" rather than "never": shutting down, stepping down,
# not primary (a replica set election), interrupted.
_TRANSIENT_SERVER_CODES: Final = frozenset(
    {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436}
)


class SettleError(Exception):
    """Raised by handlers to choose how their message is settled."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PermanentError(SettleError):
    """Retrying cannot help: dead-letter the message with this reason."""


class TransientError(SettleError):
    """Something went wrong that may not happen again: retry with backoff, bounded.

    Raised ``from`` an outage (see :func:`is_infrastructure`), it is waited out like
    the outage itself, unbounded.
    """


class RetryLater(SettleError):
    """Come back after this delay (redials, busy channels): the handler's own schedule.

    The delay is rounded up to :data:`RETRY_LADDER_S`. It does not count against the
    transient-retry budget, so a fax redialled many times is never dead-lettered for it.
    ``notes`` travel with the copy (see :mod:`faxbox.shared.notes`).
    """

    def __init__(self, reason: str, delay_s: int, notes: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self.delay_s = max(1, delay_s)
        self.notes: Mapping[str, str] = dict(notes or {})


def on_ladder(delay_s: float) -> int:
    """The smallest ladder step at least ``delay_s`` (the largest step past its end)."""
    index = bisect_left(RETRY_LADDER_S, delay_s)
    return RETRY_LADDER_S[min(index, len(RETRY_LADDER_S) - 1)]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_outage(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionFailure, ExecutionTimeout, WTimeoutError)):
        return True  # includes AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError
    if isinstance(exc, OperationFailure):
        return exc.code in _TRANSIENT_SERVER_CODES
    # AMQPError covers aio-pika's connection and channel errors (a broker restart).
    return isinstance(exc, (AMQPError, ConnectionError, TimeoutError))


def is_infrastructure(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was caused by, an outage of the database or the broker."""
    if isinstance(exc, PermanentError):
        return False
    return any(_is_outage(link) for link in _chain(exc))


class PolicySettings(Protocol):
    """The broker settings the policy reads (``BrokerSettings`` has them)."""

    @property
    def retry_delays_s(self) -> Sequence[int]: ...

    @property
    def max_transient_attempts(self) -> int: ...

    @property
    def infrastructure_backoff_max_s(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Attempts:
    """What a delivery's headers say about its earlier settlements."""

    transient: int = 1  # this is the n-th try counted against the transient budget
    waits: int = 0  # outages waited out so far


@dataclass(frozen=True, slots=True)
class Ack:
    pass


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    kind: Literal["permanent", "exhausted"]


@dataclass(frozen=True, slots=True)
class Retry:
    reason: str
    delay_s: int
    next: Attempts
    kind: Literal["scheduled", "transient", "infrastructure"]
    notes: Mapping[str, str] = field(default_factory=dict)  # added to the copy's


Decision = Ack | DeadLetter | Retry


def transient_delay(attempt: int, settings: PolicySettings) -> int:
    delays = tuple(settings.retry_delays_s) or (RETRY_LADDER_S[0],)
    return on_ladder(delays[min(attempt - 1, len(delays) - 1)])


def infrastructure_delay(waits: int, settings: PolicySettings) -> int:
    """1, 2, 3, 5, 10 … s along the ladder, never above the cap."""
    cap = on_ladder(settings.infrastructure_backoff_max_s)
    return min(RETRY_LADDER_S[min(waits, len(RETRY_LADDER_S) - 1)], cap)


def describe(exc: BaseException) -> str:
    if isinstance(exc, SettleError):
        return exc.reason
    return f"{type(exc).__name__}: {exc}"


def decide(exc: BaseException | None, attempts: Attempts, settings: PolicySettings) -> Decision:
    """How to settle a delivery whose handler raised ``exc`` (None: it returned)."""
    if exc is None:
        return Ack()
    reason = describe(exc)
    if isinstance(exc, PermanentError):
        return DeadLetter(reason, "permanent")
    if isinstance(exc, RetryLater):
        return Retry(reason, on_ladder(exc.delay_s), attempts, "scheduled", exc.notes)
    if is_infrastructure(exc):
        delay = infrastructure_delay(attempts.waits, settings)
        return Retry(
            reason,
            delay,
            Attempts(transient=attempts.transient, waits=attempts.waits + 1),
            "infrastructure",
        )
    if attempts.transient >= settings.max_transient_attempts:
        return DeadLetter(f"gave up after {attempts.transient} attempts: {reason}", "exhausted")
    return Retry(
        reason,
        transient_delay(attempts.transient, settings),
        Attempts(transient=attempts.transient + 1, waits=attempts.waits),
        "transient",
    )
