"""Cold-start experiment: does item text (real or synthetic) get cold items recommended?

A share of the items with real text is held out as cold: none of their
interactions is trained on and their text is withheld. The same split and seeds
train the recommender under four item-feature variants:

``cf``
    (a) identity features only: pure collaborative filtering.
``metadata``
    (b) brand, every category ancestor and price bucket, plus title words when
    the title is not the dataset's text field.
``metadata+real``
    (c) metadata plus the real text (upper bound).
``metadata+synthetic``
    (d) metadata plus synthetic text for cold items (real text for warm ones),
    written by a generator fine-tuned on warm items only.

Metrics are computed per user and averaged over users. For cold items, each user
who interacted with a cold item gets a ranking of all cold items. For warm items,
each user's last warm interaction is held out and ranked among the warm items
the user has not trained on.

Run ``python -m models.evaluate --dataset office`` (see ``--help``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from models.evaluate_data import Dataset
from models.features import item_feature_tokens, text_feature_tokens
from models.recommender import IncrementalRecommender

logger = logging.getLogger(__name__)

VARIANTS = ("cf", "metadata", "metadata+real", "metadata+synthetic")
CUTOFF = 20


@dataclass(kw_only=True)
class Split:
    """A cold-item split of one dataset for one seed."""

    seed: int
    cold_items: list[str]
    train: list[tuple[str, str]]
    warm_test: dict[str, str]
    cold_test: dict[str, set[str]]
    train_items_by_user: dict[str, set[str]] = field(default_factory=dict)


@dataclass(kw_only=True)
class ExperimentConfig:
    """Training and split settings shared by every variant."""

    cold_fraction: float = 0.1
    no_components: int = 32
    epochs: int = 10
    learning_rate: float = 0.05
    # Weight of every text token before the row is normalised (structured tokens weigh 1).
    text_weight: float = 0.25
    # Extra factor on synthetic text tokens; 1.0 compares real and synthetic text on equal terms.
    synthetic_weight: float = 1.0
    max_text_tokens: int = 32
    max_eval_users: int = 5000


def split_items(dataset: Dataset, *, seed: int, cold_fraction: float = 0.1) -> Split:
    """Hold out ``cold_fraction`` of all items, drawn among items with real text, as cold.

    Each user's interactions with cold items become cold test pairs; the last
    warm interaction of a user with at least two warm ones is the warm test pair;
    the rest is training data.
    """
    if not 0 < cold_fraction < 1:
        raise ValueError(f"cold_fraction must be in (0, 1), got {cold_fraction!r}")
    rng = np.random.default_rng(seed)
    candidates = sorted(item for item in dataset.texts if item in dataset.listings)
    n_cold = min(len(candidates), max(1, round(cold_fraction * len(dataset.listings))))
    cold = set(rng.choice(candidates, size=n_cold, replace=False).tolist())
    train, warm_test, cold_test, by_user = [], {}, {}, {}
    for user, items in dataset.sequences.items():
        warm = [item for item in items if item not in cold]
        cold_seen = {item for item in items if item in cold}
        if cold_seen:
            cold_test[user] = cold_seen
        if len(warm) >= 2:
            warm_test[user] = warm[-1]
            warm = warm[:-1]
        if warm:
            train.extend((user, item) for item in warm)
            by_user[user] = set(warm)
    for user in list(warm_test):
        if warm_test[user] in by_user.get(user, set()):
            del warm_test[user]  # a repeat purchase is not a held-out item
    return Split(seed=seed, cold_items=sorted(cold), train=train, warm_test=warm_test, cold_test=cold_test,
                 train_items_by_user=by_user)


def variant_tokens(dataset: Dataset, variant: str, *, cold_items: set[str], synthetic: dict[str, str],
                   config: ExperimentConfig) -> dict[str, list]:
    """Return item_id to feature tokens for one variant (identity tokens are added by the model)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    tokens: dict[str, list] = {}
    for item_id, listing in dataset.listings.items():
        if variant == "cf":
            tokens[item_id] = []
            continue
        item_tokens: list = list(item_feature_tokens(listing))
        if dataset.text_field != "title":
            item_tokens += text_feature_tokens(listing["title"], language="en", synthetic=False,
                                               max_tokens=config.max_text_tokens)
        text, is_synthetic = None, False
        if variant == "metadata+real" or (variant == "metadata+synthetic" and item_id not in cold_items):
            text = dataset.texts.get(item_id)
        elif variant == "metadata+synthetic":
            text, is_synthetic = synthetic.get(item_id), True
        if text:
            item_tokens += [(token, weight * config.text_weight) for token, weight in text_feature_tokens(
                text, language="en", synthetic=is_synthetic, synthetic_weight=config.synthetic_weight,
                max_tokens=config.max_text_tokens)]
        tokens[item_id] = item_tokens
    return tokens


def train_recommender(split: Split, tokens: dict[str, list], *, seed: int,
                      config: ExperimentConfig) -> IncrementalRecommender:
    """Upsert every item (cold ones included, untrained) and train on the split's training pairs."""
    recommender = IncrementalRecommender(no_components=config.no_components, random_state=seed,
                                         learning_rate=config.learning_rate)
    for item_id, item_tokens in tokens.items():
        recommender.upsert_item(item_id, item_tokens)
    recommender.fit_partial([(user, item, 1.0) for user, item in split.train], epochs=config.epochs)
    return recommender


