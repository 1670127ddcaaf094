"""Simulator determinism and ground truth, and the event feeder (fake and real Kafka)."""

from __future__ import annotations

import asyncio
import random
import re
import time

import orjson
import pytest

from streams.feed import produce_events, produce_events_sync
from streams.schemas import parse_product_created, parse_user_behaviour
from streams.simulator import BRANDS, TAXONOMY, Simulator

N_EVENTS = 3000
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def simulator() -> Simulator:
    return Simulator(seed=7, n_items=200, n_users=100, cold_share=0.5, zh_share=0.1)


@pytest.fixture(scope="module")
def events(simulator: Simulator) -> list[tuple[str, str, dict]]:
    return simulator.events(N_EVENTS)


def test_same_seed_same_events() -> None:
    first = Simulator(seed=3, n_items=50, n_users=20).events(500)
    second = Simulator(seed=3, n_items=50, n_users=20).events(500)
    assert first == second


def test_other_seed_other_events() -> None:
    first = Simulator(seed=3, n_items=50, n_users=20).events(500)
    second = Simulator(seed=4, n_items=50, n_users=20).events(500)
    assert first != second


def test_call_order_does_not_matter() -> None:
    used = Simulator(seed=5, n_items=50, n_users=20)
    used.events(100)
    used.products()
    assert used.behaviour(200) == Simulator(seed=5, n_items=50, n_users=20).behaviour(200)


def test_events_in_timestamp_order(events: list) -> None:
    times = [e["created_at_ms"] if topic == "product-created" else e["timestamp_ms"]
             for topic, _, e in events]
    assert times == sorted(times)


def test_event_counts_and_keys(simulator: Simulator, events: list) -> None:
    products = [(key, e) for topic, key, e in events if topic == "product-created"]
    behaviour = [(key, e) for topic, key, e in events if topic == "user-behaviour"]
    assert len(products) == 200
    assert len(behaviour) == N_EVENTS
    assert all(key == e["item_id"] for key, e in products)
    assert all(key == e["user_id"] for key, e in behaviour)


def test_product_precedes_behaviour(events: list) -> None:
    created_at: dict[str, int] = {}
    for topic, _, event in events:
        if topic == "product-created":
            created_at[event["item_id"]] = event["created_at_ms"]
            continue
        assert event["item_id"] in created_at, f"behaviour on {event['item_id']} before creation"
        assert created_at[event["item_id"]] < event["timestamp_ms"]


def test_items_appear_over_time(simulator: Simulator, events: list) -> None:
    late = {p["item_id"] for p in simulator.products() if p["created_at_ms"] > simulator.start_ms}
    assert len(late) == 200 - round(0.6 * 200)
    touched = {e["item_id"] for topic, _, e in events if topic == "user-behaviour"}
    assert late & touched


def test_every_event_passes_schema(events: list) -> None:
    for topic, _, event in events:
        parse = parse_product_created if topic == "product-created" else parse_user_behaviour
        parse(orjson.dumps(event))  # raises InvalidEvent on failure


def test_catalog_tree_and_brands(simulator: Simulator) -> None:
    assert len(TAXONOMY) == 6
    assert all(len(subs) == 3 for subs in TAXONOMY.values())
    for product in simulator.products():
        top, sub = product["category"]
        assert sub in TAXONOMY[top]
        assert product["brand"] in BRANDS[top]


def test_cold_and_warm_items(simulator: Simulator) -> None:
    products = simulator.products()
    cold = [p for p in products if p["review_count"] == 0]
    warm = [p for p in products if p["review_count"] > 0]
    assert len(cold) == round(0.5 * len(products))
    assert all(p["description"] is None or "\n" not in p["description"] for p in cold)
    assert all(p["description"] is None or len(p["description"].split(". ")) == 1 for p in cold
               if p["language"] == "en")
    english_warm = [p for p in warm if p["language"] == "en"]
    assert english_warm
    assert all(len(p["description"].split()) >= 12 for p in english_warm)
    assert all(p["attributes"]["color"] in p["description"] for p in english_warm)


def test_chinese_listings(simulator: Simulator) -> None:
    chinese = [p for p in simulator.products() if p["language"] == "zh"]
    assert len(chinese) == round(0.1 * 200)
    assert all(CJK.search(p["title"]) for p in chinese)
    assert all(p["currency"] == "CNY" for p in chinese)


def test_ground_truth_profiles(simulator: Simulator) -> None:
    assert len(simulator.ground_truth) == 100
    for profile in simulator.ground_truth.values():
        assert 1 <= len(profile.categories) <= 2
        assert profile.brand in BRANDS[profile.categories[0]]


