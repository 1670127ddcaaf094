"""Helpers of the fault tests: worker processes, broker restarts and loss and duplicate counts."""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from infra import local_broker

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
# Fields that legitimately differ between two deliveries of one input event.
VOLATILE_FIELDS = frozenset({"produced_at_ms"})
PUBLISHED_MARKER = b"published listing"
# Logged by aiokafka when a consumer group member receives its partitions.
ASSIGNED_MARKER = b"Setting newly assigned partitions"


@dataclass
class Worker:
    """A ``shopsynth worker`` subprocess and its log file."""

    process: subprocess.Popen
    log_path: Path

    def published_count(self) -> int:
        """Return how many ``published listing`` lines the worker has logged so far."""
        return self.log_count(PUBLISHED_MARKER)

    def log_count(self, marker: bytes) -> int:
        """Return how many times ``marker`` occurs in the worker's log so far."""
        return self.log_path.read_bytes().count(marker) if self.log_path.exists() else 0

    def log_tail(self, *, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def start_worker(*, bootstrap_servers: str, topic_prefix: str, log_path: Path, snapshot_dir: Path,
                 generation_batch_size: int = 8, similar_items_k: int = 10,
                 cold_min_interactions: int = 0, extra_env: dict[str, str] | None = None) -> Worker:
    """Start a worker without a generator, with short batch timeouts, logging to ``log_path`` (appended).

    ``cold_min_interactions`` defaults to 0, so the cold decision depends on the
    listing alone and two deliveries of one input must match. ``extra_env``
    adds or overrides variables, for example a generator factory.
    """
    # NOTE: with an interaction threshold, the cold decision reads the
    # interaction counts of the worker that processes the listing. A listing
    # redelivered after a kill or a rebalance can then carry a different cold
    # flag, cold_reasons and generated text under the same record_version.
    env = {name: value for name, value in os.environ.items() if name != "SHOPSYNTH_GENERATOR_DIR"}
    env.update({
        "SHOPSYNTH_BOOTSTRAP_SERVERS": bootstrap_servers,
        "SHOPSYNTH_TOPIC_PREFIX": topic_prefix,
        "SHOPSYNTH_SNAPSHOT_DIR": str(snapshot_dir),
        "SHOPSYNTH_GENERATION_BATCH_SIZE": str(generation_batch_size),
        "SHOPSYNTH_GENERATION_BATCH_TIMEOUT_S": "0.2",
        "SHOPSYNTH_BEHAVIOUR_BATCH_TIMEOUT_S": "0.2",
        "SHOPSYNTH_SIMILAR_ITEMS_K": str(similar_items_k),
        "SHOPSYNTH_COLD_MIN_INTERACTIONS": str(cold_min_interactions),
        # Faust 0.15 reads these two settings from the environment. The broker
        # drops a killed member after the session timeout (6 s is the lowest
        # that Kafka's default group.min.session.timeout.ms allows), so a
        # restarted worker gets its partitions back quickly.
        "BROKER_SESSION_TIMEOUT": "6",
        "BROKER_HEARTBEAT_INTERVAL": "1",
    })
    env.update(extra_env or {})
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "streams", "worker"], cwd=REPO_ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    logger.info("started worker pid=%d prefix=%s log=%s", process.pid, topic_prefix, log_path)
    return Worker(process=process, log_path=log_path)


def stop_worker(worker: Worker, *, timeout_s: float = 30.0) -> None:
    """Stop the worker with SIGTERM, then SIGKILL after ``timeout_s``."""
    if worker.process.poll() is not None:
        return
    worker.process.terminate()
    try:
        worker.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        logger.warning("worker pid=%d ignored SIGTERM for %.0f s; sending SIGKILL", worker.process.pid, timeout_s)
        worker.process.kill()
        worker.process.wait(timeout=timeout_s)


def kill_worker(worker: Worker) -> None:
    """SIGKILL the worker: no shutdown, no offset commit, no snapshot."""
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait(timeout=30)
    logger.info("killed worker pid=%d", worker.process.pid)


