"""Tests of the worker's recommender side without a broker: decay, text features, snapshots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.features import listing_text_tokens
from models.interaction_batch import decay_weights
from models.recommender import IncrementalRecommender
from streams import snapshots
from streams.agents.behaviour import _fit_and_recommend
from streams.agents.product import _upsert_items, item_tokens
from streams.enrichment import Enricher
from streams.settings import Settings
from streams.simulator import Simulator
from streams.state import WorkerState

DAY_S = 24 * 3600.0


def make_state(tmp_path, **settings_overrides):
    settings = Settings(snapshot_dir=str(tmp_path / "snapshots"), **settings_overrides)
    state = WorkerState(enricher=Enricher(generator=None),
                        recommender=IncrementalRecommender(no_components=8, random_state=0),
                        snapshot_dir=tmp_path / "snapshots")
    return state, settings


def feed_simulator(state, settings, *, n_events=600, batch_size=100):
    simulator = Simulator(seed=1, n_items=40, n_users=12)
    _upsert_items(state, [dict(p, description_synthetic=False, reviews=[]) for p in simulator.products()],
                  settings)
    events = simulator.behaviour(n_events)
    for start in range(0, len(events), batch_size):
        _fit_and_recommend(state, events[start:start + batch_size], settings)
    return simulator, events


def test_decay_halves_per_half_life():
    weights = decay_weights([4.0, 4.0, 4.0], [10_000, 8_000, 12_000], reference_ms=10_000, half_life_s=2.0)
    assert weights[0] == pytest.approx(4.0)
    assert weights[1] == pytest.approx(2.0)
    assert weights[2] == pytest.approx(4.0)


def test_decay_off_and_floor():
    assert np.array_equal(decay_weights([3.0], [0], reference_ms=10**12, half_life_s=0.0), [3.0])
    floored = decay_weights([1.0], [0], reference_ms=10**12, half_life_s=1.0, min_weight=1e-6)
    assert floored[0] == pytest.approx(1e-6)
    with pytest.raises(ValueError, match="half_life_s"):
        decay_weights([1.0], [0], reference_ms=0, half_life_s=-1.0)


def test_decay_old_events_weigh_less_in_model():
    """A user whose purchases of A are old and of B are fresh ranks B's category higher."""
    def train(half_life_s):
        recommender = IncrementalRecommender(no_components=8, random_state=0)
        for category in ("a", "b"):
            for number in range(20):
                recommender.upsert_item(f"{category}{number}", [f"cat={category}"])
        state = WorkerState(enricher=Enricher(generator=None), recommender=recommender)
        settings = Settings(event_half_life_s=half_life_s, similar_items_k=0)
        now_ms = 1_700_000_000_000
        old_ms = now_ms - int(30 * DAY_S * 1000)
        batch = []
        for number in range(10):
            batch.append({"event_id": f"o{number}", "user_id": "u", "item_id": f"a{number}",
                          "event_type": "purchase", "timestamp_ms": old_ms, "weight": None, "category": None})
            batch.append({"event_id": f"n{number}", "user_id": "u", "item_id": f"b{number}",
                          "event_type": "view", "timestamp_ms": now_ms, "weight": None, "category": None})
        for _ in range(15):
            _fit_and_recommend(state, batch, settings)
        top = [item for item, _ in recommender.recommend("u", k=6)]
        return sum(item.startswith("b") for item in top)

    assert train(half_life_s=DAY_S) > train(half_life_s=0.0)


def test_text_tokens_synthetic_weight_setting():
    record = {"title": "Linen shirt", "description": "breathable cotton summer", "description_synthetic": True,
              "reviews": [{"rating": 5, "text": "soft cotton", "synthetic": False}], "language": "en"}
    weights = dict(listing_text_tokens(record, synthetic_weight=0.1))
    assert weights["text=breathable"] == pytest.approx(0.1)
    assert weights["text=cotton"] == pytest.approx(1.0)  # also in a real review
    assert weights["text=linen"] == pytest.approx(1.0)
    assert dict(item_tokens(record, Settings(text_weight=1.0, synthetic_text_weight=0.5)))["text=breathable"] == 0.5
    assert dict(item_tokens(record, Settings(text_weight=0.5, synthetic_text_weight=0.5)))["text=breathable"] == 0.25
    assert all(isinstance(t, str) for t in item_tokens(record, Settings(text_features=False)))