def test_purchases_follow_preferences(simulator: Simulator, events: list) -> None:
    purchases = [e for topic, _, e in events
                 if topic == "user-behaviour" and e["event_type"] == "purchase"]
    preferred = [simulator.top_category(e["item_id"]) in
                 simulator.ground_truth[e["user_id"]].categories for e in purchases]
    share = sum(preferred) / len(purchases)
    assert len(purchases) > 50
    assert share > 0.8
    assert share > simulator.random_hit_rate(10) + 0.4


def test_hit_rate_perfect_vs_random(simulator: Simulator) -> None:
    rng = random.Random(0)
    item_ids = [p["item_id"] for p in simulator.products()]
    perfect = {}
    for user_id, profile in simulator.ground_truth.items():
        liked = [i for i in item_ids if simulator.top_category(i) in profile.categories]
        perfect[user_id] = liked[:10]
    uniform = {user_id: rng.sample(item_ids, 10) for user_id in simulator.ground_truth}

    assert simulator.hit_rate(perfect) == 1.0
    assert simulator.hit_rate(uniform) == pytest.approx(simulator.random_hit_rate(10), abs=0.05)
    assert simulator.random_hit_rate(10) < 0.5


def test_hit_rate_rejects_unknown_user(simulator: Simulator) -> None:
    with pytest.raises(ValueError, match="not a simulated shopper"):
        simulator.hit_rate({"nobody": ["sku-00001"]})


def test_hit_rate_rejects_no_items(simulator: Simulator) -> None:
    with pytest.raises(ValueError, match="no items"):
        simulator.hit_rate({"user-0000": []})


class FakeProducer:
    """Records sends in memory in place of AIOKafkaProducer."""

    instances: list[FakeProducer] = []

    def __init__(self, **options) -> None:
        self.options = options
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.stopped = False
        FakeProducer.instances.append(self)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future:
        self.sent.append((topic, key, value))
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered


def test_feed_sends_every_event(events: list) -> None:
    count = produce_events_sync("127.0.0.1:1", events, producer_factory=FakeProducer,
                                topic_names={"product-created": "x.product-created"})
    producer = FakeProducer.instances[-1]
    assert count == len(events)
    assert len(producer.sent) == len(events)
    assert producer.stopped
    topic, key, value = producer.sent[0]
    assert topic == "x.product-created"
    assert key == events[0][1].encode()
    assert orjson.loads(value) == events[0][2]


def test_feed_producer_settings() -> None:
    produce_events_sync("127.0.0.1:1", [], producer_factory=FakeProducer,
                        security={"security_protocol": "SSL"})
    options = FakeProducer.instances[-1].options
    assert options["acks"] == "all"
    assert options["enable_idempotence"] is True
    assert options["security_protocol"] == "SSL"


def test_feed_sends_bytes_unchanged() -> None:
    raw = b"\xffnot json"
    produce_events_sync("127.0.0.1:1", [("user-behaviour", None, raw)],
                        producer_factory=FakeProducer)
    assert FakeProducer.instances[-1].sent == [("user-behaviour", None, raw)]


def test_feed_rate_limit() -> None:
    started = time.monotonic()
    produce_events_sync("127.0.0.1:1", [("t", "k", {"i": i}) for i in range(21)],
                        rate_per_s=200.0, producer_factory=FakeProducer)
    assert time.monotonic() - started >= 0.09  # 20 intervals of 5 ms


@pytest.mark.parametrize("options, message", [
    ({"security": {"acks": 0}}, "unknown security options"),
    ({"rate_per_s": 0}, "rate_per_s"),
])
def test_feed_rejects_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        produce_events_sync("127.0.0.1:1", [], producer_factory=FakeProducer, **options)


@pytest.mark.kafka
def test_feed_to_kafka(kafka_bootstrap: str, topic_prefix: str) -> None:
    from aiokafka import AIOKafkaConsumer

    from infra.provision import provision_topics

    sim_events = Simulator(seed=1, n_items=20, n_users=5).events(50)

    async def feed_and_read() -> tuple[int, int]:
        names = await provision_topics(kafka_bootstrap, prefix=topic_prefix)
        sent = await produce_events(kafka_bootstrap, sim_events, topic_names=names)
        consumer = AIOKafkaConsumer(names["product-created"], names["user-behaviour"],
                                    bootstrap_servers=kafka_bootstrap,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        received = 0
        try:
            deadline = time.monotonic() + 30
            while received < sent and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=1000)
                received += sum(len(records) for records in batches.values())
        finally:
            await consumer.stop()
        return sent, received

    sent, received = asyncio.run(feed_and_read())
    assert sent == len(sim_events)
    assert received == sent
