"""Tests for models.recommender.IncrementalRecommender and its growth of LightFM arrays.

The synthetic world: 6 categories with 3 brands of 8 items each (144 items) and 10
users per category whose events hit their preferred category with probability 0.8.
"""

import json

import numpy as np
import pytest

from models import interaction_batch, lightfm_growth
from models.recommender import IncrementalRecommender, NonFiniteParametersError

N_CATEGORIES = 6
BRANDS_PER_CATEGORY = 3
ITEMS_PER_BRAND = 8
USERS_PER_CATEGORY = 10
BATCH_SIZE = 120


def build_catalogue(recommender):
    """Upsert every item of the world; return item_id -> (category, brand)."""
    items = {}
    for category in range(N_CATEGORIES):
        for brand in range(BRANDS_PER_CATEGORY):
            for number in range(ITEMS_PER_BRAND):
                item_id = f"c{category}-b{brand}-{number}"
                items[item_id] = (category, brand)
                recommender.upsert_item(item_id, [f"cat=c{category}", f"brand=c{category}b{brand}"])
    return items


def preferred_categories():
    return {f"u{category}-{k}": category
            for category in range(N_CATEGORIES) for k in range(USERS_PER_CATEGORY)}


def sample_events(rng, items, users, n_per_user, *, p_preferred=0.8):
    """Draw (user, item, weight) events; each hits the user's category with p_preferred."""
    by_category = {}
    for item_id, (category, _) in items.items():
        by_category.setdefault(category, []).append(item_id)
    all_items = list(items)
    events = []
    for user_id, category in users.items():
        for _ in range(n_per_user):
            pool = by_category[category] if rng.random() < p_preferred else all_items
            events.append((user_id, pool[rng.integers(len(pool))], float(rng.choice([1.0, 2.0, 5.0]))))
    rng.shuffle(events)
    return events


def train_world(*, seed=0, epochs=2, **params):
    """Build the world and train on it in micro-batches; return (recommender, items, events)."""
    rng = np.random.default_rng(seed)
    recommender = IncrementalRecommender(no_components=16, random_state=seed, **params)
    items = build_catalogue(recommender)
    events = sample_events(rng, items, preferred_categories(), 12)
    for start in range(0, len(events), BATCH_SIZE):
        recommender.fit_partial(events[start:start + BATCH_SIZE], epochs=epochs)
    return recommender, items, events


@pytest.fixture(scope="module")
def trained():
    return train_world()


def ranking_positions(recommender, user_id):
    ranking = recommender.recommend(user_id, k=recommender.n_items, exclude_seen=False)
    return {item_id: position for position, (item_id, _) in enumerate(ranking)}


def parameter_rows(recommender):
    model = recommender.lightfm_model
    rows = {"user": recommender.n_users, "item": recommender.n_features}
    return {name: getattr(model, name)[:rows[side]].copy()
            for side in lightfm_growth.SIDES for name in lightfm_growth.parameter_names(side)}


def test_hit_rate_above_random_baseline(trained):
    recommender, items, events = trained
    seen = {}
    for user_id, item_id, _ in events:
        seen.setdefault(user_id, set()).add(item_id)
    hit_rates, baselines = [], []
    for user_id, category in preferred_categories().items():
        top = recommender.recommend(user_id, k=10)
        hit_rates.append(np.mean([items[item_id][0] == category for item_id, _ in top]))
        unseen = [item_id for item_id in items if item_id not in seen[user_id]]
        baselines.append(np.mean([items[item_id][0] == category for item_id in unseen]))
    hit_rate, baseline = float(np.mean(hit_rates)), float(np.mean(baselines))
    assert 0.05 < baseline < 0.25
    assert hit_rate > baseline + 0.4, f"hit rate {hit_rate:.3f} vs random baseline {baseline:.3f}"


