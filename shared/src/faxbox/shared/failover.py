"""One robust AMQP connection over the nodes of a RabbitMQ cluster.

``FAXBOX_AMQP_URL`` may list several nodes, comma-separated. The connection starts at one
of them; whenever an attempt to (re)connect fails, the next attempt goes to the next
node, so a service whose node died resumes on a surviving one: aio_pika's robust
connection then re-opens its channels, re-declares what they declared and restarts their
consumers there, and the bus's publisher confirms go to the new node. Quorum queues
keep every message a majority of nodes confirmed, so nothing confirmed is lost with the
node.
"""

from __future__ import annotations

from typing import Any

from aio_pika import RobustConnection
from yarl import URL

# How long a robust connection waits between attempts (aio_pika's default is 5 s): a
# dead node is found within one attempt, so the survivors are tried almost at once.
RECONNECT_INTERVAL_S = 1.0


def split_urls(amqp_url: str) -> tuple[str, ...]:
    """The node URLs of ``FAXBOX_AMQP_URL`` (one, or several separated by commas)."""
    urls = tuple(part.strip() for part in amqp_url.split(",") if part.strip())
    if not urls:
        raise ValueError("FAXBOX_AMQP_URL names no node")
    return urls


class FailoverConnection(RobustConnection):
    """A robust connection that moves to the next node when an attempt fails."""

    def __init__(self, url: URL, *, nodes: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._nodes = tuple(URL(node) for node in nodes) or (URL(url),)
        self._current = next((i for i, node in enumerate(self._nodes) if node == URL(url)), 0)

    @property
    def node(self) -> URL:
        """The node this connection uses (or tries) now."""
        return self._nodes[self._current]

    # aio_pika's RobustConnection makes each attempt in this private method (its name
    # mangled), always to self.url; overriding it is the one place to choose the node.
    # aio_pika is pinned in uv.lock, and tests/integration/test_bus_cluster.py fails if
    # a new version stops calling it.
    async def _RobustConnection__connect_transport(self) -> None:
        self.url = self.node
        try:
            await super()._RobustConnection__connect_transport()  # type: ignore[misc]
        except BaseException:
            self._current = (self._current + 1) % len(self._nodes)
            raise


async def connect_failover(amqp_url: str, first: int = 0) -> FailoverConnection:
    """Connect to the first node that answers, starting with node ``first``."""
    nodes = split_urls(amqp_url)
    start = nodes[first % len(nodes)]
    connection = FailoverConnection(
        URL(start), nodes=nodes, reconnect_interval=RECONNECT_INTERVAL_S
    )
    await connection.connect()
    return connection
