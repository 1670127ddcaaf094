"""Benchmark of the incremental recommender: micro-batch update time and top-K latency.

1. Update time of one micro-batch as the trained history grows 10x. Users and
   items grow with the history (a fixed share of events comes from new users),
   as in a live stream. Each row prints the ratio to the first checkpoint.
2. Top-K latency per user at two catalogue sizes, for ``recommend`` (one user)
   and ``recommend_many`` (one matrix product for a micro-batch of users), with
   the ratio to the smaller catalogue.

Usage: ``python benchmarks/recommender.py [--history 20000] [--items 10000 100000]``.
Timings depend on the machine and its load; compare ratios within one run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from models.recommender import IncrementalRecommender


def synthetic_events(rng: np.random.Generator, n_events: int, *, n_items: int, first_user: int,
                     n_users: int) -> list[tuple[str, str, float]]:
    """Draw (user, item, weight) events with Zipf-like item popularity."""
    items = np.minimum(rng.zipf(1.3, size=n_events) - 1, n_items - 1)
    users = rng.integers(first_user, first_user + n_users, size=n_events)
    weights = rng.choice([1.0, 2.0, 5.0], size=n_events)
    return [(f"u{u}", f"i{i}", float(w)) for u, i, w in zip(users, items, weights)]


def build_catalogue(n_items: int, *, seed: int = 0, no_components: int = 32, loss: str = "warp",
                    rollback_on_non_finite: bool = True) -> IncrementalRecommender:
    rng = np.random.default_rng(seed)
    recommender = IncrementalRecommender(no_components=no_components, random_state=seed, loss=loss,
                                         rollback_on_non_finite=rollback_on_non_finite)
    brands = rng.integers(0, max(n_items // 20, 1), size=n_items)
    categories = rng.integers(0, 50, size=n_items)
    for item in range(n_items):
        recommender.upsert_item(f"i{item}", [f"brand={brands[item]}", f"cat={categories[item] % 10}",
                                             f"cat={categories[item] % 10}/{categories[item]}"])
    return recommender


def bench_updates(*, history: int, growth: int, batch_size: int, n_items: int, repeats: int,
                  rollback: bool, loss: str) -> None:
    print(f"\n== micro-batch update time (batch {batch_size} events, {n_items} items, history "
          f"{history} -> {history * growth}, loss={loss}, rollback_on_non_finite={rollback}) ==")
    rng = np.random.default_rng(1)
    recommender = build_catalogue(n_items, loss=loss, rollback_on_non_finite=rollback)
    users_per_event = 0.1  # new users per event, so users grow with the history
    trained, next_user = 0, 0
    baseline = None
    checkpoints = sorted({history, history * growth // 4, history * growth // 2, history * growth})
    print(f"{'history':>10} {'users':>8} {'median_s':>10} {'ratio':>7}")
    for checkpoint in checkpoints:
        while trained < checkpoint:
            chunk = min(20_000, checkpoint - trained)
            n_new_users = max(int(chunk * users_per_event), 1)
            events = synthetic_events(rng, chunk, n_items=n_items, first_user=max(next_user - 2000, 0),
                                      n_users=n_new_users + min(next_user, 2000))
            recommender.fit_partial(events)
            next_user += n_new_users
            trained += chunk
        timings = []
        for _ in range(repeats):
            batch = synthetic_events(rng, batch_size, n_items=n_items, first_user=0, n_users=next_user)
            started = time.perf_counter()
            recommender.fit_partial(batch)
            timings.append(time.perf_counter() - started)
        median = statistics.median(timings)
        baseline = baseline or median
        print(f"{checkpoint:>10} {recommender.n_users:>8} {median:>10.4f} {median / baseline:>7.2f}")


def bench_top_k(*, item_counts: list[int], n_users: int, k: int) -> None:
    print(f"\n== top-{k} latency per user ({n_users} users per micro-batch) ==")
    print(f"{'items':>8} {'recommend_ms':>13} {'ratio':>7} {'many_ms_per_user':>17} {'ratio':>7}")
    baseline = None
    rng = np.random.default_rng(2)
    for n_items in item_counts:
        recommender = build_catalogue(n_items)
        recommender.fit_partial(synthetic_events(rng, 20_000, n_items=n_items, first_user=0, n_users=n_users))
        users = [f"u{u}" for u in range(n_users)]
        recommender.recommend(users[0], k=k)  # builds the item cache outside the timing
        started = time.perf_counter()
        for user in users:
            recommender.recommend(user, k=k)
        single_ms = (time.perf_counter() - started) * 1000 / len(users)
        started = time.perf_counter()
        recommender.recommend_many(users, k=k)
        many_ms = (time.perf_counter() - started) * 1000 / len(users)
        baseline = baseline or (single_ms, many_ms)
        print(f"{n_items:>8} {single_ms:>13.3f} {single_ms / baseline[0]:>7.2f} {many_ms:>17.3f} "
              f"{many_ms / baseline[1]:>7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=20_000, help="events trained before the first checkpoint")
    parser.add_argument("--growth", type=int, default=10, help="history growth factor (default: 10)")
    parser.add_argument("--batch-size", type=int, default=512, help="events per timed micro-batch")
    parser.add_argument("--update-items", type=int, default=10_000, help="catalogue size of the update benchmark")
    parser.add_argument("--repeats", type=int, default=5, help="timed micro-batches per checkpoint")
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000], help="catalogue sizes")
    parser.add_argument("--users", type=int, default=256, help="users per top-K micro-batch")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--loss", default="warp", choices=["warp", "bpr"], help="LightFM loss (default: warp)")
    parser.add_argument("--skip-top-k", action="store_true", help="run the update benchmark only")
    args = parser.parse_args()
    # The NaN rollback copies every parameter row per batch, a cost that grows with the
    # number of users, so the update time is measured with and without it. WARP samples
    # up to max_sampled negatives per positive until one scores too high, so its cost
    # per event grows as the model improves; BPR samples one and shows the rest.
    for rollback in (True, False):
        bench_updates(history=args.history, growth=args.growth, batch_size=args.batch_size,
                      n_items=args.update_items, repeats=args.repeats, rollback=rollback, loss=args.loss)
    if not args.skip_top_k:
        bench_top_k(item_counts=args.items, n_users=args.users, k=args.k)


if __name__ == "__main__":
    main()