def test_synthetic_weight_changes_item_features(tmp_path):
    record = {"item_id": "x", "title": "Lamp", "description": "warm light brass desk",
              "description_synthetic": True, "reviews": [], "language": "en", "category": ["Home"]}
    rows = {}
    for weight in (0.05, 1.0):
        state, settings = make_state(tmp_path, synthetic_text_weight=weight)
        _upsert_items(state, [record], settings)
        recommender = state.recommender
        columns, values = recommender._item_rows.row(recommender.item_index["x"])
        tokens = [recommender._features.id_of(int(c)) for c in columns]
        rows[weight] = dict(zip(tokens, values.tolist()))
    assert rows[0.05]["text=brass"] < rows[1.0]["text=brass"]
    assert rows[0.05]["cat=home"] > rows[1.0]["cat=home"]


def test_similar_items_for_new_items(tmp_path):
    state, settings = make_state(tmp_path, similar_items_k=5)
    simulator, events = feed_simulator(state, settings)
    _, similar = _fit_and_recommend(state, events[:50], settings)
    assert set(similar) == {event["item_id"] for event in events[:50]}
    for item_id, neighbours in similar.items():
        assert 0 < len(neighbours) <= 5
        assert item_id not in [other for other, _ in neighbours]
    first_item = next(iter(similar))
    single = state.recommender.similar_items(first_item, k=5)
    assert [item for item, _ in similar[first_item]] == [item for item, _ in single]
    assert np.allclose([s for _, s in similar[first_item]], [s for _, s in single], rtol=1e-5)


def test_recommend_many_matches_recommend(tmp_path):
    state, settings = make_state(tmp_path)
    _, events = feed_simulator(state, settings)
    users = sorted({event["user_id"] for event in events})[:5] + ["nobody"]
    many = state.recommender.recommend_many(users, k=7)
    for user in users:
        single = state.recommender.recommend(user, k=7)
        assert [item for item, _ in many[user]] == [item for item, _ in single]
        assert np.allclose([s for _, s in many[user]], [s for _, s in single], rtol=1e-5)


def test_snapshot_round_trip_same_recommendations(tmp_path):
    state, settings = make_state(tmp_path)
    _, events = feed_simulator(state, settings)
    path = state.save_snapshot()
    assert path is not None and path.parent == tmp_path / "snapshots"
    assert state.save_snapshot() is None  # nothing changed since

    restored = snapshots.restore_latest(tmp_path / "snapshots")
    assert restored is not None
    users = sorted({event["user_id"] for event in events})
    assert restored.recommender.version == state.recommender.version
    assert restored.recommender.recommend_many(users, k=10) == state.recommender.recommend_many(users, k=10)
    assert restored.interactions == state.interactions
    assert restored.watermark_ms == state.watermark_ms

    # Training after the restore continues exactly as without it.
    follow_up = events[:80]
    other, _ = make_state(tmp_path / "other")
    other.restore(restored)
    _fit_and_recommend(state, follow_up, settings)
    _fit_and_recommend(other, follow_up, settings)
    assert other.recommender.recommend_many(users, k=10) == state.recommender.recommend_many(users, k=10)


def test_snapshot_keeps_newest_and_skips_broken(tmp_path):
    state, settings = make_state(tmp_path)
    _, events = feed_simulator(state, settings, n_events=200)
    first = state.save_snapshot()
    _fit_and_recommend(state, events[:40], settings)
    second = state.save_snapshot()
    _fit_and_recommend(state, events[40:80], settings)
    third = state.save_snapshot()
    remaining = snapshots.list_snapshots(tmp_path / "snapshots")
    assert remaining == [second, third]
    assert not first.exists()

    (third / "recommender.npz").write_bytes(b"broken")
    restored = snapshots.restore_latest(tmp_path / "snapshots")
    assert restored is not None and restored.path == second


def test_snapshot_rejects_unknown_format(tmp_path):
    state, _ = make_state(tmp_path)
    state.recommender.upsert_item("a", ["cat=x"])
    path = state.save_snapshot()
    metadata = json.loads((path / snapshots.WORKER_FILE).read_text())
    metadata["format_version"] = 99
    (path / snapshots.WORKER_FILE).write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="format_version"):
        snapshots.load_snapshot(path)
    assert snapshots.restore_latest(tmp_path / "snapshots") is None


def test_no_temporary_directories_left(tmp_path):
    state, _ = make_state(tmp_path)
    state.recommender.upsert_item("a", ["cat=x"])
    state.save_snapshot()
    names = [p.name for p in (tmp_path / "snapshots").iterdir()]
    assert names and all(name.startswith(snapshots.PREFIX) for name in names)
