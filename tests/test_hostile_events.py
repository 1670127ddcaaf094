"""A corpus of over 1,000 hostile events: each one is rejected, dead-lettered, and the worker lives."""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from infra.provision import provision_topics
from streams.outputs import collect
from streams.schemas import InvalidEvent, parse_product_created, parse_user_behaviour
from tests.hostile_corpus import BEHAVIOUR, PRODUCT, VALID_BEHAVIOUR, VALID_PRODUCT, hostile_events

REPO_ROOT = Path(__file__).resolve().parents[1]
PARSERS = {PRODUCT: parse_product_created, BEHAVIOUR: parse_user_behaviour}


def test_corpus_size_and_cases():
    events = hostile_events()
    assert len(events) >= 1000
    cases = {case for _, _, case in events}
    assert len(cases) >= 15


def test_valid_templates_parse():
    assert parse_product_created(orjson.dumps(VALID_PRODUCT)).item_id == "item-0"
    assert parse_user_behaviour(orjson.dumps(VALID_BEHAVIOUR)).event_type == "purchase"


def test_every_hostile_event_rejected():
    accepted = []
    for topic, raw, case in hostile_events():
        try:
            PARSERS[topic](raw)
        except InvalidEvent:
            continue
        accepted.append((topic, case, (raw or b"")[:120]))
    assert accepted == []


@pytest.mark.kafka
def test_hostile_events_dead_lettered(kafka_bootstrap, topic_prefix, tmp_path):
    asyncio.run(provision_topics(kafka_bootstrap, prefix=topic_prefix))
    env = {**os.environ, "SHOPSYNTH_BOOTSTRAP_SERVERS": kafka_bootstrap, "SHOPSYNTH_TOPIC_PREFIX": topic_prefix,
           "SHOPSYNTH_BEHAVIOUR_BATCH_TIMEOUT_S": "0.5"}
    env.pop("SHOPSYNTH_GENERATOR_DIR", None)
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "streams", "worker"], cwd=REPO_ROOT, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        events = hostile_events()
        # Close to the broker's 1 MB limit: the dead-letter record must keep only a prefix.
        huge = b'{"event_id": "' + b"h" * 900_000 + b'"}'
        events.append((PRODUCT, huge, "huge payload"))
        sentinel_product = {**VALID_PRODUCT, "event_id": "sentinel-p", "item_id": "sentinel-item",
                            "created_at_ms": int(time.time() * 1000)}
        sentinel_behaviour = {**VALID_BEHAVIOUR, "event_id": "sentinel-b", "user_id": "sentinel-user",
                              "item_id": "sentinel-item", "timestamp_ms": int(time.time() * 1000)}
        asyncio.run(_produce(kafka_bootstrap, topic_prefix, events, sentinel_product, sentinel_behaviour))

        topics = [topic_prefix + "dead-letter", topic_prefix + "listings-enriched", topic_prefix + "recommendations"]

        def done(collected):
            return (len(collected.records[topics[0]]) >= len(events)
                    and "sentinel-item" in collected.latest_by_key(topics[1], "item_id")
                    and "sentinel-user" in collected.latest_by_key(topics[2], "user_id"))

        collected = asyncio.run(collect(kafka_bootstrap, topics, done=done, timeout_s=240))
        assert worker.poll() is None, f"worker exited; log tail:\n{log_path.read_text()[-3000:]}"

        dead = collected.records[topics[0]]
        assert len(dead) == len(events)
        expected = collections.Counter((raw or b"")[:256 * 1024] for _, raw, _ in events)
        received = collections.Counter(base64.b64decode(record["original_bytes"]) for record in dead)
        assert received == expected
        [truncated] = [record for record in dead if record["original_truncated"]]
        assert truncated["original_size"] == len(huge)
        assert truncated["original_sha256"] == hashlib.sha256(huge).hexdigest()
        assert all(record["reason"] for record in dead)
        assert all(record["error_type"] == "InvalidEvent" for record in dead)
        # The valid events sent after the hostile ones came through.
        assert "sentinel-item" in collected.latest_by_key(topics[1], "item_id")
        assert "sentinel-user" in collected.latest_by_key(topics[2], "user_id")
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()


async def _produce(bootstrap, prefix, events, sentinel_product, sentinel_behaviour):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=2_000_000)
    await producer.start()
    try:
        for index, (topic, raw, _) in enumerate(events):
            await producer.send(prefix + topic, key=f"hostile-{index}".encode(), value=raw)
        await producer.send(prefix + PRODUCT, key=b"sentinel-item", value=orjson.dumps(sentinel_product))
        await producer.send(prefix + BEHAVIOUR, key=b"sentinel-user", value=orjson.dumps(sentinel_behaviour))
        await producer.flush()
    finally:
        await producer.stop()
