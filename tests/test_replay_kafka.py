"""Replay into another prefix: a backfill writes the same enriched listings as the first run."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.provision import provision_topics
from streams.feed import produce_events
from streams.outputs import collect
from streams.replay import ReplayRange, replay
from streams.simulator import Simulator
from tests.generator_fixtures import smollm2_tokenizer_dir, tiny_checkpoint_dir, tiny_onnx_dir  # noqa: F401

pytestmark = pytest.mark.kafka

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPARED_FIELDS = ("title", "description", "description_synthetic", "reviews", "cold", "cold_reasons",
                   "enriched", "gate_rejected", "generator_version", "source_partition", "source_offset")


def run_worker_until(bootstrap, prefix, generator_dir, n_listings, log_path):
    env = {**os.environ, "SHOPSYNTH_BOOTSTRAP_SERVERS": bootstrap, "SHOPSYNTH_TOPIC_PREFIX": prefix,
           "SHOPSYNTH_GENERATOR_DIR": str(generator_dir), "SHOPSYNTH_MAX_NEW_TOKENS": "12",
           "SHOPSYNTH_REVIEW_MAX_NEW_TOKENS": "8", "SHOPSYNTH_SNAPSHOT_DIR": str(log_path.parent / prefix)}
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "streams", "worker"], cwd=REPO_ROOT, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        topic = prefix + "listings-enriched"
        collected = asyncio.run(collect(bootstrap, [topic], timeout_s=240,
                                        done=lambda c: len(c.latest_by_key(topic, "item_id")) >= n_listings))
        assert worker.poll() is None, f"worker exited; log tail:\n{log_path.read_text()[-3000:]}"
        return collected.latest_by_key(topic, "item_id")
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()


def test_backfill_matches_first_run(kafka_bootstrap, topic_prefix, tiny_onnx_dir, tmp_path):
    asyncio.run(provision_topics(kafka_bootstrap, prefix=topic_prefix))
    products = Simulator(seed=5, n_items=16, n_users=4, cold_share=0.6).products()
    events = [(topic_prefix + "product-created", p["item_id"], p) for p in products]
    asyncio.run(produce_events(kafka_bootstrap, events))

    first = run_worker_until(kafka_bootstrap, topic_prefix, tiny_onnx_dir, len(products), tmp_path / "first.log")

    backfill_prefix = topic_prefix + "backfill."
    copied = asyncio.run(replay(kafka_bootstrap, source_prefix=topic_prefix, target_prefix=backfill_prefix,
                                topics=("product-created",)))
    assert copied == {"product-created": len(products)}

    second = run_worker_until(kafka_bootstrap, backfill_prefix, tiny_onnx_dir, len(products),
                              tmp_path / "backfill.log")
    assert set(second) == set(first)
    assert any(record["description_synthetic"] for record in first.values())
    for item_id, record in first.items():
        for name in COMPARED_FIELDS:
            assert second[item_id][name] == record[name], f"{item_id}: {name} differs"


def test_replay_offset_range(kafka_bootstrap, topic_prefix):
    asyncio.run(provision_topics(kafka_bootstrap, prefix=topic_prefix))
    products = Simulator(seed=6, n_items=20, n_users=4).products()
    events = [(topic_prefix + "product-created", p["item_id"], p) for p in products]
    asyncio.run(produce_events(kafka_bootstrap, events))

    target = topic_prefix + "range."
    copied = asyncio.run(replay(kafka_bootstrap, source_prefix=topic_prefix, target_prefix=target,
                                replay_range=ReplayRange(from_offset=1, to_offset=3),
                                topics=("product-created",)))
    topic = target + "product-created"
    collected = asyncio.run(collect(kafka_bootstrap, [topic], timeout_s=20,
                                    done=lambda c: len(c.records[topic]) >= copied["product-created"]))
    # Offsets 1 and 2 of each partition that contains at least 3 records, fewer where it contains less.
    assert 0 < copied["product-created"] <= 2 * 4
    assert len(collected.records[topic]) == copied["product-created"]


def test_replay_rejects_same_prefix(kafka_bootstrap, topic_prefix):
    with pytest.raises(ValueError, match="own namespace"):
        asyncio.run(replay(kafka_bootstrap, source_prefix=topic_prefix, target_prefix=topic_prefix))


def test_replay_range_validation():
    with pytest.raises(ValueError, match="--to-offset"):
        ReplayRange(from_offset=5, to_offset=2).validate()
    with pytest.raises(ValueError, match="--from-timestamp-ms"):
        ReplayRange(from_timestamp_ms=-1).validate()
