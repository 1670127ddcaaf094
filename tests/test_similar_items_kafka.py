"""A real worker process on the real broker: similar-items records and snapshots across a restart.

No generator is configured, so cold listings go out unenriched and the test stays fast.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from infra.provision import provision_topics
from streams import snapshots
from streams.feed import produce_events
from streams.outputs import collect
from streams.simulator import Simulator

pytestmark = pytest.mark.kafka

REPO_ROOT = Path(__file__).resolve().parents[1]


def start_worker(kafka_bootstrap, topic_prefix, snapshot_dir, log_path):
    env = {key: value for key, value in os.environ.items() if key != "SHOPSYNTH_GENERATOR_DIR"}
    env.update({
        "SHOPSYNTH_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SHOPSYNTH_TOPIC_PREFIX": topic_prefix,
        "SHOPSYNTH_SNAPSHOT_DIR": str(snapshot_dir),
        "SHOPSYNTH_SIMILAR_ITEMS_K": "5",
        "SHOPSYNTH_BEHAVIOUR_BATCH_TIMEOUT_S": "0.3",
        "SHOPSYNTH_GENERATION_BATCH_TIMEOUT_S": "0.2",
    })
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "streams", "worker"], cwd=REPO_ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)


def stop_worker(process):
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@pytest.fixture
def worker_env(kafka_bootstrap, topic_prefix, tmp_path):
    asyncio.run(provision_topics(kafka_bootstrap, prefix=topic_prefix))
    processes = []

    def start():
        process = start_worker(kafka_bootstrap, topic_prefix, tmp_path / "snapshots", tmp_path / "worker.log")
        processes.append(process)
        return process

    yield start, tmp_path
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_similar_items_and_restart(worker_env, kafka_bootstrap, topic_prefix):
    start, tmp_path = worker_env
    log_path = tmp_path / "worker.log"
    simulator = Simulator(seed=5, n_items=20, n_users=6, cold_share=0.5)
    products = simulator.products()
    behaviour = simulator.behaviour(150)
    item_ids = {p["item_id"] for p in products}
    users = {b["user_id"] for b in behaviour}
    similar_topic = topic_prefix + "similar-items"
    recommendations_topic = topic_prefix + "recommendations"

    worker = start()
    events = [(topic_prefix + "product-created", p["item_id"], p) for p in products]
    events += [(topic_prefix + "user-behaviour", b["user_id"], b) for b in behaviour]
    asyncio.run(produce_events(kafka_bootstrap, events))

    def first_done(collected):
        by_listing = {r["item_id"] for r in collected.records[similar_topic] if r["trigger"] == "listing"}
        return item_ids <= by_listing and users <= set(collected.latest_by_key(recommendations_topic, "user_id"))

    collected = asyncio.run(collect(kafka_bootstrap, [similar_topic, recommendations_topic],
                                    done=first_done, timeout_s=120))
    assert worker.poll() is None, f"worker exited; log:\n{log_path.read_text()[-3000:]}"
    similar = collected.records[similar_topic]
    assert item_ids <= {r["item_id"] for r in similar if r["trigger"] == "listing"}
    assert {r["trigger"] for r in similar} == {"listing", "behaviour"}
    for record in similar:
        assert 0 < len(record["items"]) <= 5
        assert record["item_id"] not in {entry["item_id"] for entry in record["items"]}
        scores = [entry["score"] for entry in record["items"]]
        assert scores == sorted(scores, reverse=True)
        assert record["model_version"]
        assert record["produced_at_ms"] > 0
    for record in similar:
        if record["trigger"] == "listing":
            assert record["record_version"].startswith(topic_prefix + "product-created/")

    last_version = max(int(r["model_version"]) for r in collected.records[recommendations_topic])
    assert stop_worker(worker) == 0, log_path.read_text()[-3000:]
    saved = snapshots.list_snapshots(tmp_path / "snapshots")
    assert saved, f"no snapshot written on shutdown; log:\n{log_path.read_text()[-3000:]}"
    restored = snapshots.load_snapshot(saved[-1])
    assert int(restored.recommender.version) >= last_version
    assert item_ids <= set(restored.recommender.item_index)

    # A restarted worker continues from the snapshot: its model version counts on.
    worker = start()
    burst_items = sorted(item_ids)[:3]
    burst = [{"event_id": f"burst-{n}", "user_id": "burst-user", "item_id": burst_items[n % 3],
              "event_type": "purchase", "timestamp_ms": behaviour[-1]["timestamp_ms"] + n, "weight": None,
              "category": None} for n in range(6)]
    asyncio.run(produce_events(kafka_bootstrap,
                               [(topic_prefix + "user-behaviour", "burst-user", b) for b in burst]))

    def burst_done(collected):
        return "burst-user" in collected.latest_by_key(recommendations_topic, "user_id")

    collected = asyncio.run(collect(kafka_bootstrap, [recommendations_topic], done=burst_done, timeout_s=90))
    record = collected.latest_by_key(recommendations_topic, "user_id").get("burst-user")
    assert record is not None, f"no recommendation after restart; log:\n{log_path.read_text()[-3000:]}"
    assert int(record["model_version"]) > int(restored.recommender.version)
    assert not set(burst_items) & {entry["item_id"] for entry in record["items"]}
    assert "restored snapshot" in log_path.read_text()
    assert stop_worker(worker) == 0
