"""Validation rules of the input events and round trips of the output records."""

from __future__ import annotations

import copy
import dataclasses
import math

import orjson
import pytest

from streams.schemas import (DEFAULT_LIMITS, DEFAULT_WEIGHTS, EVENT_TYPES, MIN_TIMESTAMP_MS,
                             DeadLetter, EnrichedListing, EventLimits, InvalidEvent,
                             ProductCreated, Recommendation, SimilarItems, UserBehaviour,
                             parse_product_created, parse_user_behaviour, record_from_bytes,
                             record_version, to_bytes, user_behaviour_from_dict)

NOW_MS = 1_700_000_000_000
SKEW_MS = DEFAULT_LIMITS.max_future_skew_ms
DELETE = object()

PRODUCT = {
    "event_id": "p-1",
    "item_id": "sku-1",
    "title": "Steel Water Bottle",
    "brand": "Hydra",
    "category": ["Sports", "Bottles"],
    "attributes": {"color": "blue", "volume": "750 ml"},
    "price": 12.5,
    "currency": "USD",
    "description": "Keeps drinks cold for a day.\nDishwasher safe.",
    "review_count": 3,
    "language": "en",
    "created_at_ms": NOW_MS - 1000,
}
BEHAVIOUR = {
    "event_id": "b-1",
    "user_id": "u-1",
    "item_id": "sku-1",
    "event_type": "click",
    "timestamp_ms": NOW_MS - 1000,
    "weight": None,
    "category": "Sports/Bottles",
}


def changed(base: dict, changes: dict) -> dict:
    event = copy.deepcopy(base)
    for name, value in changes.items():
        if value is DELETE:
            event.pop(name)
        else:
            event[name] = value
    return event


def parse_product(event: dict, limits: EventLimits = DEFAULT_LIMITS) -> ProductCreated:
    return parse_product_created(orjson.dumps(event), limits=limits, now_ms=NOW_MS)


def parse_behaviour(event: dict, limits: EventLimits = DEFAULT_LIMITS) -> UserBehaviour:
    return parse_user_behaviour(orjson.dumps(event), limits=limits, now_ms=NOW_MS)