def wait_for_log(worker: Worker, *, marker: bytes = PUBLISHED_MARKER, at_least: int = 1,
                 timeout_s: float) -> int:
    """Wait until ``marker`` occurs ``at_least`` times in the worker's log; return the count seen.

    Raises
    ------
    AssertionError
        When the worker exits or the timeout passes first.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        count = worker.log_count(marker)
        if count >= at_least:
            return count
        assert worker.process.poll() is None, f"worker exited early; log tail:\n{worker.log_tail()}"
        assert time.monotonic() < deadline, (f"worker logged {marker!r} {count} < {at_least} times within "
                                             f"{timeout_s} s; log tail:\n{worker.log_tail()}")
        time.sleep(0.1)


@dataclass
class DeliveryReport:
    """Loss and duplicate counts of one output topic against its inputs."""

    inputs: int
    outputs: int
    lost: list[str] = field(default_factory=list)
    raw_duplicates: int = 0
    # (key, record_version) pairs whose deliveries differ, with the differing field names.
    conflicts: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"inputs={self.inputs} outputs={self.outputs} lost={len(self.lost)} "
                f"raw_duplicates={self.raw_duplicates} conflicts={len(self.conflicts)}")


def delivery_report(input_keys: Iterable[str], records: Iterable[dict], *, key_field: str) -> DeliveryReport:
    """Compare valid input keys with output records.

    A key is lost when no output record carries it. A raw duplicate is a record
    whose ``(key, record_version)`` was seen before. A conflict is a
    ``(key, record_version)`` whose deliveries differ in a field other than
    :data:`VOLATILE_FIELDS`, so dropping duplicates by key and version would
    lose information.
    """
    keys = list(input_keys)
    deliveries: dict[tuple[str, str], list[dict]] = defaultdict(list)
    count = 0
    for record in records:
        deliveries[(record[key_field], record["record_version"])].append(record)
        count += 1
    seen_keys = {key for key, _ in deliveries}
    report = DeliveryReport(inputs=len(keys), outputs=count,
                            lost=sorted(set(keys) - seen_keys),
                            raw_duplicates=count - len(deliveries))
    for pair, copies in deliveries.items():
        first = _stable_fields(copies[0])
        differing = sorted({name for copy in copies[1:] for name in set(first) | set(_stable_fields(copy))
                            if first.get(name) != copy.get(name)})
        if differing:
            report.conflicts[pair] = differing
    return report


def _stable_fields(record: dict) -> dict:
    return {name: value for name, value in record.items() if name not in VOLATILE_FIELDS}


# Ports below the default ephemeral port ranges of Linux (32768-60999,
# net.ipv4.ip_local_port_range) and of macOS and IANA (49152-65535), so that
# no outgoing connection takes the private broker's port while it is down.
PRIVATE_BROKER_PORTS = range(20000, 32000)
PRIVATE_BROKER_PORT_TRIES = 50


@dataclass(frozen=True)
class PrivateBroker:
    """An ``infra/kafka.sh`` broker that one test starts, restarts and deletes.

    It shares the jars folder of the session broker and has its own port and
    state folder.
    """

    port: int
    script_env: dict[str, str]
    instance_dir: Path

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def run_script(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``infra/kafka.sh`` with this broker's port and home."""
        return local_broker.run_kafka_script(*args, env=self.script_env)


