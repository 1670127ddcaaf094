"""Tests of infra/: topic provisioning on a real broker and the kafka.sh script."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from infra.provision import (
    TopicMismatchError,
    load_topic_specs,
    provision,
    provision_topics,
    topic_names,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
KAFKA_SCRIPT = REPO_ROOT / "infra" / "kafka.sh"

# What the stream processor relies on, written out here rather than read from
# topics.toml, so that an edit of the file that breaks it fails these tests.
EXPECTED_CLEANUP_POLICY = {
    "product-created": "delete",
    "user-behaviour": "delete",
    "listings-enriched": "compact",
    "recommendations": "compact",
    "similar-items": "compact",
    "dead-letter": "delete",
    "enrichment-retry": "delete",
}
EXPECTED_PARTITIONS = 4


async def _describe(bootstrap_servers: str, topics: list[str], *,
                    config_names: tuple[str, ...] = ("cleanup.policy", "retention.ms"),
                    ) -> dict[str, dict]:
    """Return {topic: {"partitions": int, config name: value}} for existing topics."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        described = {entry["topic"]: {"partitions": len(entry["partitions"])}
                     for entry in await admin.describe_topics(topics)}
        resources = [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics]
        for response in await admin.describe_configs(resources):
            for resource in response.to_object()["resources"]:
                for entry in resource["config_entries"]:
                    if entry["config_names"] in config_names:
                        described[resource["resource_name"]][entry["config_names"]] = entry["config_value"]
        return described
    finally:
        await admin.close()


