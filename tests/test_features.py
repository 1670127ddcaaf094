"""Tests for models.features: listing and text feature tokens."""

import pytest

from models.features import (
    attribute_tokens,
    category_tokens,
    item_feature_tokens,
    normalise_text,
    price_bucket_token,
    text_feature_tokens,
)


def _listing(**overrides):
    listing = {
        "event_id": "e1",
        "item_id": "sku-1",
        "title": "Linen shirt",
        "brand": "Acme",
        "category": ["Clothing", "Women", "Tops"],
        "attributes": {"Colour": "Red", "size": "M"},
        "price": 45.0,
        "currency": "USD",
        "description": None,
        "review_count": 0,
        "language": "en",
        "created_at_ms": 0,
    }
    listing.update(overrides)
    return listing


def test_normalise_text_case_and_whitespace():
    assert normalise_text("  ACME \t  Co\n") == "acme co"


def test_normalise_text_full_width_chinese():
    # Full-width Latin letters and the ideographic space fold to ASCII.
    assert normalise_text("ＡＣＭＥ\u3000李宁") == "acme 李宁"


def test_brand_token_normalised():
    tokens = item_feature_tokens(_listing(brand="  ACME   Co "))
    assert "brand=acme co" in tokens


def test_category_ancestors_root_first():
    assert category_tokens(["Clothing", "Women", "Tops"]) == [
        "cat=clothing",
        "cat=clothing/women",
        "cat=clothing/women/tops",
    ]


def test_category_drops_empty_levels_and_escapes_slash():
    assert category_tokens(["Clothing", "  ", "Tops/Tees"]) == [
        "cat=clothing",
        "cat=clothing/tops|tees",
    ]


def test_category_single_string_and_none():
    assert category_tokens("Shoes") == ["cat=shoes"]
    assert category_tokens(None) == []
    assert category_tokens([]) == []


def test_chinese_category_and_brand():
    tokens = item_feature_tokens(_listing(brand="李宁", category=["服装", "运动  鞋"], currency="CNY"))
    assert "brand=李宁" in tokens
    assert "cat=服装" in tokens
    assert "cat=服装/运动 鞋" in tokens


def test_attributes_sorted_normalised():
    tokens = attribute_tokens({"Size": " M ", "Colour": "Dark  Red", "empty": " "})
    assert tokens == ["attr=colour=dark red", "attr=size=m"]


def test_attributes_capped_in_count_and_length():
    attributes = {f"k{i:02d}": "v" for i in range(30)}
    attributes["k00"] = "x" * 100
    tokens = attribute_tokens(attributes, max_attributes=5, max_value_chars=8)
    assert len(tokens) == 5
    assert tokens[0] == "attr=k00=" + "x" * 8


def test_attribute_key_with_equals_sign():
    assert attribute_tokens({"a=b": "c"}) == ["attr=a:b=c"]


def test_price_bucket_same_and_different():
    assert price_bucket_token(40.0, "USD") == price_bucket_token(50.0, "USD")
    assert price_bucket_token(40.0, "USD") != price_bucket_token(70.0, "USD")
    assert price_bucket_token(45.0, "USD") == "price=usd:32-64"


def test_price_bucket_per_currency():
    assert price_bucket_token(45.0, "USD") != price_bucket_token(45.0, "CNY")
    assert price_bucket_token(45.0, "CNY").startswith("price=cny:")


def test_price_bucket_edge_values():
    assert price_bucket_token(None, "USD") is None
    assert price_bucket_token(-1.0, "USD") is None
    assert price_bucket_token(float("nan"), "USD") is None
    assert price_bucket_token(0.0, "USD") == "price=usd:0"
    assert price_bucket_token(10.0, None).startswith("price=xxx:")


def test_price_bucket_base_rejected():
    with pytest.raises(ValueError, match="bucket_base"):
        price_bucket_token(10.0, "USD", bucket_base=1.0)


def test_item_tokens_order_and_no_identity():
    tokens = item_feature_tokens(_listing())
    assert tokens == [
        "brand=acme",
        "cat=clothing",
        "cat=clothing/women",
        "cat=clothing/women/tops",
        "attr=colour=red",
        "attr=size=m",
        "price=usd:32-64",
    ]
    assert not any(token.startswith("item=") for token in tokens)


def test_item_tokens_minimal_listing():
    tokens = item_feature_tokens({"item_id": "x", "title": "t", "category": [], "attributes": {}})
    assert tokens == []


def test_text_tokens_drop_stop_words():
    tokens = text_feature_tokens("The shirt is made of linen and the linen is soft", language="en",
                                 synthetic=False)
    words = [token for token, _ in tokens]
    assert words[0] == "text=linen"
    assert "text=the" not in words
    assert "text=is" not in words
    assert set(words) == {"text=linen", "text=shirt", "text=made", "text=soft"}
    assert all(weight == 1.0 for _, weight in tokens)


def test_text_tokens_synthetic_weight():
    tokens = text_feature_tokens("soft linen shirt", language="en", synthetic=True,
                                 synthetic_weight=0.1)
    assert len(tokens) == 3
    assert all(weight == 0.1 for _, weight in tokens)


def test_text_tokens_chinese_bigrams():
    tokens = text_feature_tokens("透气跑步鞋 Nike", language="zh", synthetic=False)
    words = [token for token, _ in tokens]
    assert words == ["text=nike", "text=透气", "text=气跑", "text=跑步", "text=步鞋"]


def test_text_tokens_max_tokens_keeps_frequent():
    tokens = text_feature_tokens("red red red blue blue green", language="en", synthetic=False,
                                 max_tokens=2)
    assert [token for token, _ in tokens] == ["text=red", "text=blue"]


def test_text_tokens_empty_and_bad_language():
    assert text_feature_tokens("", language="en", synthetic=False) == []
    assert text_feature_tokens(None, language="zh", synthetic=True) == []
    with pytest.raises(ValueError, match="unsupported language"):
        text_feature_tokens("hello", language="fr", synthetic=False)