def test_version_counts_updates(trained):
    recommender, _, events = trained
    expected_batches = -(-len(events) // BATCH_SIZE)
    assert recommender.version == str(expected_batches)


def test_new_user_and_item_after_training():
    recommender, items, _ = train_world()
    version = recommender.version
    recommender.fit_partial([("newcomer", "brand-new-item", 2.0), ("newcomer", "c0-b0-0", 1.0)])
    assert recommender.version != version
    assert recommender.n_users == len(preferred_categories()) + 1
    assert recommender.n_items == len(items) + 1
    top = recommender.recommend("newcomer", k=5)
    assert len(top) == 5
    assert {"brand-new-item", "c0-b0-0"}.isdisjoint(item_id for item_id, _ in top)
    assert len(recommender.similar_items("brand-new-item", k=3)) == 3
    assert all(np.isfinite(score) for _, score in top)


def test_burst_raises_brand_rank():
    recommender, items, _ = train_world()
    rng = np.random.default_rng(1)
    user_id = "u0-0"
    # A brand outside the user's preferred category 0.
    brand_items = [item_id for item_id, key in items.items() if key == (3, 1)]
    bought, held_out = brand_items[:4], brand_items[4:]
    positions = ranking_positions(recommender, user_id)
    rank_before = np.mean([positions[item_id] for item_id in held_out])

    background_users = dict(list(preferred_categories().items())[1:20])
    for step in range(4):
        burst = [(user_id, bought[(step + j) % 4], 5.0) for j in range(2)]
        recommender.fit_partial(burst + sample_events(rng, items, background_users, 2), epochs=2)

    positions = ranking_positions(recommender, user_id)
    rank_after = np.mean([positions[item_id] for item_id in held_out])
    assert rank_after < rank_before - 20, f"mean rank {rank_before:.1f} -> {rank_after:.1f}"


def test_growth_keeps_learned_rows():
    recommender, _, _ = train_world()
    model = recommender.lightfm_model
    before = parameter_rows(recommender)
    capacity_before = {side: lightfm_growth.capacity(model, side) for side in lightfm_growth.SIDES}

    for number in range(capacity_before["item"]):
        recommender.upsert_item(f"extra-{number}", [f"brand=extra{number}"])
    recommender._grow("user", capacity_before["user"] + 1)

    for side in lightfm_growth.SIDES:
        assert lightfm_growth.capacity(model, side) >= 2 * capacity_before[side]
    for name, rows in before.items():
        np.testing.assert_array_equal(getattr(model, name)[:len(rows)], rows, err_msg=name)


def test_growth_initialises_like_lightfm():
    recommender, _, _ = train_world()
    model = recommender.lightfm_model
    start = recommender.n_features
    recommender.upsert_item("fresh", ["brand=fresh", "cat=fresh"])
    new_rows = slice(start, recommender.n_features)
    embeddings = model.item_embeddings[new_rows]
    assert embeddings.shape == (3, model.no_components)
    assert np.all(np.abs(embeddings) <= 0.5 / model.no_components)
    assert np.any(embeddings != 0)
    np.testing.assert_array_equal(model.item_embedding_gradients[new_rows], 1.0)
    np.testing.assert_array_equal(model.item_bias_gradients[new_rows], 1.0)
    np.testing.assert_array_equal(model.item_embedding_momentum[new_rows], 0.0)
    np.testing.assert_array_equal(model.item_biases[new_rows], 0.0)


def test_feature_rows_sum_to_one(trained):
    recommender, _, _ = trained
    features = recommender._item_rows.matrix(recommender.n_features)
    np.testing.assert_allclose(np.asarray(features.sum(axis=1)).ravel(), 1.0, rtol=1e-6)
    assert features.shape == (recommender.n_items, recommender.n_features)


def test_new_feature_value_learned():
    recommender, items, _ = train_world()
    n_features = recommender.n_features
    # A new brand in category 2; users of category 2 buy two of its items.
    for number in range(4):
        recommender.upsert_item(f"newbrand-{number}", ["cat=c2", "brand=newbrand", "attr=fit=slim"])
    assert recommender.n_features == n_features + 4 + 2
    buyers = [user_id for user_id, category in preferred_categories().items() if category == 2]
    brand_row = recommender._features["brand=newbrand"]
    brand_before = recommender.lightfm_model.item_embeddings[brand_row].copy()
    for _ in range(3):
        recommender.fit_partial([(user_id, f"newbrand-{k}", 5.0)
                                 for user_id in buyers for k in range(2)], epochs=2)
    brand_after = recommender.lightfm_model.item_embeddings[brand_row]
    assert not np.array_equal(brand_before, brand_after)
    # The unbought items of the new brand now rank near the top for a category-2 user.
    positions = ranking_positions(recommender, buyers[0])
    assert min(positions["newbrand-2"], positions["newbrand-3"]) < 20


def test_upsert_replaces_item_features():
    recommender, _, _ = train_world()
    embeddings_before = recommender.item_representations()[0].copy()
    row = recommender.item_index["c0-b0-0"]
    recommender.upsert_item("c0-b0-0", ["cat=c5", "brand=c5b0"])
    embeddings_after = recommender.item_representations()[0]
    assert not np.allclose(embeddings_before[row], embeddings_after[row])
    others = np.arange(recommender.n_items) != row
    np.testing.assert_array_equal(embeddings_before[others], embeddings_after[others])


def test_nan_guard_rolls_back():
    recommender, items, _ = train_world()
    version = recommender.version
    before = parameter_rows(recommender)
    top_before = recommender.recommend("u0-0", k=10)
    # A learning rate this large overflows float32 parameters in the first update.
    recommender.lightfm_model.learning_rate = 1e30
    batch = sample_events(np.random.default_rng(2), items, preferred_categories(), 2)
    with pytest.raises(NonFiniteParametersError, match="NaN or inf") as caught:
        recommender.fit_partial(batch)
    error = caught.value
    assert error.rolled_back
    assert error.feature_tokens
    assert set(error.feature_tokens) <= set(recommender._features)
    assert set(error.user_ids) <= set(preferred_categories())
    assert recommender.version == version
    after = parameter_rows(recommender)
    for name, rows in before.items():
        np.testing.assert_array_equal(after[name], rows, err_msg=name)
    assert recommender.recommend("u0-0", k=10) == top_before

    recommender.lightfm_model.learning_rate = 0.05
    recommender.fit_partial(batch)
    assert recommender.version == str(int(version) + 1)


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -1.0, 0.0])
def test_invalid_weight_rejected(weight):
    recommender = IncrementalRecommender()
    with pytest.raises(ValueError, match="weight must be finite and > 0"):
        recommender.fit_partial([("u", "i", 1.0), ("u", "j", weight)])
    assert recommender.n_users == 0
    assert recommender.version == "0"


