"""Shared fixtures: a running Kafka broker and a topic prefix per test."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from infra import local_broker

logger = logging.getLogger(__name__)


def _reachable(bootstrap_servers: str, *, timeout_s: float = 2.0) -> bool:
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a running Kafka broker.

    Uses ``SHOPSYNTH_BOOTSTRAP_SERVERS`` when it is set and reachable, else
    the broker of ``infra/kafka.sh`` (port ``SHOPSYNTH_KAFKA_PORT``, default
    9092), which it starts when needed. The broker is shared with other test
    sessions and demos through ``infra.local_broker``: the last user to
    finish stops it, and only if a user started it.
    """
    configured = os.environ.get("SHOPSYNTH_BOOTSTRAP_SERVERS", "").strip()
    if configured:
        if _reachable(configured):
            yield configured
            return
        logger.warning("SHOPSYNTH_BOOTSTRAP_SERVERS=%s is not reachable; using infra/kafka.sh instead",
                       configured)
    if shutil.which("java") is None:
        pytest.skip("no Kafka broker: java is not installed, and SHOPSYNTH_BOOTSTRAP_SERVERS "
                    "is unset or unreachable")
    try:
        lease = local_broker.acquire()
    except local_broker.BrokerStartError as error:
        pytest.fail(str(error))
    try:
        yield lease.bootstrap_servers
    finally:
        local_broker.release(lease)


async def _delete_topics_with_prefix(bootstrap_servers: str, prefix: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="shopsynth-tests")
    await admin.start()
    try:
        prefixed_topics = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if prefixed_topics:
            await admin.delete_topics(prefixed_topics)
        return prefixed_topics
    finally:
        await admin.close()


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """Topic name prefix unique to one test, such as ``"t-1a2b3c4d."``.

    When the test also uses ``kafka_bootstrap``, the topics whose names start
    with the prefix are deleted after the test.
    """
    prefix = f"t-{uuid.uuid4().hex[:8]}."
    yield prefix
    if "kafka_bootstrap" not in request.fixturenames:
        return
    bootstrap_servers = request.getfixturevalue("kafka_bootstrap")
    try:
        asyncio.run(_delete_topics_with_prefix(bootstrap_servers, prefix))
    except (KafkaError, OSError, asyncio.TimeoutError) as error:
        logger.warning("deleting the topics of prefix %s failed: %s", prefix, error)
