"""Preprocessing, corpus readers and split of the generator's fine-tuning data.

The readers run on small files written here in each source's format; a second
group reads the real datasets when ``SHOPSYNTH_DATA_DIR`` is set.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
from pathlib import Path

import pytest

from models import corpora
from models.text_prep import (
    TextExample,
    detect_language,
    normalise_text,
    prepare_examples,
    sentiment_from_classifier,
    sentiment_from_rating,
    split_by_item,
)


def _example(item_id: str, target: str, *, language: str = "en", task: str = "description") -> TextExample:
    listing = {"item_id": item_id, "title": "t", "language": language}
    return TextExample(task=task, language=language, item_id=item_id, listing=listing, target=target)


def test_normalise_text_full_width_and_html():
    text = normalise_text("<p>这款ＡＢＣ外套，很好！\u200b价格：１２３元。</p>&amp;")
    assert text == "这款ABC外套，很好！价格：123元。 &"


def test_normalise_text_control_characters():
    assert normalise_text("\ufeffa\x00b\u202e c\n\n d") == "ab c d"


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("A white denim jacket that goes with everything.", "en"),
        ("白色的牛仔外套，十分百搭。", "zh"),
        ("这款Nike运动鞋很轻", "zh"),
        ("12345 !!!", None),
        ("Ceci est une phrase française avec des accents éèà.", "en"),
    ],
)
def test_detect_language(text, language):
    assert detect_language(text) == language


def test_sentiment_from_rating():
    assert [sentiment_from_rating(r) for r in range(1, 6)] == ["negative"] * 2 + ["neutral"] + ["positive"] * 2
    with pytest.raises(ValueError, match="invalid rating 6"):
        sentiment_from_rating(6)


def test_sentiment_from_classifier_chinese():
    assert sentiment_from_classifier("质量非常好，很喜欢，还会再买") == "positive"
    assert sentiment_from_classifier("太差了，质量很烂，退货") == "negative"


def test_prepare_examples_drops_and_cuts():
    long_text = "这件外套非常好看。" * 60
    examples = [
        _example("a", "A plain cotton shirt with a spread collar and long sleeves."),
        _example("b", "A plain cotton shirt with a spread collar and long sleeves."),  # duplicate
        _example("c", "Too short."),
        _example("d", "这是一件中文描述，不是英文，应该被丢弃。"),  # wrong language
        _example("e", long_text, language="zh"),
    ]
    kept = prepare_examples(examples, source="test")
    assert [example.item_id for example in kept] == ["a", "e"]
    assert len(kept[1].target) <= 300
    assert kept[1].target.endswith("。")


def test_split_by_item_keeps_items_together():
    examples = [_example(f"item-{i % 50}", f"text number {i} " * 5) for i in range(400)]
    train, validation = split_by_item(examples, validation_share=0.2, seed=3)
    assert len(train) + len(validation) == 400
    assert {e.item_id for e in train}.isdisjoint({e.item_id for e in validation})
    assert 0 < len({e.item_id for e in validation}) < 50
    again_train, _ = split_by_item(list(reversed(examples)), validation_share=0.2, seed=3)
    assert {e.item_id for e in again_train} == {e.item_id for e in train}


def test_split_by_item_rejects_bad_share():
    with pytest.raises(ValueError, match="validation_share 1.0"):
        split_by_item([], validation_share=1.0)


def test_text_example_rejects_unknown_task():
    with pytest.raises(ValueError, match="invalid task 'summary'"):
        TextExample(task="summary", language="en", item_id="x", listing={}, target="t")


def test_parse_advertisegen_content():
    attributes = corpora.parse_advertisegen_content("类型#裙*颜色#红色*风格#复古*风格#文艺*坏#*#值")
    assert attributes == {"类型": ["裙"], "颜色": ["红色"], "风格": ["复古", "文艺"]}
    listing = corpora.advertisegen_listing("类型#裤*版型#宽松*裤型#阔腿裤", item_id="x")
    assert listing["title"] == "宽松阔腿裤"
    assert listing["category"] == ["服装", "裤"]
    assert listing["attributes"] == {"版型": "宽松", "裤型": "阔腿裤"}
    assert listing["language"] == "zh"


def test_read_advertisegen_masks(tmp_path):
    path = tmp_path / "adgen.jsonl.gz"
    rows = [
        {"content": "类型#上衣*颜色#白色", "summary": "这款BRAND上衣简约大方，白色百搭，穿着舒适。"},
        {"content": "类型#裙*颜色#黑色", "summary": "这款<UNK>裙子很好看。"},
    ]
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    examples = corpora.read_advertisegen(path)
    assert len(examples) == 1
    assert "BRAND" not in examples[0].target
    assert examples[0].target.startswith("这款上衣")


def test_read_online_shopping_reviews_takes_groups_in_turn(tmp_path):
    path = tmp_path / "reviews.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cat", "label", "review"])
        for index in range(10):
            writer.writerow(["书籍", "1", f"这本书写得很好，第{index}次推荐给朋友。"])
        writer.writerow(["水果", "0", "苹果不新鲜，有点烂了，很失望。"])
        writer.writerow(["水果", "", "苹果很甜，水分很足，非常喜欢。"])
        writer.writerow(["水果", "1", ""])
    examples = corpora.read_online_shopping_reviews(path, limit=3)
    assert {e.listing["title"] for e in examples} == {"书籍", "水果"}
    unlabeled = corpora.read_online_shopping_reviews(path)
    by_text = {e.target: e.sentiment for e in unlabeled}
    assert by_text["苹果不新鲜，有点烂了，很失望。"] == "negative"
    assert by_text["苹果很甜，水分很足，非常喜欢。"] == "positive"
    assert len(unlabeled) == 12


def test_read_amazon_reviews_deduplicates(tmp_path):
    meta = tmp_path / "meta.json.gz"
    reviews = tmp_path / "reviews.json.gz"
    with gzip.open(meta, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"asin": "A1", "title": "Steel water bottle", "brand": "Acme"}) + "\n")
    review = {"reviewerID": "u1", "asin": "A1", "unixReviewTime": 5, "overall": 2.0,
              "reviewText": "It leaks after a week of use and the lid cracked."}
    with gzip.open(reviews, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps(review) + "\n")
        handle.write(json.dumps(review) + "\n")
        handle.write(json.dumps(review | {"asin": "MISSING"}) + "\n")
    examples = corpora.read_amazon_reviews(reviews, meta)
    assert len(examples) == 1
    assert examples[0].rating == 2
    assert examples[0].sentiment == "negative"
    assert examples[0].listing["title"] == "Steel water bottle"


def test_resolve_data_dir_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("SHOPSYNTH_DATA_DIR", raising=False)
    with pytest.raises(ValueError, match="SHOPSYNTH_DATA_DIR"):
        corpora.resolve_data_dir(None)
    with pytest.raises(ValueError, match="not a directory"):
        corpora.resolve_data_dir(tmp_path / "missing")


DATA_DIR = os.environ.get("SHOPSYNTH_DATA_DIR")
needs_data = pytest.mark.skipif(not DATA_DIR or not Path(DATA_DIR).is_dir(), reason="SHOPSYNTH_DATA_DIR is not set")


@needs_data
@pytest.mark.parametrize("language", ["en", "zh"])
def test_real_corpus_has_both_tasks(language):
    examples = corpora.load_corpus(language, data_dir=DATA_DIR, limit_per_source=300)
    tasks = {example.task for example in examples}
    assert tasks == {"description", "review"}
    assert all(detect_language(example.target) == language for example in examples)
    reviews = [example for example in examples if example.task == "review"]
    assert all(example.sentiment in {"negative", "neutral", "positive"} for example in reviews)
    if language == "zh":
        assert {example.sentiment for example in reviews} == {"negative", "positive"}