def test_invalid_ids_rejected():
    recommender = IncrementalRecommender()
    with pytest.raises(ValueError, match="user_id"):
        recommender.fit_partial([("", "i", 1.0)])
    with pytest.raises(ValueError, match="item_id"):
        recommender.upsert_item(None, [])
    with pytest.raises(ValueError, match="user_id, item_id, weight"):
        recommender.fit_partial([("u", "i")])


def test_unsupported_parameters_rejected():
    with pytest.raises(ValueError, match="warp-kos"):
        IncrementalRecommender(loss="warp-kos")
    with pytest.raises(ValueError, match="no_components"):
        IncrementalRecommender(no_components=0)
    with pytest.raises(ValueError, match="learning_schedule"):
        IncrementalRecommender(learning_schedule="sgd")


def test_adadelta_initialises_accumulators_to_zero():
    recommender = IncrementalRecommender(learning_schedule="adadelta")
    recommender.upsert_item("a", ["brand=x"])
    recommender.fit_partial([("u", "a", 1.0)])
    model = recommender.lightfm_model
    np.testing.assert_array_equal(model.item_embedding_gradients[recommender.n_features:], 0.0)
    recommender.upsert_item("b", ["brand=y"])
    new_row = recommender.n_features - 1
    np.testing.assert_array_equal(model.item_embedding_gradients[new_row], 0.0)
    np.testing.assert_array_equal(model.item_bias_gradients[new_row], 0.0)


def test_empty_batch_is_noop(trained):
    recommender, _, _ = trained
    version = recommender.version
    before = parameter_rows(recommender)
    recommender.fit_partial([])
    assert recommender.version == version
    after = parameter_rows(recommender)
    for name, rows in before.items():
        np.testing.assert_array_equal(after[name], rows, err_msg=name)


def test_same_seed_same_recommendations():
    first, _, _ = train_world(seed=3)
    second, _, _ = train_world(seed=3)
    for user_id in list(preferred_categories())[:10]:
        assert first.recommend(user_id, k=10) == second.recommend(user_id, k=10)
    np.testing.assert_array_equal(first.lightfm_model.user_embeddings,
                                  second.lightfm_model.user_embeddings)


