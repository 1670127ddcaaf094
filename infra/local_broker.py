"""Shared use of the local broker of ``infra/kafka.sh`` by demos and test sessions.

Each user registers its process id in the broker's state folder. The broker
is started by the first user that finds it stopped, and stopped by the last
user to leave, but only when one of the users started it: a broker that a
person started by hand keeps running.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

KAFKA_SCRIPT = Path(__file__).resolve().parent / "kafka.sh"
# kafka.sh itself waits at most 60 s for the broker; a cold fetch adds Maven's time.
KAFKA_SCRIPT_TIMEOUT_S = 300


class BrokerStartError(RuntimeError):
    """``infra/kafka.sh start`` failed; the message carries its output."""


@dataclass(frozen=True)
class BrokerLease:
    bootstrap_servers: str
    session_file: Path


def run_kafka_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``infra/kafka.sh`` with ``args``; ``env`` replaces this process's environment."""
    return subprocess.run(["bash", str(KAFKA_SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=KAFKA_SCRIPT_TIMEOUT_S, check=False)


def script_env() -> dict[str, str]:
    """Return the paths and bootstrap servers that ``kafka.sh env`` prints."""
    result = run_kafka_script("env")
    if result.returncode != 0:
        raise BrokerStartError(f"infra/kafka.sh env failed:\n{result.stderr}")
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire() -> BrokerLease:
    """Register this process as a user of the local broker, starting it if needed.

    ``kafka.sh start`` is a no-op on a broker that is running, and it waits
    until a starting broker serves metadata, so it is always called.
    """
    env = script_env()
    instance_dir = Path(env["KAFKA_INSTANCE_DIR"])
    sessions_dir = instance_dir / "test-sessions"
    sessions_dir.mkdir(parents=True, exist_ok=True)
    session_file = sessions_dir / str(os.getpid())
    with file_lock(instance_dir / "test-sessions.lock"):
        session_file.touch()
        was_running = run_kafka_script("status").returncode == 0
        result = run_kafka_script("start")
        if result.returncode != 0:
            session_file.unlink(missing_ok=True)
            raise BrokerStartError(f"infra/kafka.sh start failed (exit {result.returncode}):\n"
                                   f"{result.stdout}\n{result.stderr}")
        if not was_running:
            pid_file = Path(env["KAFKA_PID_FILE"])
            (instance_dir / "started-by-tests").write_text(pid_file.read_text())
            logger.info("started the local broker: %s", result.stdout.strip())
    return BrokerLease(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], session_file=session_file)


def release(lease: BrokerLease) -> None:
    """Unregister this process, and stop the broker if no user is left and a user started it."""
    env = script_env()
    instance_dir = Path(env["KAFKA_INSTANCE_DIR"])
    sessions_dir = lease.session_file.parent
    started_marker = instance_dir / "started-by-tests"
    pid_file = Path(env["KAFKA_PID_FILE"])
    with file_lock(instance_dir / "test-sessions.lock"):
        lease.session_file.unlink(missing_ok=True)
        live_sessions = []
        for other in sessions_dir.iterdir():
            if other.name.isdigit() and pid_alive(int(other.name)):
                live_sessions.append(other.name)
            else:
                other.unlink(missing_ok=True)
        broker_pid = pid_file.read_text().strip() if pid_file.exists() else None
        started_by_users = started_marker.exists() and started_marker.read_text().strip() == broker_pid
        if live_sessions or not started_by_users:
            logger.info("leaving the local broker running: users=%s started_by_users=%s",
                        live_sessions, started_by_users)
            return
        result = run_kafka_script("stop")
        if result.returncode != 0:
            logger.error("infra/kafka.sh stop failed (exit %d): %s", result.returncode, result.stderr.strip())
        started_marker.unlink(missing_ok=True)
