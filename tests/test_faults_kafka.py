"""Fault tests on the real broker: worker kills, a broker restart and a rebalance.

Each test feeds listings into a fresh topic prefix, runs workers without a
generator through one kind of fault, and then compares the valid
``product-created`` inputs with ``listings-enriched``. Delivery is
at-least-once: no input may be lost, redelivered records are counted and
printed (visible with ``pytest -rA`` or ``-s``), and every delivery of one
``(item_id, record_version)`` must carry the same content.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import time
from collections.abc import Iterator

import pytest

from infra import local_broker
from infra.provision import provision_topics
from streams.feed import produce_events
from streams.outputs import collect
from streams.simulator import Simulator
from tests.fault_helpers import (
    ASSIGNED_MARKER,
    PrivateBroker,
    claim_private_broker,
    delivery_report,
    kill_worker,
    read_topic,
    remove_private_broker,
    restart_broker,
    start_private_broker,
    start_worker,
    stop_worker,
    wait_for_log,
)


logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 60.0
COLLECT_TIMEOUT_S = 120.0


def simulated_events(prefix: str, *, seed: int, n_items: int, n_behaviour: int) -> tuple[list, list[str]]:
    """Return (events, item ids): every listing of a simulated catalog, then behaviour events."""
    simulator = Simulator(seed=seed, n_items=n_items, n_users=max(4, n_items // 100))
    products = simulator.products()
    events = [(prefix + "product-created", product["item_id"], product) for product in products]
    events += [(prefix + "user-behaviour", event["user_id"], event) for event in simulator.behaviour(n_behaviour)]
    return events, [product["item_id"] for product in products]


def collect_all_listings(bootstrap: str, prefix: str, item_ids: list[str]) -> None:
    """Wait, bounded by :data:`COLLECT_TIMEOUT_S`, until every item id has a listings-enriched record."""
    topic = prefix + "listings-enriched"
    expected = set(item_ids)
    asyncio.run(collect(bootstrap, [topic], timeout_s=COLLECT_TIMEOUT_S,
                        done=lambda c: expected <= {record["item_id"] for record in c.records[topic]}))


def check_delivery(bootstrap: str, prefix: str, item_ids: list[str], *, scenario: str):
    records = asyncio.run(read_topic(bootstrap, prefix + "listings-enriched"))
    report = delivery_report(item_ids, records, key_field="item_id")
    print(f"\n[{scenario}] listings-enriched {report.summary()}")
    logger.info("%s: %s", scenario, report.summary())
    assert report.lost == [], f"{len(report.lost)} listings lost, first: {report.lost[:10]}"
    first_conflicts = dict(list(report.conflicts.items())[:5])
    assert report.conflicts == {}, f"{len(report.conflicts)} (item_id, record_version) pairs differ: {first_conflicts}"
    assert report.outputs >= report.inputs
    return report


def test_delivery_report_counts():
    records = [
        {"item_id": "a", "record_version": "p/0/0", "title": "A", "produced_at_ms": 1},
        {"item_id": "a", "record_version": "p/0/0", "title": "A", "produced_at_ms": 2},
        {"item_id": "b", "record_version": "p/1/0", "title": "B", "produced_at_ms": 3},
        {"item_id": "b", "record_version": "p/1/0", "title": "B2", "produced_at_ms": 4},
    ]
    report = delivery_report(["a", "b", "c"], records, key_field="item_id")
    assert report.lost == ["c"]
    assert report.raw_duplicates == 2
    assert report.conflicts == {("b", "p/1/0"): ["title"]}


@pytest.mark.kafka
@pytest.mark.slow
def test_sigkill_loses_no_listing(kafka_bootstrap, topic_prefix, tmp_path):
    asyncio.run(provision_topics(kafka_bootstrap, prefix=topic_prefix))
    events, item_ids = simulated_events(topic_prefix, seed=11, n_items=19_000, n_behaviour=1_500)
    assert len(events) >= 20_000
    asyncio.run(produce_events(kafka_bootstrap, events, show_progress=False))

    started = time.monotonic()
    rng = random.Random(20)
    snapshot_dir = tmp_path / "snapshots"
    kills = 0
    published_before_kill = []
    for attempt in range(3):
        worker = start_worker(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix,
                              log_path=tmp_path / f"worker-{attempt}.log", snapshot_dir=snapshot_dir,
                              generation_batch_size=64, similar_items_k=0)
        try:
            wait_for_log(worker, at_least=1, timeout_s=STARTUP_TIMEOUT_S)
            time.sleep(rng.uniform(0.3, 2.5))
            published_before_kill.append(worker.published_count())
        finally:
            kill_worker(worker)
        kills += 1

    final = start_worker(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix,
                         log_path=tmp_path / "worker-final.log", snapshot_dir=snapshot_dir,
                         generation_batch_size=64, similar_items_k=0)
    try:
        collect_all_listings(kafka_bootstrap, topic_prefix, item_ids)
        assert final.process.poll() is None, f"worker exited; log tail:\n{final.log_tail()}"
    finally:
        stop_worker(final)
    print(f"\n[sigkill] kills={kills} published before each kill={published_before_kill} "
          f"elapsed_s={time.monotonic() - started:.1f}")
    # Each kill hit a worker in the middle of the stream.
    assert all(0 < count < len(item_ids) for count in published_before_kill)

    check_delivery(kafka_bootstrap, topic_prefix, item_ids, scenario="sigkill")


@pytest.fixture
def private_kafka_broker() -> Iterator[PrivateBroker]:
    """A running ``infra/kafka.sh`` broker of one test on a free port, stopped and deleted afterwards.

    The broker shares the jars of the session broker, but no other client
    uses it, so the test may restart it.
    """
    if shutil.which("java") is None:
        pytest.skip("no private Kafka broker: java is not installed")
    try:
        broker = claim_private_broker()
    except local_broker.BrokerStartError as error:
        pytest.fail(str(error))
    try:
        start_private_broker(broker)
        yield broker
    finally:
        # Collect the cleanup errors instead of raising them here, so they do not
        # replace an exception in flight. remove_private_broker also logs them.
        errors = remove_private_broker(broker)
    assert errors == [], "\n".join(errors)


@pytest.mark.kafka
@pytest.mark.slow
def test_broker_restart_loses_no_listing(private_kafka_broker, topic_prefix, tmp_path):
    kafka_bootstrap = private_kafka_broker.bootstrap_servers
    asyncio.run(provision_topics(kafka_bootstrap, prefix=topic_prefix))
    events, item_ids = simulated_events(topic_prefix, seed=12, n_items=2_700, n_behaviour=300)
    # Half the listings wait in the topic when the broker stops; the rest arrive after it is back.
    half = len(item_ids) // 2
    first_part = events[:half] + events[len(item_ids):]
    asyncio.run(produce_events(kafka_bootstrap, first_part, show_progress=False))

    started = time.monotonic()
    worker = start_worker(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix,
                          log_path=tmp_path / "worker.log", snapshot_dir=tmp_path / "snapshots")
    try:
        wait_for_log(worker, at_least=1, timeout_s=STARTUP_TIMEOUT_S)
        published_at_stop = worker.published_count()
        down_s = restart_broker(private_kafka_broker)
        asyncio.run(produce_events(kafka_bootstrap, events[half:len(item_ids)], show_progress=False))
        collect_all_listings(kafka_bootstrap, topic_prefix, item_ids)
        assert worker.process.poll() is None, f"worker exited; log tail:\n{worker.log_tail()}"
    finally:
        stop_worker(worker)
    print(f"\n[broker-restart] published at stop={published_at_stop} broker down_s={down_s:.1f} "
          f"elapsed_s={time.monotonic() - started:.1f}")
    assert published_at_stop < half

    check_delivery(kafka_bootstrap, topic_prefix, item_ids, scenario="broker-restart")


@pytest.mark.kafka
@pytest.mark.slow
def test_rebalance_loses_no_listing(kafka_bootstrap, topic_prefix, tmp_path):
    asyncio.run(provision_topics(kafka_bootstrap, prefix=topic_prefix))
    events, item_ids = simulated_events(topic_prefix, seed=13, n_items=3_000, n_behaviour=300)
    # Half the listings arrive only once the second worker is in the group, so it has work to take.
    half = len(item_ids) // 2
    asyncio.run(produce_events(kafka_bootstrap, events[:half] + events[len(item_ids):], show_progress=False))

    started = time.monotonic()
    first = start_worker(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix,
                         log_path=tmp_path / "first.log", snapshot_dir=tmp_path / "first-snapshots")
    second = None
    try:
        wait_for_log(first, at_least=1, timeout_s=STARTUP_TIMEOUT_S)
        second = start_worker(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix,
                              log_path=tmp_path / "second.log", snapshot_dir=tmp_path / "second-snapshots")
        wait_for_log(second, marker=ASSIGNED_MARKER, timeout_s=STARTUP_TIMEOUT_S)
        asyncio.run(produce_events(kafka_bootstrap, events[half:len(item_ids)], show_progress=False))
        # The second worker leaves once it has published from the partitions it took.
        wait_for_log(second, at_least=1, timeout_s=STARTUP_TIMEOUT_S)
        published_by_second = second.published_count()
        stop_worker(second)
        collect_all_listings(kafka_bootstrap, topic_prefix, item_ids)
        assert first.process.poll() is None, f"first worker exited; log tail:\n{first.log_tail()}"
    finally:
        if second is not None:
            stop_worker(second)
        stop_worker(first)
    print(f"\n[rebalance] second worker published={published_by_second} "
          f"elapsed_s={time.monotonic() - started:.1f}")

    check_delivery(kafka_bootstrap, topic_prefix, item_ids, scenario="rebalance")
