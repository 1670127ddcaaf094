"""Dataset loaders: Amazon 2018 reviews + metadata, Tianchi UserBehavior CSV.

Tests on the real files need SHOPSYNTH_DATA_DIR with the folders
``amazon2018_gift_cards_5core`` and ``taobao_userbehavior_sample``. The tests
compute the expected counts from the files instead of copying documented numbers.
"""

from __future__ import annotations

import collections
import gzip
import html
import json
import os
from pathlib import Path

import orjson
import pytest

from streams.loaders import LoadedEvents
from streams.loaders.amazon import clean_category, clean_html, load_amazon2018, parse_price
from streams.loaders.tianchi import BEHAVIOUR_TYPES, DATASET_START_S, load_tianchi_behaviour
from streams.schemas import parse_product_created, parse_user_behaviour


def dataset_dir(name: str) -> Path:
    root = os.environ.get("SHOPSYNTH_DATA_DIR")
    if not root:
        pytest.skip("SHOPSYNTH_DATA_DIR is unset; point it at the directory with the datasets")
    path = Path(root) / name
    if not path.is_dir():
        pytest.skip(f"{path} does not exist")
    return path


def read_json_lines(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def assert_parses(loaded: LoadedEvents) -> None:
    for product in loaded.products:
        parse_product_created(orjson.dumps(product))
    for event in loaded.behaviour:
        parse_user_behaviour(orjson.dumps(event))


def assert_product_first(loaded: LoadedEvents) -> None:
    seen: set[str] = set()
    for topic, _, event in loaded.events():
        if topic == "product-created":
            seen.add(event["item_id"])
        else:
            assert event["item_id"] in seen, f"purchase of {event['item_id']} before its creation"


@pytest.fixture(scope="module")
def amazon_dir() -> Path:
    return dataset_dir("amazon2018_gift_cards_5core")


@pytest.fixture(scope="module")
def amazon_files(amazon_dir: Path) -> tuple[list[dict], list[dict]]:
    return (read_json_lines(amazon_dir / "Gift_Cards_5.json.gz"),
            read_json_lines(amazon_dir / "meta_Gift_Cards.json.gz"))


@pytest.fixture(scope="module")
def amazon(amazon_dir: Path) -> LoadedEvents:
    return load_amazon2018(amazon_dir)


def test_amazon_counts_match_files(amazon: LoadedEvents, amazon_files) -> None:
    reviews, meta = amazon_files
    reviewed = {r["asin"] for r in reviews}
    titled = {m["asin"] for m in meta if html.unescape(m.get("title") or "").strip()}
    assert len(amazon.behaviour) == len(reviews)
    assert len(amazon.products) == len(reviewed & titled)
    assert amazon.skipped == {}


def test_amazon_purchase_times(amazon: LoadedEvents, amazon_files) -> None:
    reviews, _ = amazon_files
    expected = collections.Counter((r["reviewerID"], r["asin"], r["unixReviewTime"] * 1000)
                                   for r in reviews)
    loaded = collections.Counter((e["user_id"], e["item_id"], e["timestamp_ms"])
                                 for e in amazon.behaviour)
    assert loaded == expected
    assert {e["event_type"] for e in amazon.behaviour} == {"purchase"}


def test_amazon_created_before_first_review(amazon: LoadedEvents, amazon_files) -> None:
    reviews, _ = amazon_files
    first_ms: dict[str, int] = {}
    for review in reviews:
        ms = review["unixReviewTime"] * 1000
        first_ms[review["asin"]] = min(first_ms.get(review["asin"], ms), ms)
    for product in amazon.products:
        assert product["created_at_ms"] == first_ms[product["item_id"]] - 1000


def test_amazon_timestamp_order(amazon: LoadedEvents) -> None:
    times = [e["timestamp_ms"] for e in amazon.behaviour]
    created = [p["created_at_ms"] for p in amazon.products]
    assert times == sorted(times)
    assert created == sorted(created)
    assert_product_first(amazon)


def test_amazon_events_pass_schema(amazon: LoadedEvents) -> None:
    assert_parses(amazon)


def test_amazon_fields_cleaned(amazon: LoadedEvents, amazon_files) -> None:
    _, meta = amazon_files
    raw_price = {m["asin"]: m.get("price", "") for m in meta}
    for product in amazon.products:
        assert len(product["category"]) == len(set(product["category"]))
        assert "&amp;" not in (product["description"] or "")
        assert "<br" not in (product["description"] or "")
        assert "asin" not in product["attributes"]
        if raw_price[product["item_id"]].startswith("$") and product["price"] is not None:
            assert product["price"] == float(raw_price[product["item_id"]][1:].replace(",", ""))
    assert any(p["price"] is not None for p in amazon.products)


def test_amazon_event_ids_stable(amazon: LoadedEvents, amazon_dir: Path) -> None:
    again = load_amazon2018(amazon_dir)
    ids = [e["event_id"] for e in amazon.behaviour] + [p["event_id"] for p in amazon.products]
    assert ids == [e["event_id"] for e in again.behaviour] + [p["event_id"] for p in again.products]
    assert len(set(ids)) == len(ids)


def test_amazon_limit(amazon_dir: Path, amazon_files) -> None:
    reviews, _ = amazon_files
    loaded = load_amazon2018(amazon_dir, limit=100)
    assert len(loaded.behaviour) == 100
    assert {p["item_id"] for p in loaded.products} == {r["asin"] for r in reviews[:100]}


def test_amazon_all_metadata_items(amazon_dir: Path, amazon_files) -> None:
    reviews, meta = amazon_files
    loaded = load_amazon2018(amazon_dir, only_reviewed_items=False)
    titled = {m["asin"] for m in meta if html.unescape(m.get("title") or "").strip()}
    earliest_ms = min(r["unixReviewTime"] for r in reviews) * 1000
    assert len(loaded.products) == len(titled)
    assert min(p["created_at_ms"] for p in loaded.products) == earliest_ms - 1000
    assert_product_first(loaded)


@pytest.fixture(scope="module")
def taobao_file() -> Path:
    return dataset_dir("taobao_userbehavior_sample") / "UserBehavior_head84k.csv.gz"


@pytest.fixture(scope="module")
def taobao_rows(taobao_file: Path) -> list[list[str]]:
    with gzip.open(taobao_file, "rt", encoding="utf-8") as handle:
        return [line.rstrip("\n").split(",") for line in handle]


@pytest.fixture(scope="module")
def taobao(taobao_file: Path) -> LoadedEvents:
    return load_tianchi_behaviour(taobao_file.parent)


def test_tianchi_counts_match_file(taobao: LoadedEvents, taobao_rows) -> None:
    early = sum(int(row[4]) < DATASET_START_S for row in taobao_rows)
    assert len(taobao.behaviour) == len(taobao_rows) - early
    assert taobao.skipped == ({"before_min_timestamp": early} if early else {})


def test_tianchi_event_types(taobao: LoadedEvents, taobao_rows) -> None:
    expected = collections.Counter(BEHAVIOUR_TYPES[row[3]] for row in taobao_rows
                                   if int(row[4]) >= DATASET_START_S)
    assert collections.Counter(e["event_type"] for e in taobao.behaviour) == expected


def test_tianchi_timestamp_order(taobao: LoadedEvents) -> None:
    times = [e["timestamp_ms"] for e in taobao.behaviour]
    assert times == sorted(times)
    assert times[0] >= DATASET_START_S * 1000


def test_tianchi_events_pass_schema(taobao: LoadedEvents) -> None:
    assert_parses(taobao)


def test_tianchi_category_and_ids(taobao: LoadedEvents, taobao_rows) -> None:
    by_key = {(row[0], row[1], int(row[4]) * 1000): row[2] for row in taobao_rows}
    for event in taobao.behaviour[:1000]:
        assert event["category"] == by_key[(event["user_id"], event["item_id"], event["timestamp_ms"])]
    assert len({e["event_id"] for e in taobao.behaviour}) == len(taobao.behaviour)


def test_tianchi_limit(taobao_file: Path) -> None:
    loaded = load_tianchi_behaviour(taobao_file, limit=1000)
    assert len(loaded.behaviour) + sum(loaded.skipped.values()) == 1000


def test_tianchi_skips_bad_rows(tmp_path: Path) -> None:
    rows = [
        f"1,10,100,pv,{DATASET_START_S + 5}",
        f"1,11,100,buy,{DATASET_START_S + 1}",
        "1,12,100,pv",  # four columns
        f"x,12,100,pv,{DATASET_START_S}",  # user id not an integer
        f"1,12,100,pv,soon",  # timestamp not an integer
        f"1,12,100,like,{DATASET_START_S}",  # unknown behaviour
        f"1,13,100,fav,{DATASET_START_S - 1}",  # before the dataset start
        f"2,14,101,cart,{DATASET_START_S + 3}",
    ]
    path = tmp_path / "behaviour.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    loaded = load_tianchi_behaviour(tmp_path)
    assert [e["item_id"] for e in loaded.behaviour] == ["11", "14", "10"]
    assert [e["event_type"] for e in loaded.behaviour] == ["purchase", "cart", "view"]
    assert loaded.skipped == {"malformed_row": 3, "unknown_behavior_type": 1,
                              "before_min_timestamp": 1}


def write_json_lines_gz(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def test_amazon_skips_bad_rows(tmp_path: Path) -> None:
    review = {"reviewerID": "U1", "asin": "A1", "unixReviewTime": 1_500_000_000, "overall": 5.0}
    write_json_lines_gz(tmp_path / "Toys_5.json.gz", [
        json.dumps(review),
        "{not json",
        json.dumps({"reviewerID": "U2", "asin": "A2"}),  # no time
        json.dumps({**review, "asin": "A2", "unixReviewTime": 1_400_000_000}),
    ])
    write_json_lines_gz(tmp_path / "meta_Toys.json.gz", [
        json.dumps({"asin": "A1", "title": "Wooden &amp; Metal Train",
                    "category": ["Toys", "Toys", "Trains", "Fun for all ages."],
                    "price": "$1,250.00", "description": ["<b>Solid</b> wood<br/>Ages 3+"],
                    "details": {"ASIN:": "A1", "\n  Item Weight: \n": "2 pounds"}}),
        json.dumps({"asin": "A2", "title": "   "}),
    ])
    loaded = load_amazon2018(tmp_path)
    assert [e["item_id"] for e in loaded.behaviour] == ["A2", "A1"]
    assert loaded.skipped == {"malformed_review": 2, "metadata_without_title": 1}
    (product,) = loaded.products
    assert product["title"] == "Wooden & Metal Train"
    assert product["category"] == ["Toys", "Trains"]
    assert product["price"] == 1250.0
    assert product["description"] == "Solid wood\nAges 3+"
    assert product["attributes"] == {"item_weight": "2 pounds"}
    assert_parses(loaded)


@pytest.mark.parametrize("text, price", [
    ("$25.00", 25.0), ("$1,250.00", 1250.0), (" $7.99 ", 7.99), ("", None),
    ("$10.00 - $20.00", None), (".a-box-inner{color:#fff}", None), (None, None),
])
def test_parse_price(text, price) -> None:
    assert parse_price(text) == price


def test_clean_category_stops_at_debris() -> None:
    path = ["Gift Cards", "Gift Cards", "</span></span>", "Starbucks Gift Card 25"]
    assert clean_category(path) == ["Gift Cards"]


def test_clean_html_unescapes() -> None:
    assert clean_html("Fish &amp; <i>chips</i><p>Fresh</p>") == "Fish & chips\nFresh"
