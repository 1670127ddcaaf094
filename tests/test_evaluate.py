"""Tests of the cold-start experiment, BM25 search lift and report on tiny made-up datasets."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest

from models.evaluate import ExperimentConfig, _ranking_metrics, run_experiment, split_items, variant_tokens
from models.evaluate_data import Dataset, load_dataset
from models.evaluate_report import mean_ci, paired_difference, write_report
from models.search import ListingIndex, keyword_queries, retrieval_metrics, search_lift

GROUP_WORDS = ("stapler", "notebook", "printer", "lamp")


def tiny_dataset(*, n_items=80, n_users=120, seed=0):
    """Items in 4 groups whose only signal is a group word in the text; users stick to one group."""
    rng = np.random.default_rng(seed)
    listings, texts = {}, {}
    for item in range(n_items):
        group = item % 4
        listings[str(item)] = {"item_id": str(item), "title": f"thing {item}", "brand": None, "category": [],
                               "attributes": {}, "price": None, "currency": None, "language": "en"}
        texts[str(item)] = f"{GROUP_WORDS[group]} {GROUP_WORDS[group]} model {item} sturdy"
    sequences = {}
    for user in range(n_users):
        group = user % 4
        items = [str(i) for i in rng.choice(np.arange(group, n_items, 4), size=8, replace=False)]
        sequences[f"u{user}"] = items
    return Dataset(name="Tiny", listings=listings, texts=texts, text_field="description", sequences=sequences)


def test_split_holds_out_cold_items():
    dataset = tiny_dataset()
    split = split_items(dataset, seed=1, cold_fraction=0.2)
    cold = set(split.cold_items)
    assert len(cold) == 16
    assert not cold & {item for _, item in split.train}
    assert all(items <= cold for items in split.cold_test.values())
    for user, item in split.warm_test.items():
        assert item not in cold
        assert (user, item) not in set(split.train)
    assert split_items(dataset, seed=1, cold_fraction=0.2).cold_items == split.cold_items
    assert split_items(dataset, seed=2, cold_fraction=0.2).cold_items != split.cold_items


def test_split_rejects_bad_fraction():
    with pytest.raises(ValueError, match="cold_fraction"):
        split_items(tiny_dataset(), seed=0, cold_fraction=1.5)


def test_ranking_metrics_perfect_and_reversed():
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    auc, recall, ndcg = _ranking_metrics(scores, np.array([0, 1]))
    assert (auc, recall, ndcg) == (1.0, 1.0, pytest.approx(1.0))
    auc, recall, ndcg = _ranking_metrics(-scores, np.array([0, 1]))
    assert auc == 0.0
    excluded = scores.copy()
    excluded[2] = -np.inf
    auc, _, _ = _ranking_metrics(excluded, np.array([4]))
    assert auc == 0.0  # the excluded item is not a negative


def test_variant_tokens_text_only_where_allowed():
    dataset = tiny_dataset()
    cold = {"0", "1"}
    config = ExperimentConfig()
    cf = variant_tokens(dataset, "cf", cold_items=cold, synthetic={}, config=config)
    assert cf["0"] == []
    metadata = variant_tokens(dataset, "metadata", cold_items=cold, synthetic={}, config=config)
    assert not any(isinstance(t, tuple) and t[0] == "text=stapler" for t in metadata["0"])
    synthetic = variant_tokens(dataset, "metadata+synthetic", cold_items=cold, synthetic={"0": "gadget"},
                               config=config)
    words = {t[0] for t in synthetic["0"] if isinstance(t, tuple)}
    assert "text=gadget" in words and "text=stapler" not in words
    warm_words = {t[0] for t in synthetic["4"] if isinstance(t, tuple)}
    assert "text=stapler" in warm_words
    with pytest.raises(ValueError, match="unknown variant"):
        variant_tokens(dataset, "magic", cold_items=cold, synthetic={}, config=config)


def test_text_helps_cold_items_when_it_carries_the_signal():
    dataset = tiny_dataset()
    config = ExperimentConfig(cold_fraction=0.2, epochs=15, no_components=8, text_weight=1.0)
    rows = run_experiment(dataset, seeds=[0], variants=["cf", "metadata+real", "metadata+synthetic"],
                          synthetic={item: "gadget" for item in dataset.listings}, config=config)
    by_variant = {row["variant"]: row for row in rows}
    assert by_variant["metadata+real"]["cold_auc"] > by_variant["cf"]["cold_auc"] + 0.2
    assert by_variant["metadata+synthetic"]["synthetic_coverage"] == 1.0
    assert all(0.0 <= row["warm_auc"] <= 1.0 for row in rows)


def test_mean_ci_and_paired_difference():
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-4)
    assert math.isnan(mean_ci([1.0])[1])
    rows = [{"dataset": "d", "seed": s, "variant": v, "m": value}
            for s, (a, b) in enumerate([(1.0, 2.0), (1.0, 2.5), (1.0, 3.0)]) for v, value in (("a", a), ("b", b))]
    mean, half, n = paired_difference(rows, key="variant", metric="m", better="b", worse="a")
    assert (mean, n) == (1.5, 3)
    assert half > 0


def test_keyword_queries_pick_distinctive_words():
    texts = {"a": "stapler heavy duty stapler metal", "b": "metal lamp bright", "c": "metal notebook ruled"}
    queries = keyword_queries(texts, query_items=["a", "b"], n_words=2)
    assert queries["a"].split()[0] == "stapler"
    assert "metal" not in queries["b"].split()
    excluded = keyword_queries(texts, query_items=["a"], n_words=2, exclude={"a": "Stapler"})
    assert "stapler" not in excluded["a"].split()


def test_bm25_index_finds_item():
    index = ListingIndex({"a": "red stapler", "b": "blue lamp", "c": "green notebook"})
    assert index.search(["lamp"], k=1) == [["b"]]
    metrics = retrieval_metrics(index, {"a": "stapler", "c": "notebook"}, k=1)
    assert metrics["recall@1"] == 1.0 and metrics["mrr"] == 1.0


def test_search_lift_real_text_beats_raw():
    dataset = tiny_dataset(n_items=40)
    cold = ["0", "1", "2", "3"]
    queries = {item: GROUP_WORDS[int(item) % 4] for item in cold}
    results = search_lift(dataset.listings, cold_items=cold, real_texts=dataset.texts, queries=queries,
                          enriched_texts={"real": {item: dataset.texts[item] for item in cold}}, k=10)
    assert list(results) == ["raw", "real"]
    assert results["raw"]["mrr"] == 0.0  # a raw cold listing has no group word
    assert results["real"]["mrr"] > 0.0


def test_report_lists_variants_and_plots(tmp_path):
    rows = [{"dataset": "Tiny", "variant": v, "seed": s, "cold_auc": 0.5 + 0.1 * i, "cold_recall@20": 0.1,
             "cold_ndcg@20": 0.05, "cold_users": 10.0, "warm_auc": 0.7, "warm_recall@20": 0.2,
             "warm_ndcg@20": 0.1, "warm_users": 20.0, "train_s": 1.0}
            for s in (0, 1, 2) for i, v in enumerate(("cf", "metadata"))]
    search = [{"dataset": "Tiny", "seed": s, "queries": "q", "index": index, "recall@10": r, "mrr": r / 2,
               "n_queries": 4.0} for s in (0, 1, 2) for index, r in (("raw", 0.1 + s / 100), ("real", 0.8))]
    path = write_report({"config": {"epochs": 1}, "seeds": [0, 1, 2], "runs": rows, "search": search},
                        output_dir=tmp_path, name="report")
    text = path.read_text()
    assert "(a) collaborative filtering only" in text and "(b) metadata" in text
    assert "real − raw" in text and ": gain." in text
    assert (tmp_path / "report_tiny_cold.png").stat().st_size > 0
    assert (tmp_path / "report_search.png").stat().st_size > 0


def test_load_both_formats(tmp_path):
    lcrec = tmp_path / "lcrec"
    lcrec.mkdir()
    with gzip.open(lcrec / "Shop.item.json.gz", "wt") as handle:
        json.dump({"0": {"title": "Pen &amp; cap", "description": "A pen.", "brand": "B",
                         "categories": "Office, Pens"}, "1": {"title": "Pad", "description": "",
                                                               "brand": "", "categories": "Office"}}, handle)
    with gzip.open(lcrec / "Shop.inter.json.gz", "wt") as handle:
        json.dump({"7": [0, 1]}, handle)
    dataset = load_dataset(str(lcrec))
    assert dataset.listings["0"]["title"] == "Pen & cap"
    assert dataset.listings["0"]["category"] == ["Office", "Pens"]
    assert dataset.texts == {"0": "A pen."}
    assert dataset.sequences == {"7": ["0", "1"]}

    s3rec = tmp_path / "s3rec"
    s3rec.mkdir()
    (s3rec / "Beauty.txt").write_text("1 1 2\n2 2\n")
    with gzip.open(s3rec / "Beauty_datamaps_p5.json.gz", "wt") as handle:
        json.dump({"id2item": {"1": "A1", "2": "A2"}}, handle)
    (s3rec / "Beauty_items_meta.tsv").write_text(
        "item_id:token\ttitle:token\tsales_type:token\tsales_rank:float\tcategories:token_seq\tprice:float\t"
        "brand:token\nA1\tLip balm\tBeauty\t1.0\t'Beauty', 'Lips'\t3.5\tAcme\nA2\t\tBeauty\t2.0\t'Beauty'\t\t\n")
    dataset = load_dataset(str(s3rec))
    assert dataset.text_field == "title"
    assert dataset.listings["1"]["category"] == ["Beauty", "Lips"]
    assert dataset.listings["1"]["price"] == 3.5
    assert dataset.texts == {"1": "Lip balm"}
    assert dataset.sequences == {"1": ["1", "2"], "2": ["2"]}

    with pytest.raises(ValueError, match="neither"):
        load_dataset(str(tmp_path))


def test_merge_results_keeps_each_setup(tmp_path):
    from models.evaluate_report import merge_results

    row = {"dataset": "A", "variant": "cf", "seed": 0}
    first, second, other_seeds = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    first.write_text(json.dumps({"config": {"epochs": 1}, "seeds": [0], "runs": [row], "search": []}))
    second.write_text(json.dumps({"config": {"epochs": 2}, "seeds": [0], "runs": [dict(row, dataset="B")],
                                  "search": [], "generators": {"B": {"train_steps": 8}}}))
    other_seeds.write_text(json.dumps({"config": {"epochs": 1}, "seeds": [1], "runs": [], "search": []}))
    merged = merge_results([first, second])
    assert [entry["datasets"] for entry in merged["configs"]] == [["A"], ["B"]]
    assert [entry["config"]["epochs"] for entry in merged["configs"]] == [1, 2]
    assert len(merged["runs"]) == 2
    assert merged["generators"] == {"B": {"train_steps": 8}}
    with pytest.raises(ValueError, match="seeds"):
        merge_results([first, other_seeds])
    repeated = merge_results([first, first])
    assert len(repeated["runs"]) == 1