async def _list_topics(bootstrap_servers: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def _create_topic(bootstrap_servers: str, name: str, *, partitions: int,
                        configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
        assert response.to_object()["topic_errors"][0]["error_code"] == 0
    finally:
        await admin.close()


@pytest.mark.kafka
def test_provision_creates_declared_topics(kafka_bootstrap, topic_prefix):
    names = asyncio.run(provision_topics(kafka_bootstrap, prefix=topic_prefix))

    assert names == {name: topic_prefix + name for name in EXPECTED_CLEANUP_POLICY}
    assert names == topic_names(topic_prefix)
    described = asyncio.run(_describe(kafka_bootstrap, list(names.values())))
    for logical_name, real_name in names.items():
        assert described[real_name]["partitions"] == EXPECTED_PARTITIONS, real_name
        assert described[real_name]["cleanup.policy"] == EXPECTED_CLEANUP_POLICY[logical_name], real_name
    dead_letter = described[names["dead-letter"]]
    assert dead_letter["retention.ms"] == "1209600000"


async def _wait_for_topics(bootstrap_servers: str, topics: set[str], *, timeout_s: float = 15.0) -> set[str]:
    """Poll the topic list until it contains ``topics``, then return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    listed = await _list_topics(bootstrap_servers)
    while not topics <= listed and loop.time() < deadline:
        await asyncio.sleep(0.2)
        listed = await _list_topics(bootstrap_servers)
    return listed


@pytest.mark.kafka
def test_provision_second_run_is_noop(kafka_bootstrap, topic_prefix):
    first = asyncio.run(provision(kafka_bootstrap, prefix=topic_prefix))
    listed_after_first = asyncio.run(_list_topics(kafka_bootstrap))
    second = asyncio.run(provision(kafka_bootstrap, prefix=topic_prefix))
    listed_after_second = asyncio.run(_list_topics(kafka_bootstrap))
    topics_after_first = {name for name in listed_after_first if name.startswith(topic_prefix)}
    topics_after_second = {name for name in listed_after_second if name.startswith(topic_prefix)}

    assert sorted(first.created) == sorted(first.topics.values())
    assert first.existing == []
    assert second.created == []
    assert sorted(second.existing) == sorted(first.topics.values())
    assert second.topics == first.topics
    assert topics_after_first == set(first.topics.values())
    assert topics_after_second == topics_after_first


@pytest.mark.kafka
def test_round_trip_on_provisioned_topic(kafka_bootstrap, topic_prefix):
    names = asyncio.run(provision_topics(kafka_bootstrap, prefix=topic_prefix))
    topic = names["product-created"]
    records = [(f"item-{index}".encode(), f'{{"n": {index}}}'.encode()) for index in range(5)]

    async def round_trip() -> tuple[dict[bytes, int], list]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            sent_partitions = {}
            for key, value in records:
                metadata = await producer.send_and_wait(topic, value=value, key=key)
                sent_partitions[key] = metadata.partition
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap,
                                    group_id=f"{topic_prefix}group-{uuid.uuid4().hex[:6]}",
                                    auto_offset_reset="earliest")
        await consumer.start()
        received = []
        try:
            deadline = asyncio.get_running_loop().time() + 30.0
            while len(received) < len(records) and asyncio.get_running_loop().time() < deadline:
                batches = await consumer.getmany(timeout_ms=1000)
                for batch in batches.values():
                    received.extend(batch)
        finally:
            await consumer.stop()
        return sent_partitions, received

    sent_partitions, received = asyncio.run(round_trip())

    assert sorted((message.key, message.value) for message in received) == sorted(records)
    for message in received:
        assert message.partition == sent_partitions[message.key], message.key


@pytest.mark.kafka
def test_provision_rejects_partition_mismatch(kafka_bootstrap, topic_prefix):
    wrong_topic = topic_prefix + "listings-enriched"
    asyncio.run(_create_topic(kafka_bootstrap, wrong_topic, partitions=2,
                              configs={"cleanup.policy": "delete"}))
    asyncio.run(_wait_for_topics(kafka_bootstrap, {wrong_topic}))

    with pytest.raises(TopicMismatchError) as raised:
        asyncio.run(provision_topics(kafka_bootstrap, prefix=topic_prefix))

    message = str(raised.value)
    assert wrong_topic in message
    assert "2 partitions" in message
    assert "cleanup.policy=delete" in message
    created = {name for name in asyncio.run(_list_topics(kafka_bootstrap)) if name.startswith(topic_prefix)}
    assert created == {wrong_topic}


@pytest.mark.kafka
def test_provision_rejects_cleanup_policy_mismatch(kafka_bootstrap, topic_prefix):
    wrong_topic = topic_prefix + "recommendations"
    asyncio.run(_create_topic(kafka_bootstrap, wrong_topic, partitions=EXPECTED_PARTITIONS,
                              configs={"cleanup.policy": "delete"}))
    asyncio.run(_wait_for_topics(kafka_bootstrap, {wrong_topic}))

    with pytest.raises(TopicMismatchError, match="cleanup.policy=delete, but compact is declared"):
        asyncio.run(provision_topics(kafka_bootstrap, prefix=topic_prefix))


@pytest.mark.kafka
def test_script_broker_defaults(kafka_bootstrap):
    port = os.environ.get("SHOPSYNTH_KAFKA_PORT", "9092")
    if kafka_bootstrap != f"127.0.0.1:{port}":
        pytest.skip(f"the broker at {kafka_bootstrap} was not started by infra/kafka.sh")
    expected = {
        "auto.create.topics.enable": "true",
        "num.partitions": "4",
        "group.initial.rebalance.delay.ms": "0",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
    }

    async def broker_configs() -> dict[str, str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            responses = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")])
        finally:
            await admin.close()
        entries = responses[0].to_object()["resources"][0]["config_entries"]
        return {entry["config_names"]: entry["config_value"] for entry in entries}

    configs = asyncio.run(broker_configs())
    status = subprocess.run(["bash", str(KAFKA_SCRIPT), "status"], capture_output=True, text=True,
                            timeout=30, check=False)

    for name, value in expected.items():
        assert configs.get(name) == value, name
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"bootstrap 127.0.0.1:{port}" in status.stdout


def test_load_topic_specs_rejects_invalid_entries(tmp_path):
    cases = {
        "missing field": ('name = "a"\nrole = "input"\n', "missing the field(s) key"),
        "config not a string": (
            'name = "a"\nrole = "input"\nkey = "k"\nvalue = "v"\npurpose = "p"\n'
            'partitions = 4\nreplication_factor = 1\nconfigs = { "retention.ms" = 5 }\n',
            "must be a string"),
        "zero partitions": (
            'name = "a"\nrole = "input"\nkey = "k"\nvalue = "v"\npurpose = "p"\n'
            'partitions = 0\nreplication_factor = 1\nconfigs = {}\n',
            "partitions must be a positive integer"),
        "bad role": (
            'name = "a"\nrole = "sink"\nkey = "k"\nvalue = "v"\npurpose = "p"\n'
            'partitions = 4\nreplication_factor = 1\nconfigs = {}\n',
            "invalid role 'sink'"),
        "illegal name": (
            'name = "a/b"\nrole = "input"\nkey = "k"\nvalue = "v"\npurpose = "p"\n'
            'partitions = 4\nreplication_factor = 1\nconfigs = {}\n',
            "invalid topic name 'a/b'"),
    }
    for case, (body, expected_message) in cases.items():
        spec_path = tmp_path / f"{case.replace(' ', '-')}.toml"
        spec_path.write_text("[[topic]]\n" + body)
        with pytest.raises(ValueError, match=re.escape(expected_message)):
            load_topic_specs(spec_path)


def test_topic_names_rejects_invalid_prefix():
    assert topic_names("t-1.")["dead-letter"] == "t-1.dead-letter"
    with pytest.raises(ValueError, match="invalid topic name"):
        topic_names("bad prefix ")
    with pytest.raises(ValueError, match="invalid topic name"):
        topic_names("x" * 240)


def test_declared_topics_document_key_and_purpose():
    specs = load_topic_specs()

    assert [spec.name for spec in specs] == list(EXPECTED_CLEANUP_POLICY)
    for spec in specs:
        assert spec.key.strip(), spec.name
        assert spec.purpose.strip(), spec.name
        assert spec.replication_factor == 1, spec.name


def test_kafka_script_rejects_busy_port(tmp_path):
    real_lib = REPO_ROOT / "var" / "kafka" / "lib"
    if os.environ.get("SHOPSYNTH_KAFKA_HOME"):
        real_lib = Path(os.environ["SHOPSYNTH_KAFKA_HOME"]) / "lib"
    if shutil.which("java") is None or not (real_lib / ".pom.sha256").exists():
        pytest.skip("java missing or broker jars not fetched: run infra/kafka.sh fetch")
    (tmp_path / "lib").symlink_to(real_lib)

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "SHOPSYNTH_KAFKA_HOME": str(tmp_path), "SHOPSYNTH_KAFKA_PORT": str(port)}
        status = subprocess.run(["bash", str(KAFKA_SCRIPT), "status"], env=env, capture_output=True,
                                text=True, timeout=30, check=False)
        start = subprocess.run(["bash", str(KAFKA_SCRIPT), "start"], env=env, capture_output=True,
                               text=True, timeout=60, check=False)

    assert status.returncode == 1
    assert "not running" in status.stdout
    assert start.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in start.stderr
    assert not (tmp_path / f"broker-{port}" / "kafka.pid").exists()
