"""Generator faults on the real broker: failures with retries, slow generation, SIGTERM with a large state.

The workers run the deterministic generator of :mod:`tests.fake_generators`,
which can be slowed down or broken from the test. Every test compares the
listings fed into ``product-created`` with ``listings-enriched``: no listing
may be lost, and two deliveries of one ``(item_id, record_version)`` must
carry the same content.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from infra.provision import provision_topics
from streams.feed import produce_events
from streams.simulator import Simulator
from tests.fault_helpers import (
    ASSIGNED_MARKER,
    delivery_report,
    read_topic,
    start_worker,
    stop_worker,
    wait_for_log,
)

STARTUP_TIMEOUT_S = 60.0
FACTORY = "tests.fake_generators:create"


def cold_listings(prefix: str, *, seed: int, n_items: int) -> tuple[list, list[str]]:
    """Return (events, item ids) of listings without description or reviews, so each one is cold."""
    products = Simulator(seed=seed, n_items=n_items, n_users=4).products()
    for product in products:
        product["description"] = None
        product["review_count"] = 0
    return ([(prefix + "product-created", product["item_id"], product) for product in products],
            [product["item_id"] for product in products])


def wait_until(predicate, *, timeout_s: float, goal: str, worker=None) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        tail = worker.log_tail() if worker is not None else ""
        assert time.monotonic() < deadline, f"{goal} not reached within {timeout_s} s; worker log tail:\n{tail}"
        time.sleep(0.5)


def latest_by_item(records: list[dict]) -> dict[str, dict]:
    """Return the newest record per item: the highest enrichment attempt, as a consumer keeps it."""
    latest: dict[str, dict] = {}
    for record in records:
        current = latest.get(record["item_id"])
        if current is None or record["enrichment_attempt"] >= current["enrichment_attempt"]:
            latest[record["item_id"]] = record
    return latest


@pytest.mark.kafka
@pytest.mark.slow
def test_failed_generation_is_retried(kafka_bootstrap, topic_prefix, tmp_path):
    asyncio.run(provision_topics(kafka_bootstrap, prefix=topic_prefix))
    events, item_ids = cold_listings(topic_prefix, seed=21, n_items=24)
    broken = tmp_path / "generator-broken"
    broken.write_text("on")
    worker = start_worker(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix,
                          log_path=tmp_path / "worker.log", snapshot_dir=tmp_path / "snapshots",
                          extra_env={"SHOPSYNTH_GENERATOR_FACTORY": FACTORY,
                                     "SHOPSYNTH_TEST_GENERATOR_BROKEN_FLAG": str(broken),
                                     "SHOPSYNTH_GENERATION_RETRIES": "2",
                                     "SHOPSYNTH_GENERATION_RETRY_DELAY_S": "10"})
    topic = topic_prefix + "listings-enriched"
    try:
        asyncio.run(produce_events(kafka_bootstrap, events, show_progress=False))
        # Attempt 0 fails for every listing: each is published flagged with a retry queued.
        wait_for_log(worker, at_least=len(item_ids), timeout_s=STARTUP_TIMEOUT_S)
        broken.unlink()  # the first retries are due 10 s after the failures
        first = asyncio.run(read_topic(kafka_bootstrap, topic))
        assert {r["item_id"] for r in first if r["enrichment_attempt"] == 0} == set(item_ids)
        failed = [r for r in first if r["enrichment_attempt"] == 0]
        assert all(r["retry_scheduled"] for r in failed)
        assert not any(r["enriched"] for r in failed)
        assert all(r["enrichment_error"] for r in failed)

        def all_retried() -> bool:
            latest = latest_by_item(asyncio.run(read_topic(kafka_bootstrap, topic)))
            return len(latest) == len(item_ids) and all(r["enrichment_attempt"] == 1 for r in latest.values())

        wait_until(all_retried, timeout_s=90, goal="every listing enriched again by a retry", worker=worker)
        assert worker.process.poll() is None
    finally:
        stop_worker(worker)

    records = asyncio.run(read_topic(kafka_bootstrap, topic))
    report = delivery_report(item_ids, records, key_field="item_id")
    print(f"\n[generation-retry] listings-enriched {report.summary()}")
    assert report.lost == []
    assert report.conflicts == {}
    latest = latest_by_item(records)
    assert all(r["record_version"].endswith(f"/retry-{r['enrichment_attempt']}") for r in latest.values())
    # Generation ran on the retry; the gates may still reject a text, so "enriched" is not required of all.
    assert all(r["enrichment_error"] is None and not r["retry_scheduled"] for r in latest.values())
    assert sum(r["enriched"] for r in latest.values()) >= len(item_ids) // 2


@pytest.mark.kafka
@pytest.mark.slow
def test_rebalance_during_slow_generation_loses_no_listing(kafka_bootstrap, topic_prefix, tmp_path):
    asyncio.run(provision_topics(kafka_bootstrap, prefix=topic_prefix))
    events, item_ids = cold_listings(topic_prefix, seed=22, n_items=160)
    half = len(events) // 2
    asyncio.run(produce_events(kafka_bootstrap, events[:half], show_progress=False))
    slow = {"SHOPSYNTH_GENERATOR_FACTORY": FACTORY, "SHOPSYNTH_TEST_GENERATION_DELAY_S": "2",
            "SHOPSYNTH_GENERATION_TIMEOUT_S": "60"}
    first = start_worker(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix,
                         log_path=tmp_path / "first.log", snapshot_dir=tmp_path / "first-snapshots",
                         extra_env=slow)
    second = None
    try:
        wait_for_log(first, at_least=1, timeout_s=STARTUP_TIMEOUT_S)
        joined = time.monotonic()
        second = start_worker(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix,
                              log_path=tmp_path / "second.log", snapshot_dir=tmp_path / "second-snapshots",
                              extra_env=slow)
        wait_for_log(second, marker=ASSIGNED_MARKER, timeout_s=STARTUP_TIMEOUT_S)
        rebalance_s = time.monotonic() - joined
        asyncio.run(produce_events(kafka_bootstrap, events[half:], show_progress=False))
        wait_for_log(second, at_least=1, timeout_s=STARTUP_TIMEOUT_S)
        left = time.monotonic()
        stop_worker(second)
        leave_s = time.monotonic() - left

        def all_published() -> bool:
            records = asyncio.run(read_topic(kafka_bootstrap, topic_prefix + "listings-enriched"))
            return set(item_ids) <= {record["item_id"] for record in records}

        wait_until(all_published, timeout_s=240, goal="every listing published", worker=first)
        assert first.process.poll() is None, f"first worker exited; log tail:\n{first.log_tail()}"
    finally:
        if second is not None:
            stop_worker(second)
        stop_worker(first)

    records = asyncio.run(read_topic(kafka_bootstrap, topic_prefix + "listings-enriched"))
    report = delivery_report(item_ids, records, key_field="item_id")
    print(f"\n[slow-generation-rebalance] join_s={rebalance_s:.1f} leave_s={leave_s:.1f} "
          f"listings-enriched {report.summary()}")
    assert report.lost == []
    assert report.conflicts == {}
    # Generation ran in the executor, so the join and the SIGTERM of the second worker were not held up
    # by the 2 s generation calls queued behind each other.
    assert leave_s < 30
    # Every generation finished in time; the fake's English text fails the language gate on Chinese listings.
    latest = latest_by_item(records)
    assert all(record["enrichment_error"] is None for record in latest.values())
    assert sum(record["enriched"] for record in latest.values()) >= len(item_ids) // 2


async def _set_topic_config(bootstrap_servers: str, topic: str, configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)])
    finally:
        await admin.close()


@pytest.mark.kafka
def test_rejected_output_goes_to_dead_letter(kafka_bootstrap, topic_prefix, tmp_path):
    asyncio.run(provision_topics(kafka_bootstrap, prefix=topic_prefix))
    # AlterConfigs replaces every dynamic config of the topic, so the cleanup policy is repeated.
    asyncio.run(_set_topic_config(kafka_bootstrap, topic_prefix + "listings-enriched",
                                  {"cleanup.policy": "compact", "max.message.bytes": "4000"}))
    events, item_ids = cold_listings(topic_prefix, seed=23, n_items=12)
    big = events[0][2]
    big["description"] = "A sturdy everyday pick. " * 250  # about 6 KB, over the topic's 4,000 bytes
    worker = start_worker(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix,
                          log_path=tmp_path / "worker.log", snapshot_dir=tmp_path / "snapshots")
    try:
        asyncio.run(produce_events(kafka_bootstrap, events, show_progress=False))
        wait_for_log(worker, at_least=len(item_ids) - 1, timeout_s=STARTUP_TIMEOUT_S)
        wait_for_log(worker, marker=b"dead-lettered", timeout_s=STARTUP_TIMEOUT_S)
        assert worker.process.poll() is None
    finally:
        stop_worker(worker)
    published = {r["item_id"] for r in asyncio.run(read_topic(kafka_bootstrap, topic_prefix + "listings-enriched"))}
    assert published == set(item_ids) - {big["item_id"]}
    dead = asyncio.run(read_topic(kafka_bootstrap, topic_prefix + "dead-letter"))
    assert [record["error_type"] for record in dead] == ["OutputRejected"]
    assert "rejected the record" in dead[0]["reason"]


@pytest.mark.kafka
@pytest.mark.slow
def test_sigterm_with_large_state_loses_nothing(kafka_bootstrap, topic_prefix, tmp_path):
    """SIGTERM a worker with a large recommender, then restart it from its snapshot."""
    asyncio.run(provision_topics(kafka_bootstrap, prefix=topic_prefix))
    simulator = Simulator(seed=24, n_items=3_000, n_users=2_000)
    products = simulator.products()
    behaviour = simulator.behaviour(40_000)
    item_ids = [product["item_id"] for product in products]
    user_ids = {event["user_id"] for event in behaviour}
    events = [(topic_prefix + "product-created", product["item_id"], product) for product in products]
    events += [(topic_prefix + "user-behaviour", event["user_id"], event) for event in behaviour]
    asyncio.run(produce_events(kafka_bootstrap, events, show_progress=False))
    snapshot_dir = tmp_path / "snapshots"
    options = dict(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix, snapshot_dir=snapshot_dir,
                   generation_batch_size=64, similar_items_k=0)

    worker = start_worker(log_path=tmp_path / "worker-1.log", **options)
    try:
        # Stop in the middle: after 20 micro-batches of behaviour, well before the 40,000 events are done.
        wait_for_log(worker, marker=b"recommender batch", at_least=20, timeout_s=180)
    finally:
        stopping = time.monotonic()
        stop_worker(worker)
    stop_s = time.monotonic() - stopping
    assert worker.log_count(b"saved snapshot") >= 1, worker.log_tail()
    batches_before = worker.log_count(b"recommender batch")

    restarted = start_worker(log_path=tmp_path / "worker-2.log", **options)
    try:
        wait_for_log(restarted, marker=b"restored snapshot", timeout_s=STARTUP_TIMEOUT_S)

        def everything_out() -> bool:
            listings = asyncio.run(read_topic(kafka_bootstrap, topic_prefix + "listings-enriched"))
            recommendations = asyncio.run(read_topic(kafka_bootstrap, topic_prefix + "recommendations"))
            return (set(item_ids) <= {r["item_id"] for r in listings}
                    and user_ids <= {r["user_id"] for r in recommendations})

        wait_until(everything_out, timeout_s=300, goal="every listing and user published", worker=restarted)
    finally:
        stop_worker(restarted)

    listings = asyncio.run(read_topic(kafka_bootstrap, topic_prefix + "listings-enriched"))
    report = delivery_report(item_ids, listings, key_field="item_id")
    recommendations = asyncio.run(read_topic(kafka_bootstrap, topic_prefix + "recommendations"))
    print(f"\n[sigterm-large-state] stop_s={stop_s:.1f} behaviour batches before stop={batches_before} "
          f"listings-enriched {report.summary()} recommendation records={len(recommendations)} "
          f"users={len(user_ids)}")
    assert stop_s < 30, f"SIGTERM took {stop_s:.1f} s"
    assert worker.process.returncode is not None and worker.process.returncode != -9
    assert report.lost == []
    assert report.conflicts == {}


@pytest.mark.kafka
def test_sigterm_with_stuck_generation_exits(kafka_bootstrap, topic_prefix, tmp_path):
    asyncio.run(provision_topics(kafka_bootstrap, prefix=topic_prefix))
    events, item_ids = cold_listings(topic_prefix, seed=25, n_items=4)
    worker = start_worker(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix,
                          log_path=tmp_path / "worker.log", snapshot_dir=tmp_path / "snapshots",
                          extra_env={"SHOPSYNTH_GENERATOR_FACTORY": FACTORY,
                                     "SHOPSYNTH_TEST_GENERATION_DELAY_S": "120",
                                     "SHOPSYNTH_GENERATION_TIMEOUT_S": "2",
                                     "SHOPSYNTH_GENERATION_RETRIES": "0"})
    try:
        asyncio.run(produce_events(kafka_bootstrap, events, show_progress=False))
        wait_for_log(worker, at_least=len(item_ids), timeout_s=STARTUP_TIMEOUT_S)
    finally:
        stopping = time.monotonic()
        stop_worker(worker)
    stop_s = time.monotonic() - stopping
    records = asyncio.run(read_topic(kafka_bootstrap, topic_prefix + "listings-enriched"))
    print(f"\n[sigterm-stuck-generation] stop_s={stop_s:.1f} published={len(records)}")
    assert {record["item_id"] for record in records} == set(item_ids)
    assert all("timed out" in record["enrichment_error"] for record in records)
    assert stop_s < 25, f"SIGTERM took {stop_s:.1f} s with a generation call still running"
    assert worker.log_count(b"exiting without waiting") == 1


@pytest.mark.kafka
def test_invalid_retry_request_goes_to_dead_letter(kafka_bootstrap, topic_prefix, tmp_path):
    asyncio.run(provision_topics(kafka_bootstrap, prefix=topic_prefix))
    _, item_ids = cold_listings(topic_prefix, seed=26, n_items=1)
    listing = Simulator(seed=26, n_items=1, n_users=4).products()[0]
    del listing["event_id"]
    request = {"listing": listing, "source": {"topic": "product-created", "partition": 0, "offset": 0},
               "attempt": 1, "due_ms": 0, "reason": "test"}
    worker = start_worker(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix,
                          log_path=tmp_path / "worker.log", snapshot_dir=tmp_path / "snapshots",
                          extra_env={"SHOPSYNTH_GENERATOR_FACTORY": FACTORY})
    try:
        asyncio.run(produce_events(kafka_bootstrap, [(topic_prefix + "enrichment-retry", item_ids[0], request)],
                                   show_progress=False))
        wait_for_log(worker, marker=b"dead-lettered", timeout_s=STARTUP_TIMEOUT_S)
        assert worker.process.poll() is None
    finally:
        stop_worker(worker)
    dead = asyncio.run(read_topic(kafka_bootstrap, topic_prefix + "dead-letter"))
    assert [record["source_topic"] for record in dead] == [topic_prefix + "enrichment-retry"]
    assert "event_id" in dead[0]["reason"]
    listings = asyncio.run(read_topic(kafka_bootstrap, topic_prefix + "listings-enriched"))
    assert listings == []