def test_recommend_excludes_seen(trained):
    recommender, _, events = trained
    user_id = "u1-1"
    seen = {item_id for user, item_id, _ in events if user == user_id}
    ranking = recommender.recommend(user_id, k=recommender.n_items)
    assert len(ranking) == recommender.n_items - len(seen)
    assert seen.isdisjoint(item_id for item_id, _ in ranking)
    with_seen = recommender.recommend(user_id, k=recommender.n_items, exclude_seen=False)
    assert len(with_seen) == recommender.n_items
    scores = [score for _, score in with_seen]
    assert scores == sorted(scores, reverse=True)


def test_recommend_unknown_user_uses_item_bias(trained):
    recommender, _, _ = trained
    top = recommender.recommend("never-seen", k=3)
    _, biases = recommender.item_representations()
    assert [score for _, score in top] == pytest.approx(sorted(biases, reverse=True)[:3])


def test_similar_items_share_category(trained):
    recommender, items, _ = trained
    similar = recommender.similar_items("c2-b1-0", k=5)
    assert "c2-b1-0" not in [item_id for item_id, _ in similar]
    assert sum(items[item_id][0] == 2 for item_id, _ in similar) >= 4
    with pytest.raises(KeyError, match="not found"):
        recommender.similar_items("missing")


def test_save_load_round_trip(tmp_path, trained):
    recommender, _, _ = trained
    recommender.save(tmp_path / "model")
    loaded = IncrementalRecommender.load(tmp_path / "model")
    assert loaded.version == recommender.version
    assert (loaded.n_users, loaded.n_items, loaded.n_features) == (
        recommender.n_users, recommender.n_items, recommender.n_features)
    for user_id in preferred_categories():
        assert loaded.recommend(user_id, k=10) == recommender.recommend(user_id, k=10)
    assert loaded.similar_items("c0-b0-0") == recommender.similar_items("c0-b0-0")


def test_training_after_load_matches(tmp_path):
    original, items, _ = train_world(seed=5)
    original.save(tmp_path / "model")
    loaded = IncrementalRecommender.load(tmp_path / "model")
    batch = sample_events(np.random.default_rng(9), items, preferred_categories(), 2)
    batch.append(("late-user", "late-item", 1.0))
    original.fit_partial(batch)
    loaded.fit_partial(batch)
    for user_id in ["late-user", "u0-0", "u4-3"]:
        assert loaded.recommend(user_id, k=10) == original.recommend(user_id, k=10)


def test_load_rejects_unknown_format(tmp_path, trained):
    recommender, _, _ = trained
    recommender.save(tmp_path / "model")
    metadata_path = tmp_path / "model" / "recommender.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["format_version"] = 99
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="format_version 99"):
        IncrementalRecommender.load(tmp_path / "model")


def test_training_matrices_list_history_as_zero():
    seen = [{0, 1, 2}, {3}]
    rows = np.array([0, 0], dtype=np.int32)
    cols = np.array([2, 4], dtype=np.int32)
    history_rows, history_cols = interaction_batch.history_entries(seen, rows, cols)
    assert history_rows.tolist() == [0, 0]
    assert history_cols.tolist() == [0, 1]
    weights = np.array([2.0, 5.0], dtype=np.float32)
    interactions, sample_weight = interaction_batch.training_matrices(
        rows, cols, weights, history_rows, history_cols, shape=(2, 5))
    assert interactions.data.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert sample_weight.data.tolist() == [2.0, 5.0, 0.0, 0.0]
    np.testing.assert_array_equal(interactions.row, sample_weight.row)
    np.testing.assert_array_equal(interactions.col, sample_weight.col)
    # LightFM's negative lookup matrix keeps the explicit zeros.
    assert interactions.tocsr()[0].nnz == 4


def test_merge_interactions_adds_repeats():
    merged = interaction_batch.merge_interactions([("u", "i", 1.0), ("u", "j", 2.0),
                                                   ("u", "i", 5.0)])
    assert merged == {("u", "i"): 6.0, ("u", "j"): 2.0}
