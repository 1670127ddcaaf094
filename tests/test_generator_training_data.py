"""Readers of (listing, description) pairs: synthetic files, plus the real files when available."""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

import pytest

from models.training_data import (
    MAX_DESCRIPTION_CHARS,
    cap_length,
    clean_text,
    load_amazon2018_pairs,
    load_myntra_pairs,
)

LONG_TEXT = "A sturdy everyday item made from recycled materials for daily use."
DATA_DIR = os.environ.get("SHOPSYNTH_DATA_DIR")


def _write_amazon(path: Path, records: list[dict]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return path


def _amazon_record(asin: str, description: list[str], **fields) -> dict:
    record = {
        "asin": asin,
        "title": f"Item {asin}",
        "brand": "Acme",
        "category": ["Home", "Home", "Kitchen"],
        "description": description,
        "price": "$1,025.50",
        "details": {"\n    ASIN: ": asin, "Item Weight:": "3 ounces", "Domestic Shipping: ": "US only"},
    }
    record.update(fields)
    return record


def test_clean_text_strips_html_and_entities():
    assert clean_text("<div class='x'> Fish &amp;amp; chips<br/>\n\t are&nbsp;good </div>") == "Fish & chips are good"
    assert clean_text("&lt;b&gt;bold&lt;/b&gt; text") == "bold text"
    assert clean_text(None) == ""


def test_cap_length_cuts_at_sentence():
    text = ("First sentence is here. " * 40).strip()
    capped = cap_length(text, max_chars=100)
    assert len(capped) <= 100
    assert capped.endswith(".")
    assert cap_length("short", max_chars=100) == "short"


def test_amazon_pairs_parsed_and_cleaned(tmp_path):
    path = _write_amazon(
        tmp_path / "meta.json.gz",
        [
            _amazon_record("A1", ["<p>" + LONG_TEXT + "</p>", "Second &amp; last part."]),
            _amazon_record("A2", ["Too short."]),
            _amazon_record("A3", ["<p>" + LONG_TEXT + "</p>", "Second &amp; last part."], title="Copy"),
            _amazon_record("A4", [LONG_TEXT + " Different."], price="$10.00 - $20.00", brand=""),
        ],
    )
    pairs = load_amazon2018_pairs(path)
    assert [listing["item_id"] for listing, _ in pairs] == ["A1", "A4"]

    listing, description = pairs[0]
    assert description == LONG_TEXT + " Second & last part."
    assert listing["title"] == "Item A1"
    assert listing["price"] == 1025.5
    assert listing["currency"] == "USD"
    assert listing["category"] == ["Home", "Kitchen"]
    assert listing["attributes"] == {"Item Weight": "3 ounces"}
    assert listing["description"] is None
    assert listing["language"] == "en"

    range_listing, _ = pairs[1]
    assert range_listing["price"] is None
    assert range_listing["currency"] is None
    assert range_listing["brand"] is None


def test_amazon_boilerplate_removed(tmp_path):
    boilerplate = "This shared legal notice appears on many items in the file."
    records = [_amazon_record(f"B{i}", [f"{LONG_TEXT} Variant {i}.", boilerplate]) for i in range(5)]
    pairs = load_amazon2018_pairs(_write_amazon(tmp_path / "meta.json.gz", records), boilerplate_min_items=3)
    assert len(pairs) == 5
    assert all(boilerplate not in description for _, description in pairs)


def test_amazon_limit_and_length_cap(tmp_path):
    records = [_amazon_record(f"C{i}", [f"Item {i}. " + LONG_TEXT * 20]) for i in range(4)]
    pairs = load_amazon2018_pairs(_write_amazon(tmp_path / "meta.json.gz", records), limit=2)
    assert len(pairs) == 2
    assert all(len(description) <= MAX_DESCRIPTION_CHARS for _, description in pairs)


def _write_myntra(path: Path, rows: list[list[str]]) -> Path:
    header = "Product_ID,Product_Name,Product_Brand,Gender,Price,Num_Images,Description,Primary_Color,\n"
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        handle.write(header)
        for row in rows:
            handle.write(",".join(f'"{value}"' for value in row) + ",\n")
    return path


def test_myntra_pairs_parsed(tmp_path):
    rows = [
        ["1", "DressBerry Women Red Top", "DressBerry", "Women", "799", "5",
         "Red solid top, has a round neck and short sleevesMachine wash cold with DressBerry care", "Red"],
        ["2", "Acme Men Blue Shirt", "Acme", "Men", "999", "4", "Blue shirt", "Blue"],
        ["3", "DressBerry Women Pink Top", "DressBerry", "Women", "799", "4",
         "Red solid top, has a round neck and short sleevesMachine wash cold with DressBerry care", "Grey"],
    ]
    pairs = load_myntra_pairs(_write_myntra(tmp_path / "myntra.csv.gz", rows))
    assert len(pairs) == 1
    listing, description = pairs[0]
    assert listing["item_id"] == "1"
    assert listing["brand"] == "DressBerry"
    assert listing["price"] == 799.0
    assert listing["currency"] == "INR"
    assert listing["attributes"] == {"gender": "Women"}
    assert "sleeves. Machine wash" in description
    assert "DressBerry care" in description


def test_myntra_missing_column_raises(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("Product_ID,Product_Name\n1,Top\n")
    with pytest.raises(ValueError, match="Description"):
        load_myntra_pairs(path)


@pytest.mark.skipif(not DATA_DIR, reason="SHOPSYNTH_DATA_DIR is not set")
def test_real_myntra_catalogue():
    path = Path(DATA_DIR) / "myntra_fashion_catalog" / "myntra_products_catalog.csv.gz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    pairs = load_myntra_pairs(path, limit=300)
    assert len(pairs) == 300
    descriptions = [description for _, description in pairs]
    assert len(set(descriptions)) == len(descriptions)
    assert all(40 <= len(description) <= MAX_DESCRIPTION_CHARS for description in descriptions)
    assert all(listing["title"] and listing["currency"] == "INR" for listing, _ in pairs)


@pytest.mark.skipif(not DATA_DIR, reason="SHOPSYNTH_DATA_DIR is not set")
def test_real_amazon_gift_cards():
    path = Path(DATA_DIR) / "amazon2018_gift_cards_5core" / "meta_Gift_Cards.json.gz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    pairs = load_amazon2018_pairs(path)
    assert len(pairs) > 100
    for listing, description in pairs:
        assert not re.search(r"</?[a-zA-Z][^>]*>", description)
        assert "&amp;" not in description
        assert all(len(part) <= 40 for part in listing["category"])
