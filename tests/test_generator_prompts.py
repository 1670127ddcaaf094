"""Prompt construction and cleaning of generated text."""

from __future__ import annotations

import pytest

from export.pipeline import training_pairs_from_listings
from models.prompts import DESCRIPTION_HEADER, REVIEW_HEADER, clean_generation, description_prompt, review_prompt

LISTING = {
    "item_id": "p-1",
    "title": "Trail running shoe",
    "brand": "Acme",
    "category": ["Sports", "Running", "Shoes"],
    "attributes": {"colour": "red", "size": "42"},
    "price": 89.9,
    "currency": "EUR",
    "language": "en",
}


def test_description_prompt_fields():
    prompt = description_prompt(LISTING)
    assert prompt.endswith(DESCRIPTION_HEADER)
    assert "Title: Trail running shoe" in prompt
    assert "Brand: Acme" in prompt
    assert "Category: Sports > Running > Shoes" in prompt
    assert "colour: red; size: 42" in prompt
    assert "Price: 89.90 EUR" in prompt
    assert "English" in prompt


def test_description_prompt_optional_fields_absent():
    prompt = description_prompt({"title": "Mug", "category": [], "attributes": {}, "price": None, "brand": None})
    assert "Brand:" not in prompt
    assert "Category:" not in prompt
    assert "Attributes:" not in prompt
    assert "Price:" not in prompt
    assert "Title: Mug" in prompt


def test_description_prompt_chinese():
    assert "Chinese" in description_prompt({**LISTING, "language": "zh"})


def test_description_prompt_requires_title():
    with pytest.raises(ValueError, match="title"):
        description_prompt({**LISTING, "title": "   "})


def test_description_prompt_collapses_whitespace_and_caps_fields():
    prompt = description_prompt({**LISTING, "title": "Red\n\nshoe", "brand": "x" * 500})
    assert "Title: Red shoe" in prompt
    brand_line = next(line for line in prompt.splitlines() if line.startswith("Brand:"))
    assert len(brand_line) < 220


def test_review_prompt_rating():
    prompt = review_prompt(LISTING, 2)
    assert prompt.endswith(REVIEW_HEADER)
    assert "2 out of 5" in prompt
    assert "Rating: 2/5" in prompt
    assert "Title: Trail running shoe" in prompt


@pytest.mark.parametrize("rating", [0, 6, 3.5, True, "4"])
def test_review_prompt_rejects_invalid_rating(rating):
    with pytest.raises(ValueError, match="rating"):
        review_prompt(LISTING, rating)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Light and grippy.  ", "Light and grippy."),
        ("Light shoe.<|im_end|>ignored", "Light shoe."),
        ("Light shoe.\n### Listing\nTitle: x", "Light shoe."),
        ("Light   shoe.\n\n\nGreat grip.", "Light shoe.\nGreat grip."),
        ("<|endoftext|>", ""),
        ("", ""),
    ],
)
def test_clean_generation(raw, expected):
    assert clean_generation(raw) == expected


def test_training_pairs_from_listings():
    listings = [
        {**LISTING, "description": "  Grippy <b>trail</b> shoe &amp; light.  "},
        {**LISTING, "item_id": "p-2", "description": None},
        {**LISTING, "item_id": "p-3", "description": "   "},
    ]
    pairs = training_pairs_from_listings(listings)
    assert len(pairs) == 1
    prompt, target = pairs[0]
    assert prompt == description_prompt(listings[0])
    assert target == "Grippy trail shoe & light."
