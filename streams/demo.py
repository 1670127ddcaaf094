"""One-command demo: broker, topics, generator, worker, feed, summary."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from export.pipeline import build_generator, training_pairs_from_listings
from infra import local_broker
from infra.provision import provision_topics
from streams import topics as names
from streams.feed import produce_events
from streams.outputs import Collected, collect
from streams.settings import Settings

logger = logging.getLogger(__name__)

INVALID_DEMO_EVENTS = (
    b"{not json",
    b'{"event_id": "bad-1", "item_id": "x", "title": ""}',
    b'{"event_id": "bad-2", "user_id": "u", "item_id": "i", "event_type": "teleport", "timestamp_ms": 1}',
)


@dataclass(kw_only=True)
class DemoOptions:
    dataset: str = "simulator"          # "simulator" or "amazon-gift-cards"
    data_dir: Path | None = None
    n_items: int = 60
    n_users: int = 40
    n_events: int = 3000
    train_steps: int = 60
    base: str = "smollm2"
    timeout_s: float = 1200.0
    seed: int = 0


def validate_options(options: DemoOptions) -> None:
    """Raise ``ValueError`` naming the command-line option for a value that cannot work.

    Runs before the broker starts, so a typo costs no minutes.
    """
    for flag, value, minimum in (("--items", options.n_items, 1), ("--users", options.n_users, 1),
                                 ("--events", options.n_events, 1), ("--train-steps", options.train_steps, 0)):
        if value < minimum:
            raise ValueError(f"{flag} must be >= {minimum}, got {value}")
    if not options.timeout_s > 0:
        raise ValueError(f"--timeout-s must be > 0, got {options.timeout_s}")
    if options.base != "smollm2" and not (Path(options.base) / "config.json").is_file():
        raise ValueError(f"--base {options.base!r} is neither 'smollm2' nor a Hugging Face model "
                         "directory with config.json")
    if options.dataset == "amazon-gift-cards":
        data_dir = options.data_dir or _data_dir() / "amazon2018_gift_cards_5core"
        for name in ("Gift_Cards_5.json.gz", "meta_Gift_Cards.json.gz"):
            if not (data_dir / name).is_file():
                raise ValueError(f"--data-dir {str(data_dir)!r} has no {name}; point it at the folder "
                                 "with the Amazon 2018 Gift Cards files")


def run_demo(settings: Settings, options: DemoOptions) -> dict:
    """Run the demo end to end and return its summary."""
    validate_options(options)
    products, behaviour, simulator = _load_input(options)
    pairs = _training_pairs(options, products)
    lease = None
    if "SHOPSYNTH_BOOTSTRAP_SERVERS" not in os.environ and settings.bootstrap_servers == Settings.bootstrap_servers:
        lease = local_broker.acquire()
        settings = dataclasses.replace(settings, bootstrap_servers=lease.bootstrap_servers)
    security = dict(settings.security)
    prefix = settings.topic_prefix or f"demo-{uuid.uuid4().hex[:8]}."
    worker = None
    try:
        asyncio.run(provision_topics(settings.bootstrap_servers, prefix=prefix, client_options=security or None))
        print(f"[demo] fine-tuning {options.base} on {len(pairs)} listings with descriptions "
              f"({options.train_steps} steps) and exporting to ONNX; cached after the first run")
        generator_dir = build_generator(base=options.base, pairs=pairs, max_steps=options.train_steps,
                                        seed=options.seed)
        worker_settings = Settings.from_env(topic_prefix=prefix, generator_dir=str(generator_dir),
                                            bootstrap_servers=settings.bootstrap_servers)
        worker = _start_worker(worker_settings, prefix=prefix)

        feed_started = time.time()
        events = [(prefix + names.PRODUCT_CREATED, p["item_id"], p) for p in products]
        events += [(prefix + names.USER_BEHAVIOUR, b["user_id"], b) for b in behaviour]
        events += [(prefix + (names.PRODUCT_CREATED if i % 2 == 0 else names.USER_BEHAVIOUR), "bad", raw)
                   for i, raw in enumerate(INVALID_DEMO_EVENTS)]
        print(f"[demo] producing {len(events)} events ({len(products)} listings, "
              f"{len(behaviour)} behaviour events, {len(INVALID_DEMO_EVENTS)} invalid)")
        asyncio.run(produce_events(settings.bootstrap_servers, events, security=security or None))

        users = {b["user_id"] for b in behaviour}
        out_topics = [prefix + names.LISTINGS_ENRICHED, prefix + names.RECOMMENDATIONS, prefix + names.DEAD_LETTER]

        last_progress = [time.monotonic()]

        def done(c: Collected) -> bool:
            listings = c.latest_by_key(out_topics[0], "item_id")
            recs = c.latest_by_key(out_topics[1], "user_id")
            if time.monotonic() - last_progress[0] >= 15:
                last_progress[0] = time.monotonic()
                print(f"[demo] {len(listings)}/{len(products)} listings enriched, "
                      f"{len(users & set(recs))}/{len(users)} users with recommendations")
            return (len(listings) >= len(products) and users.issubset(recs)
                    and len(c.records[out_topics[2]]) >= len(INVALID_DEMO_EVENTS))

        print("[demo] waiting for the worker's outputs")
        collected = asyncio.run(collect(settings.bootstrap_servers, out_topics, done=done,
                                        timeout_s=options.timeout_s, security=security or None))
        summary = _summarise(collected, out_topics, products=products, behaviour=behaviour,
                             simulator=simulator, elapsed_s=time.time() - feed_started)
        summary["topic_prefix"] = prefix
        return summary
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        if lease is not None:
            local_broker.release(lease)


def _load_input(options: DemoOptions):
    if options.dataset == "simulator":
        from streams.simulator import Simulator

        simulator = Simulator(seed=options.seed, n_items=options.n_items, n_users=options.n_users)
        return simulator.products(), simulator.behaviour(options.n_events), simulator
    if options.dataset == "amazon-gift-cards":
        from streams.loaders.amazon import load_amazon2018

        data_dir = options.data_dir or _data_dir() / "amazon2018_gift_cards_5core"
        products, behaviour = load_amazon2018(data_dir, only_reviewed_items=True)
        return list(products), list(behaviour), None
    raise ValueError(f"unknown dataset {options.dataset!r}; use 'simulator' or 'amazon-gift-cards'")


def _training_pairs(options: DemoOptions, products: list[dict]) -> list[tuple[str, str]]:
    pairs = training_pairs_from_listings(products)
    if len(pairs) < 8:
        raise ValueError(f"only {len(pairs)} listings with descriptions to fine-tune on; "
                         "use more items (--items) or another dataset")
    return pairs


def _data_dir() -> Path:
    value = os.environ.get("SHOPSYNTH_DATA_DIR")
    if not value:
        raise ValueError("SHOPSYNTH_DATA_DIR is not set; point it at the folder that holds the "
                         "datasets, or pass --data-dir")
    return Path(value)


def _start_worker(settings: Settings, *, prefix: str) -> subprocess.Popen:
    cache_dir = Path(os.environ.get("SHOPSYNTH_CACHE_DIR", Path.home() / ".cache" / "shopsynth"))
    log_path = cache_dir / "logs" / f"{prefix.rstrip('.')}-worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings.to_env()}
    print(f"[demo] starting worker (log: {log_path})")
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "streams", "worker"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)


def _summarise(collected: Collected, out_topics: list[str], *, products: list[dict], behaviour: list[dict],
               simulator, elapsed_s: float) -> dict:
    seen: dict[str, set[str]] = {}
    for event in behaviour:
        seen.setdefault(event["user_id"], set()).add(event["item_id"])
    users = set(seen)
    listings = collected.latest_by_key(out_topics[0], "item_id")
    recs = collected.latest_by_key(out_topics[1], "user_id")
    created_ms = {p["item_id"]: p["created_at_ms"] for p in products}
    generated = [r for r in listings.values() if r.get("description_synthetic")]
    latencies_s = [(r["produced_at_ms"] - r["source_timestamp_ms"]) / 1000 for r in listings.values()
                   if r.get("source_timestamp_ms")]
    summary = {
        "listings_in": len(products),
        "listings_enriched_records": len(listings),
        "cold_listings": sum(1 for r in listings.values() if r.get("cold")),
        "generated_descriptions": len(generated),
        "generated_reviews": sum(sum(1 for rv in r.get("reviews", []) if rv.get("synthetic"))
                                 for r in listings.values()),
        "gate_rejected": sum(1 for r in listings.values() if r.get("gate_rejected")),
        "users_with_behaviour": len(users),
        "users_with_recommendations": len(set(recs) & users),
        "dead_letter_records": len(collected.records[out_topics[2]]),
        "elapsed_s": round(elapsed_s, 1),
        "generator_version": next((r["generator_version"] for r in generated), None),
        "example": _example(generated),
        "missing_items": sorted(set(created_ms) - set(listings))[:10],
    }
    if latencies_s:
        summary["listing_latency_p50_s"] = round(statistics.median(latencies_s), 2)
    if simulator is not None and recs:
        top = {user: [item["item_id"] for item in rec["items"]] for user, rec in recs.items()}
        k = max(len(items) for items in top.values())
        summary["hit_rate"] = round(simulator.hit_rate(top), 3)
        # The worker skips items a user already interacted with, so the
        # random baseline draws from the same unseen items.
        summary["random_hit_rate"] = round(simulator.random_hit_rate(k, users=list(top), exclude=seen), 3)
    return summary


def _example(generated: list[dict]) -> dict | None:
    if not generated:
        return None
    record = sorted(generated, key=lambda r: r["item_id"])[0]
    return {"item_id": record["item_id"], "title": record["title"], "brand": record.get("brand"),
            "description": record["description"]}


def print_summary(summary: dict) -> None:
    print("\n== shopsynth demo summary ==")
    print(f"listings in / enriched records : {summary['listings_in']} / {summary['listings_enriched_records']}")
    print(f"cold listings                  : {summary['cold_listings']}")
    print(f"generated descriptions/reviews : {summary['generated_descriptions']} / {summary['generated_reviews']}")
    print(f"texts rejected by the gates    : {summary['gate_rejected']} listings")
    print(f"users with recommendations     : {summary['users_with_recommendations']} of "
          f"{summary['users_with_behaviour']}")
    if "hit_rate" in summary:
        print(f"hit rate (preferred category)  : {summary['hit_rate']:.3f} "
              f"(random recommender: {summary['random_hit_rate']:.3f})")
    print(f"dead-letter records            : {summary['dead_letter_records']}")
    print(f"generator version              : {summary['generator_version']}")
    print(f"time from feed to last output  : {summary['elapsed_s']} s")
    if "listing_latency_p50_s" in summary:
        print(f"listing latency p50            : {summary['listing_latency_p50_s']} s (input to enriched record)")
    example = summary.get("example")
    if example:
        print(f"\nexample generated description for {example['item_id']} "
              f"({example['title']!r}, brand {example['brand']!r}):\n  {example['description']}")
    if summary["missing_items"]:
        print(f"\nWARNING: no output yet for items {summary['missing_items']}")
