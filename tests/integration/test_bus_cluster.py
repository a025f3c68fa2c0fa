"""The bus on a 3-node RabbitMQ cluster (deploy/local/rabbitmq_cluster.sh): the node a
service is connected to is killed (SIGKILL) while it publishes and consumes, and it goes
on on a surviving node; every confirmed message is consumed, none is dead-lettered.

The cluster is started here when FAXBOX_AMQP_URL does not already list one (and stopped
again afterwards): about 30 s for three nodes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from faxbox.shared.bus import Bus
from faxbox.shared.contracts import MailReceived
from faxbox.shared.failover import FailoverConnection, split_urls
from faxbox.shared.settings import BrokerSettings
from tests.support import RabbitServer, servers_required
from tests.support import sample_mail_received as mail

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CLUSTER = Path(__file__).resolve().parents[2] / "deploy/local/rabbitmq_cluster.sh"
NODES = 3


def cluster(*args: str) -> str:
    env = {**os.environ, "FAXBOX_RABBITMQ_NODES": str(NODES)}
    done = subprocess.run(
        ["bash", str(CLUSTER), *args], env=env, capture_output=True, text=True, timeout=400
    )
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmq_cluster.sh {' '.join(args)}: {done.stderr[-3000:]}")
    return done.stdout.strip()


@pytest.fixture(scope="module")
def cluster_urls() -> Iterator[tuple[str, ...]]:
    configured = split_urls(os.environ.get("FAXBOX_AMQP_URL", "amqp://127.0.0.1/"))
    if len(configured) >= NODES:
        yield configured
        return
    if os.geteuid() != 0:
        message = "the RabbitMQ cluster is started as root (its nodes run as rabbitmq)"
        if servers_required():
            pytest.fail(message)
        pytest.skip(message)
    was_running = "down" not in cluster("status")
    cluster("up")
    try:
        yield split_urls(cluster("urls"))
    finally:
        if not was_running:
            cluster("down")


@pytest.fixture
def cluster_rabbit(cluster_urls: tuple[str, ...]) -> RabbitServer:
    first = urllib.parse.urlsplit(cluster_urls[0])
    # Node K's management API is on 15680+K beside its AMQP port 5680+K.
    return RabbitServer(
        amqp_url=",".join(cluster_urls),
        api_url=f"http://127.0.0.1:{(first.port or 5681) + 10000}",
        user="guest",
        password="guest",
    )


@pytest.fixture
async def cluster_bus(cluster_rabbit: RabbitServer) -> AsyncIterator[Bus]:
    with cluster_rabbit.scratch_vhost("cluster") as vhost:
        settings = BrokerSettings(
            amqp_url=cluster_rabbit.url_for_vhost(vhost),
            exchange_prefix="cluster",
            retry_delays_s=(1,),
            publish_timeout_s=60,
            connect_timeout_s=60,
        )
        bus = Bus(settings)
        await bus.connect()
        await bus.declare_service("validator")
        try:
            yield bus
        finally:
            await bus.close()


def node_number(connection: FailoverConnection) -> int:
    return (connection.node.port or 0) - 5680


async def test_a_killed_node_is_left_for_a_survivor_and_nothing_confirmed_is_lost(
    cluster_bus: Bus,
) -> None:
    connection = cluster_bus.connection
    assert isinstance(connection, FailoverConnection)
    consumed: set[str] = set()
    all_in = asyncio.Event()
    published: list[str] = []

    async def handle(message: MailReceived) -> None:
        consumed.add(message.message_id)
        if len(consumed) == 200 and set(published) <= consumed:
            all_in.set()

    consumer = cluster_bus.consumer("validator", {MailReceived: handle})
    await consumer.start()
    killed = node_number(connection)
    try:
        for i in range(200):
            if i == 60:
                cluster("kill", str(killed))
            message = mail(i + 1)
            await cluster_bus.publish(message)  # confirmed, across the failover too
            published.append(message.message_id)
        await asyncio.wait_for(all_in.wait(), 120)
    finally:
        await consumer.stop()
        cluster("start", str(killed))
    assert node_number(connection) != killed
    assert set(published) == consumed
    dead = await cluster_bus.connection.channel()
    dlq_name = cluster_bus.topology.dead_letter_queue("validator")
    dlq = await dead.declare_queue(dlq_name, passive=True)
    assert dlq.declaration_result.message_count == 0
    await dead.close()
