"""End-to-end: a real worker process on the real broker, with a tiny ONNX generator.

Events go into ``product-created`` and ``user-behaviour``; the test reads
``listings-enriched``, ``recommendations`` and ``dead-letter`` back.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from infra.provision import provision_topics
from streams.feed import produce_events
from streams.outputs import collect
from streams.simulator import Simulator
from tests.generator_fixtures import smollm2_tokenizer_dir, tiny_checkpoint_dir, tiny_onnx_dir  # noqa: F401

pytestmark = pytest.mark.kafka

REPO_ROOT = Path(__file__).resolve().parents[1]
INVALID = [
    b"{not json",
    b'{"event_id": "bad-title", "item_id": "x1", "title": ""}',
    b"\xff\xfe invalid utf-8",
    orjson.dumps({"event_id": "bad-price", "item_id": "x2", "title": "Lamp", "price": -3}),
]
INVALID_BEHAVIOUR = [
    orjson.dumps({"event_id": "bad-type", "user_id": "u", "item_id": "i", "event_type": "teleport",
                  "timestamp_ms": 1_600_000_000_000}),
]


@pytest.fixture
def worker(kafka_bootstrap, topic_prefix, tiny_onnx_dir, tmp_path):
    asyncio.run(provision_topics(kafka_bootstrap, prefix=topic_prefix))
    env = {
        **os.environ,
        "SHOPSYNTH_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SHOPSYNTH_TOPIC_PREFIX": topic_prefix,
        "SHOPSYNTH_GENERATOR_DIR": str(tiny_onnx_dir),
        "SHOPSYNTH_MAX_NEW_TOKENS": "12",
        "SHOPSYNTH_REVIEW_MAX_NEW_TOKENS": "8",
        "SHOPSYNTH_BEHAVIOUR_BATCH_TIMEOUT_S": "0.5",
    }
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "streams", "worker"], cwd=REPO_ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    yield process, log_path
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def test_pipeline_end_to_end(worker, kafka_bootstrap, topic_prefix):
    process, log_path = worker
    simulator = Simulator(seed=3, n_items=24, n_users=8, cold_share=0.5)
    products = simulator.products()
    behaviour = simulator.behaviour(400)

    # Invalid events sit between valid ones: the agents must go on after them.
    events = [(topic_prefix + "product-created", "bad", raw) for raw in INVALID]
    events += [(topic_prefix + "product-created", p["item_id"], p) for p in products]
    events += [(topic_prefix + "user-behaviour", "bad", raw) for raw in INVALID_BEHAVIOUR]
    events += [(topic_prefix + "user-behaviour", b["user_id"], b) for b in behaviour]
    asyncio.run(produce_events(kafka_bootstrap, events))

    users = {b["user_id"] for b in behaviour}
    topics = [topic_prefix + name for name in ("listings-enriched", "recommendations", "dead-letter")]

    def done(collected):
        return (len(collected.latest_by_key(topics[0], "item_id")) >= len(products)
                and users <= set(collected.latest_by_key(topics[1], "user_id"))
                and len(collected.records[topics[2]]) >= len(INVALID) + len(INVALID_BEHAVIOUR))

    collected = asyncio.run(collect(kafka_bootstrap, topics, done=done, timeout_s=240))
    assert process.poll() is None, f"worker exited; log:\n{log_path.read_text()[-3000:]}"

    listings = collected.latest_by_key(topics[0], "item_id")
    assert set(listings) == {p["item_id"] for p in products}
    cold = [r for r in listings.values() if "thin_description" in r["cold_reasons"]]
    assert cold, "the simulator should create listings without descriptions"
    for record in cold:
        # Generation ran for every cold listing: either a gated text or a flag.
        assert "description" in record["quality"]
        assert record["description_synthetic"] or "description" in record["gate_rejected"]
    for record in listings.values():
        if record["enriched"]:
            assert record["generator_version"]
        assert record["record_version"].startswith(topic_prefix + "product-created/")

    recommendations = collected.latest_by_key(topics[1], "user_id")
    assert users <= set(recommendations)
    for record in recommendations.values():
        assert 0 < len(record["items"]) <= 10
        assert record["model_version"]

    dead = collected.records[topics[2]]
    originals = {base64.b64decode(record["original_bytes"]) for record in dead}
    assert set(INVALID + INVALID_BEHAVIOUR) <= originals
    assert all(record["reason"] for record in dead)
