"""Shared fixtures: a running Kafka broker and a topic prefix per test."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
KAFKA_SCRIPT = REPO_ROOT / "infra" / "kafka.sh"
# kafka.sh itself waits at most 60 s for the broker; a cold fetch adds Maven's time.
KAFKA_SCRIPT_TIMEOUT_S = 300


def _reachable(bootstrap_servers: str, *, timeout_s: float = 2.0) -> bool:
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


def _run_kafka_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(KAFKA_SCRIPT), *args], capture_output=True, text=True,
                          timeout=KAFKA_SCRIPT_TIMEOUT_S, check=False)


def _kafka_script_env() -> dict[str, str]:
    result = _run_kafka_script("env")
    if result.returncode != 0:
        pytest.fail(f"infra/kafka.sh env failed:\n{result.stderr}")
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a running Kafka broker.

    Uses ``SHOPSYNTH_BOOTSTRAP_SERVERS`` when it is set and reachable, else
    the broker of ``infra/kafka.sh`` (port ``SHOPSYNTH_KAFKA_PORT``, default
    9092), which it starts when needed. Every test session that uses the
    script's broker registers itself in the broker's state folder. The last
    session to finish stops the broker, but only if a test session started
    it, so a broker that a developer started keeps running.
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

    script_env = _kafka_script_env()
    instance_dir = Path(script_env["KAFKA_INSTANCE_DIR"])
    pid_file = Path(script_env["KAFKA_PID_FILE"])
    sessions_dir = instance_dir / "test-sessions"
    started_marker = instance_dir / "started-by-tests"
    sessions_dir.mkdir(parents=True, exist_ok=True)
    session_file = sessions_dir / str(os.getpid())
    lock_path = instance_dir / "test-sessions.lock"

    with _file_lock(lock_path):
        session_file.touch()
        if _run_kafka_script("status").returncode != 0:
            result = _run_kafka_script("start")
            if result.returncode != 0:
                session_file.unlink(missing_ok=True)
                pytest.fail(f"infra/kafka.sh start failed (exit {result.returncode}):\n"
                            f"{result.stdout}\n{result.stderr}")
            started_marker.write_text(pid_file.read_text())
            logger.info("started the Kafka broker for tests: %s", result.stdout.strip())

    try:
        yield script_env["KAFKA_BOOTSTRAP_SERVERS"]
    finally:
        with _file_lock(lock_path):
            session_file.unlink(missing_ok=True)
            live_sessions = []
            for other in sessions_dir.iterdir():
                if other.name.isdigit() and _pid_alive(int(other.name)):
                    live_sessions.append(other.name)
                else:
                    other.unlink(missing_ok=True)
            broker_pid = pid_file.read_text().strip() if pid_file.exists() else None
            started_by_tests = (started_marker.exists()
                                and started_marker.read_text().strip() == broker_pid)
            if not live_sessions and started_by_tests:
                result = _run_kafka_script("stop")
                if result.returncode != 0:
                    logger.error("infra/kafka.sh stop failed (exit %d): %s",
                                 result.returncode, result.stderr.strip())
                started_marker.unlink(missing_ok=True)


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