many = DEFAULT_LIMITS.max_attributes
depth = DEFAULT_LIMITS.max_category_depth
# (case id, changes to PRODUCT, field named by the error or None when the event is valid)
PRODUCT_CASES = [
    ("valid", {}, None),
    ("unknown extra field ignored", {"colour_code": "#00f"}, None),
    *[(f"missing {name}", {name: DELETE}, name)
      for name in ("event_id", "item_id", "title", "created_at_ms")],
    *[(f"optional {name} absent", {name: DELETE}, None)
      for name in ("brand", "category", "attributes", "price", "currency", "description",
                   "review_count", "language")],
    *[(f"optional {name} null", {name: None}, None)
      for name in ("brand", "category", "attributes", "price", "currency", "description",
                   "review_count", "language")],
    ("title number", {"title": 5}, "title"),
    ("title null", {"title": None}, "title"),
    ("item_id number", {"item_id": 123}, "item_id"),
    ("brand number", {"brand": 7}, "brand"),
    ("category string", {"category": "Sports"}, "category"),
    ("category level number", {"category": ["Sports", 2]}, "category[1]"),
    ("category empty list", {"category": []}, None),
    ("attributes list", {"attributes": ["blue"]}, "attributes"),
    ("attribute value number", {"attributes": {"size": 2}}, "attributes['size']"),
    ("attribute value empty", {"attributes": {"size": ""}}, None),
    ("price string", {"price": "12.50"}, "price"),
    ("price boolean", {"price": True}, "price"),
    ("price integer", {"price": 12}, None),
    ("review_count float", {"review_count": 1.5}, "review_count"),
    ("review_count boolean", {"review_count": True}, "review_count"),
    ("review_count negative", {"review_count": -1}, "review_count"),
    ("description number", {"description": 3}, "description"),
    ("created_at_ms string", {"created_at_ms": str(NOW_MS)}, "created_at_ms"),
    ("created_at_ms float", {"created_at_ms": float(NOW_MS)}, "created_at_ms"),
    ("title empty", {"title": ""}, "title"),
    ("title whitespace", {"title": "   "}, "title"),
    ("title one character", {"title": "A"}, None),
    ("price negative", {"price": -0.01}, "price"),
    ("price zero", {"price": 0}, None),
    ("price at maximum", {"price": DEFAULT_LIMITS.max_price}, None),
    ("price above maximum", {"price": DEFAULT_LIMITS.max_price + 1}, "price"),
    ("created_at_ms at future skew", {"created_at_ms": NOW_MS + SKEW_MS}, None),
    ("created_at_ms beyond future skew", {"created_at_ms": NOW_MS + SKEW_MS + 1}, "created_at_ms"),
    ("created_at_ms at year 2000", {"created_at_ms": MIN_TIMESTAMP_MS}, None),
    ("created_at_ms before 2000", {"created_at_ms": MIN_TIMESTAMP_MS - 1}, "created_at_ms"),
    ("created_at_ms in seconds", {"created_at_ms": NOW_MS // 1000}, "created_at_ms"),
    ("title control character", {"title": "Bottle\x00"}, "title"),
    ("title line break", {"title": "Steel\nBottle"}, "title"),
    ("brand escape character", {"brand": "Hy\x1bdra"}, "brand"),
    ("category line break", {"category": ["Sports\n"]}, "category[0]"),
    ("attribute value delete character", {"attributes": {"color": "blue\x7f"}}, "attributes['color']"),
    ("attribute key control character", {"attributes": {"co\x01lor": "blue"}}, "attributes key"),
    ("description bell character", {"description": "cold\x07"}, "description"),
    ("description tab and line breaks", {"description": "cold\n\tdry\r\n"}, None),
    ("title at max length", {"title": "x" * DEFAULT_LIMITS.max_title_chars}, None),
    ("title too long", {"title": "x" * (DEFAULT_LIMITS.max_title_chars + 1)}, "title"),
    ("event_id too long", {"event_id": "e" * (DEFAULT_LIMITS.max_id_chars + 1)}, "event_id"),
    ("brand too long", {"brand": "b" * (DEFAULT_LIMITS.max_brand_chars + 1)}, "brand"),
    ("description too long",
     {"description": "d" * (DEFAULT_LIMITS.max_description_chars + 1)}, "description"),
    ("attribute key too long",
     {"attributes": {"k" * (DEFAULT_LIMITS.max_attribute_key_chars + 1): "v"}}, "attributes key"),
    ("attributes at maximum", {"attributes": {f"a{i}": "v" for i in range(many)}}, None),
    ("too many attributes", {"attributes": {f"a{i}": "v" for i in range(many + 1)}}, "attributes"),
    ("category at max depth", {"category": [f"c{i}" for i in range(depth)]}, None),
    ("category too deep", {"category": [f"c{i}" for i in range(depth + 1)]}, "category"),
    ("language zh", {"language": "zh"}, None),
    ("language unknown", {"language": "fr"}, "language"),
    ("language list", {"language": ["en"]}, "language"),
    ("currency CNY", {"currency": "CNY"}, None),
    ("currency lowercase", {"currency": "usd"}, "currency"),
    ("currency two letters", {"currency": "US"}, "currency"),
]


@pytest.mark.parametrize("changes, field", [case[1:] for case in PRODUCT_CASES],
                         ids=[case[0] for case in PRODUCT_CASES])
def test_product_created_rule(changes: dict, field: str | None) -> None:
    event = changed(PRODUCT, changes)
    if field is None:
        assert isinstance(parse_product(event), ProductCreated)
        return
    with pytest.raises(InvalidEvent) as info:
        parse_product(event)
    assert info.value.field == field
    assert field.split("[")[0].split(" ")[0] in info.value.reason


BEHAVIOUR_CASES = [
    ("valid", {}, None),
    ("unknown extra field ignored", {"session_id": "s-9"}, None),
    *[(f"missing {name}", {name: DELETE}, name)
      for name in ("event_id", "user_id", "item_id", "event_type", "timestamp_ms")],
    ("weight absent", {"weight": DELETE}, None),
    ("category absent", {"category": DELETE}, None),
    *[(f"event_type {name}", {"event_type": name}, None) for name in EVENT_TYPES],
    ("event_type unknown", {"event_type": "like"}, "event_type"),
    ("event_type number", {"event_type": 1}, "event_type"),
    ("event_type list", {"event_type": ["view"]}, "event_type"),
    ("user_id number", {"user_id": 42}, "user_id"),
    ("user_id empty", {"user_id": ""}, "user_id"),
    ("weight positive", {"weight": 2.5}, None),
    ("weight integer", {"weight": 2}, None),
    ("weight zero", {"weight": 0}, "weight"),
    ("weight negative", {"weight": -1.0}, "weight"),
    ("weight string", {"weight": "2"}, "weight"),
    ("weight boolean", {"weight": True}, "weight"),
    ("weight above maximum", {"weight": DEFAULT_LIMITS.max_weight * 2}, "weight"),
    ("timestamp_ms at future skew", {"timestamp_ms": NOW_MS + SKEW_MS}, None),
    ("timestamp_ms beyond future skew", {"timestamp_ms": NOW_MS + SKEW_MS + 1}, "timestamp_ms"),
    ("timestamp_ms before 2000", {"timestamp_ms": MIN_TIMESTAMP_MS - 1}, "timestamp_ms"),
    ("timestamp_ms boolean", {"timestamp_ms": True}, "timestamp_ms"),
    ("category number", {"category": 5}, "category"),
    ("category control character", {"category": "a\x1fb"}, "category"),
    ("item_id control character", {"item_id": "sku\t1"}, "item_id"),
]


@pytest.mark.parametrize("changes, field", [case[1:] for case in BEHAVIOUR_CASES],
                         ids=[case[0] for case in BEHAVIOUR_CASES])
def test_user_behaviour_rule(changes: dict, field: str | None) -> None:
    event = changed(BEHAVIOUR, changes)
    if field is None:
        assert isinstance(parse_behaviour(event), UserBehaviour)
        return
    with pytest.raises(InvalidEvent) as info:
        parse_behaviour(event)
    assert info.value.field == field
    assert field in info.value.reason


@pytest.mark.parametrize("weight", [math.nan, math.inf, -math.inf])
def test_weight_not_finite(weight: float) -> None:
    # orjson writes NaN and infinity as null, so these reach the parser only as dicts.
    with pytest.raises(InvalidEvent) as info:
        user_behaviour_from_dict(changed(BEHAVIOUR, {"weight": weight}), now_ms=NOW_MS)
    assert info.value.field == "weight"


PAYLOAD_CASES = [
    ("invalid json", b'{"event_id": ', "not valid JSON"),
    ("truncated object", orjson.dumps(PRODUCT)[:-1], "not valid JSON"),
    ("invalid utf-8", orjson.dumps(PRODUCT).replace(b"Steel", b"St\xffel"), "not valid UTF-8"),
    ("array", b"[1, 2]", "JSON object, got array"),
    ("string", b'"text"', "JSON object, got string"),
    ("null", b"null", "JSON object, got null"),
    ("empty", b"", "not valid JSON"),
]


@pytest.mark.parametrize("raw, message", [case[1:] for case in PAYLOAD_CASES],
                         ids=[case[0] for case in PAYLOAD_CASES])
def test_payload_rule(raw: bytes, message: str) -> None:
    for parse in (parse_product_created, parse_user_behaviour):
        with pytest.raises(InvalidEvent) as info:
            parse(raw, now_ms=NOW_MS)
        assert message in info.value.reason
        assert info.value.field is None


def test_payload_size_limit() -> None:
    raw = orjson.dumps(PRODUCT)
    at_limit = EventLimits(max_payload_bytes=len(raw))
    below_limit = EventLimits(max_payload_bytes=len(raw) - 1)

    assert parse_product_created(raw, limits=at_limit, now_ms=NOW_MS).item_id == "sku-1"
    with pytest.raises(InvalidEvent) as info:
        parse_product_created(raw, limits=below_limit, now_ms=NOW_MS)
    assert f"payload is {len(raw)} bytes" in info.value.reason


def test_default_limit_rejects_oversized_payload() -> None:
    event = changed(PRODUCT, {"unused_padding": "x" * DEFAULT_LIMITS.max_payload_bytes})
    with pytest.raises(InvalidEvent) as info:
        parse_product(event)
    assert "max is 65536" in info.value.reason


def test_max_bytes_overrides_limit() -> None:
    raw = orjson.dumps(PRODUCT)
    with pytest.raises(InvalidEvent) as info:
        parse_product_created(raw, max_bytes=len(raw) - 1, now_ms=NOW_MS)
    assert "max is" in info.value.reason
    assert parse_product_created(raw, max_bytes=len(raw), now_ms=NOW_MS).item_id == "sku-1"


def test_invalid_event_is_value_error() -> None:
    with pytest.raises(ValueError):
        parse_product(changed(PRODUCT, {"price": -5}))


def test_reason_names_value() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_product(changed(PRODUCT, {"price": -5}))
    assert "-5" in info.value.reason


def test_configurable_limits_apply() -> None:
    strict = EventLimits(max_price=10.0, max_future_skew_ms=0)
    with pytest.raises(InvalidEvent) as price_info:
        parse_product(PRODUCT, limits=strict)
    assert price_info.value.field == "price"
    with pytest.raises(InvalidEvent) as time_info:
        parse_behaviour(changed(BEHAVIOUR, {"timestamp_ms": NOW_MS + 1}), limits=strict)
    assert time_info.value.field == "timestamp_ms"


def test_product_defaults_applied() -> None:
    minimal = {name: PRODUCT[name] for name in ("event_id", "item_id", "title", "created_at_ms")}
    listing = parse_product(minimal).to_dict()
    assert listing["brand"] is None
    assert listing["category"] == []
    assert listing["attributes"] == {}
    assert listing["price"] is None
    assert listing["review_count"] == 0
    assert listing["language"] == "en"


def test_product_parse_keeps_values() -> None:
    listing = parse_product(changed(PRODUCT, {"extra": 1})).to_dict()
    assert listing == PRODUCT


def test_default_weight_per_event_type() -> None:
    for event_type in EVENT_TYPES:
        parsed = parse_behaviour(changed(BEHAVIOUR, {"event_type": event_type}))
        assert parsed.weight is None
        assert parsed.resolved_weight == DEFAULT_WEIGHTS[event_type]
    assert [DEFAULT_WEIGHTS[t] for t in ("view", "click", "favourite", "cart", "purchase")] == \
        [1.0, 2.0, 3.0, 4.0, 5.0]


def test_explicit_weight_overrides_default() -> None:
    parsed = parse_behaviour(changed(BEHAVIOUR, {"weight": 7}))
    assert parsed.resolved_weight == 7.0


def output_records() -> list:
    quality = {"description": {"min_words": {"passed": True, "score": 14.0, "reason": None}}}
    return [
        EnrichedListing(item_id="sku-1", event_id="p-1", source_topic="product-created",
                        source_partition=2, source_offset=41, title="Steel Water Bottle",
                        category=["Sports", "Bottles"], attributes={"color": "blue"}, price=12.5,
                        currency="USD", language="en", description="Keeps drinks cold.",
                        description_synthetic=True,
                        reviews=[{"rating": 5, "text": "Great bottle.", "synthetic": True}],
                        cold=True, cold_reasons=["thin_description"], enriched=True,
                        generator_version="gen-1", quality=quality, produced_at_ms=NOW_MS),
        Recommendation(user_id="u-1", items=[{"item_id": "sku-1", "score": 0.75}],
                       model_version="12", based_on_events=4, last_event_id="b-4",
                       record_version="user-behaviour/0/9", produced_at_ms=NOW_MS),
        SimilarItems(item_id="sku-1", items=[{"item_id": "sku-2", "score": 0.5}],
                     model_version="12", produced_at_ms=NOW_MS),
        DeadLetter.from_error(InvalidEvent("title must not be empty", field="title"),
                              raw=b'{"title": ""}', source_topic="product-created",
                              partition=1, offset=7, key=b"sku-1"),
    ]


@pytest.mark.parametrize("record", output_records(), ids=lambda r: type(r).__name__)
def test_output_record_round_trip(record) -> None:
    raw = to_bytes(record)
    assert orjson.loads(raw) == dataclasses.asdict(record)
    assert record_from_bytes(type(record), raw) == record


def test_record_version_from_source() -> None:
    listing = output_records()[0]
    assert listing.record_version == "product-created/2/41"
    assert listing.record_version == record_version("product-created", 2, 41)


def test_dead_letter_keeps_original() -> None:
    dead = output_records()[-1]
    assert dead.original_value() == b'{"title": ""}'
    assert dead.error_type == "InvalidEvent"
    assert dead.field_name == "title"


def test_record_from_bytes_ignores_unknown() -> None:
    record = output_records()[2]
    raw = orjson.dumps({**dataclasses.asdict(record), "added_later": 1})
    assert record_from_bytes(SimilarItems, raw) == record