def _ports_free(*ports: int) -> bool:
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def claim_private_broker() -> PrivateBroker:
    """Pick a free port pair on 127.0.0.1 and create the broker's empty state folder.

    The jars folder is the one that ``infra/kafka.sh env`` reports for the
    current environment, so a fetched broker is not fetched again. Creating
    the state folder claims the port against other test sessions that pick
    ports the same way.

    Raises
    ------
    local_broker.BrokerStartError
        When ``kafka.sh env`` fails or no free port pair is found.
    """
    kafka_home = Path(local_broker.script_env()["SHOPSYNTH_KAFKA_HOME"])
    kafka_home.mkdir(parents=True, exist_ok=True)
    rng = random.Random()
    for _ in range(PRIVATE_BROKER_PORT_TRIES):
        port = rng.choice(PRIVATE_BROKER_PORTS)
        # kafka.sh puts the controller on the next port.
        if not _ports_free(port, port + 1):
            continue
        env = {**os.environ, "SHOPSYNTH_KAFKA_HOME": str(kafka_home), "SHOPSYNTH_KAFKA_PORT": str(port)}
        printed = local_broker.run_kafka_script("env", env=env)
        if printed.returncode != 0:
            raise local_broker.BrokerStartError(f"infra/kafka.sh env failed:\n{printed.stderr}")
        paths = dict(line.split("=", 1) for line in printed.stdout.splitlines() if "=" in line)
        instance_dir = Path(paths["KAFKA_INSTANCE_DIR"])
        try:
            instance_dir.mkdir()
        except FileExistsError:
            continue
        return PrivateBroker(port=port, script_env=env, instance_dir=instance_dir)
    raise local_broker.BrokerStartError(
        f"found no free port pair on 127.0.0.1 in {PRIVATE_BROKER_PORT_TRIES} tries within "
        f"{PRIVATE_BROKER_PORTS.start}-{PRIVATE_BROKER_PORTS.stop - 1}")


def start_private_broker(broker: PrivateBroker) -> None:
    """Start the private broker with ``kafka.sh start`` and wait until it serves metadata.

    Raises
    ------
    local_broker.BrokerStartError
        When ``kafka.sh start`` fails. The message contains its output.
    """
    result = broker.run_script("start")
    if result.returncode != 0:
        raise local_broker.BrokerStartError(f"infra/kafka.sh start failed on port {broker.port} "
                                            f"(exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
    logger.info("started the private broker on %s", broker.bootstrap_servers)


def remove_private_broker(broker: PrivateBroker) -> list[str]:
    """Stop the private broker and delete its state folder, then return the error messages.

    The list is empty on success. Each error is also logged, so a caller that
    is already raising an exception loses none.
    """
    errors = []
    try:
        stopped = broker.run_script("stop")
    except subprocess.TimeoutExpired as error:
        errors.append(f"infra/kafka.sh stop timed out on port {broker.port}: {error}")
    else:
        if stopped.returncode != 0:
            errors.append(f"infra/kafka.sh stop failed on port {broker.port} (exit {stopped.returncode}):\n"
                          f"{stopped.stdout}\n{stopped.stderr}")
    try:
        shutil.rmtree(broker.instance_dir)
    except FileNotFoundError:
        pass
    except OSError as error:
        errors.append(f"deleting the private broker state {broker.instance_dir} failed: {error}")
    for error in errors:
        logger.error("%s", error)
    if not errors:
        logger.info("stopped the private broker on port %d and deleted %s", broker.port, broker.instance_dir)
    return errors


def restart_broker(broker: PrivateBroker) -> float:
    """Stop and start the private broker with ``kafka.sh``, and return how many seconds it was down."""
    started = time.monotonic()
    stopped = broker.run_script("stop")
    assert stopped.returncode == 0, f"kafka.sh stop failed:\n{stopped.stdout}\n{stopped.stderr}"
    restarted = broker.run_script("start")
    assert restarted.returncode == 0, f"kafka.sh start failed:\n{restarted.stdout}\n{restarted.stderr}"
    down_s = time.monotonic() - started
    logger.info("restarted the private broker on %s in %.1f s", broker.bootstrap_servers, down_s)
    return down_s


async def read_topic(bootstrap_servers: str, topic: str, *, timeout_s: float = 60.0) -> list[dict]:
    """Read every record of ``topic`` up to its end offsets at call time.

    Raises
    ------
    AssertionError
        When the end offsets are not reached within ``timeout_s``.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
        await admin.start()
        try:
            (description,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        partitions = [TopicPartition(topic, p["partition"]) for p in description["partitions"]]
        assert partitions, f"topic {topic} has no partitions"
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[dict] = []
        deadline = time.monotonic() + timeout_s
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"reading {topic} timed out after {timeout_s} s"
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for messages in batches.values():
                records.extend(orjson.loads(message.value) for message in messages)
        return records
    finally:
        await consumer.stop()