def _ranking_metrics(scores: np.ndarray, positives: np.ndarray) -> tuple[float, float, float]:
    """AUC, Recall@CUTOFF and NDCG@CUTOFF of one user's scores over candidates (-inf: excluded)."""
    valid = np.isfinite(scores)
    positive_scores = scores[positives]
    negatives = valid.copy()
    negatives[positives] = False
    negative_scores = np.sort(scores[negatives])
    if len(negative_scores) == 0:
        return float("nan"), float("nan"), float("nan")
    below = np.searchsorted(negative_scores, positive_scores, side="left")
    ties = np.searchsorted(negative_scores, positive_scores, side="right") - below
    auc = float(np.mean((below + 0.5 * ties) / len(negative_scores)))
    order = np.argsort(-np.where(valid, scores, -np.inf), kind="stable")[:CUTOFF]
    relevant = np.zeros(len(scores), dtype=bool)
    relevant[positives] = True
    gains = relevant[order] / np.log2(np.arange(2, len(order) + 2))
    ideal = (1.0 / np.log2(np.arange(2, min(len(positives), CUTOFF) + 2))).sum()
    recall = float(relevant[order].sum() / len(positives))
    return auc, recall, float(gains.sum() / ideal)


def evaluate_recommender(recommender: IncrementalRecommender, split: Split, *,
                         max_users: int = 5000, seed: int = 0) -> dict[str, float]:
    """Compute AUC, Recall@20 and NDCG@20 for cold and warm items, averaged over users."""
    embeddings, biases = recommender.item_representations()
    item_rows = recommender.item_index
    user_rows = recommender.user_index
    model = recommender.lightfm_model
    cold_rows = np.asarray([item_rows[item] for item in split.cold_items], dtype=np.int64)
    cold_positions = {item: position for position, item in enumerate(split.cold_items)}
    cold_set = set(split.cold_items)
    warm_rows = np.asarray([row for item, row in item_rows.items() if item not in cold_set], dtype=np.int64)
    warm_positions = {int(row): position for position, row in enumerate(warm_rows)}
    rng = np.random.default_rng(seed)

    results = {}
    for side, tests in (("cold", split.cold_test), ("warm", split.warm_test)):
        users = sorted(user for user in tests if user in user_rows)
        if len(users) > max_users:
            users = sorted(rng.choice(users, size=max_users, replace=False).tolist())
        rows = cold_rows if side == "cold" else warm_rows
        candidate_embeddings, candidate_biases = embeddings[rows], biases[rows]
        totals = np.zeros(3)
        counted = 0
        for user in users:
            vector = model.user_embeddings[user_rows[user]]
            scores = (candidate_embeddings @ vector + candidate_biases).astype(np.float64)
            if side == "cold":
                positives = np.asarray([cold_positions[item] for item in tests[user]])
            else:
                seen = [warm_positions[int(item_rows[item])] for item in split.train_items_by_user.get(user, ())]
                scores[seen] = -np.inf
                positives = np.asarray([warm_positions[int(item_rows[tests[user]])]])
            metrics = _ranking_metrics(scores, positives)
            if not np.isnan(metrics[0]):
                totals += metrics
                counted += 1
        mean = totals / max(counted, 1)
        results |= {f"{side}_auc": mean[0], f"{side}_recall@{CUTOFF}": mean[1],
                    f"{side}_ndcg@{CUTOFF}": mean[2], f"{side}_users": float(counted)}
    return results


def run_experiment(dataset: Dataset, *, seeds: list[int], variants: list[str],
                   synthetic: dict[str, str] | None = None,
                   config: ExperimentConfig | None = None) -> list[dict]:
    """Train and evaluate every variant for every seed; return one row per (variant, seed).

    ``synthetic`` maps cold item ids to generated text and is required for the
    ``metadata+synthetic`` variant; it must cover the cold items of every seed.
    """
    config = config or ExperimentConfig()
    if "metadata+synthetic" in variants and not synthetic:
        raise ValueError("variant metadata+synthetic needs synthetic texts; pass --synthetic or --generate")
    rows = []
    progress = tqdm(total=len(seeds) * len(variants), desc=f"{dataset.name} runs")
    for seed in seeds:
        split = split_items(dataset, seed=seed, cold_fraction=config.cold_fraction)
        for variant in variants:
            started = time.perf_counter()
            tokens = variant_tokens(dataset, variant, cold_items=set(split.cold_items),
                                    synthetic=synthetic or {}, config=config)
            recommender = train_recommender(split, tokens, seed=seed, config=config)
            metrics = evaluate_recommender(recommender, split, max_users=config.max_eval_users, seed=seed)
            row = {"dataset": dataset.name, "variant": variant, "seed": seed, **metrics,
                   "train_s": time.perf_counter() - started}
            if variant == "metadata+synthetic":
                row["synthetic_coverage"] = sum(item in synthetic for item in split.cold_items) / len(split.cold_items)
            logger.info("run %s", row)
            rows.append(row)
            progress.update(1)
    progress.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    from models.evaluate_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
