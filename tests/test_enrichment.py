"""Enrichment logic: cold-start decisions, gates and regeneration, without Kafka.

The generator here is a scripted stand-in so that each gate outcome can be
forced; the real ONNX generator is exercised by the pipeline and generator tests.
"""

from __future__ import annotations

from streams.cold_start import ColdStartPolicy, description_words
from streams.enrichment import Enricher, SourceRef, finish_record

LISTING = {
    "event_id": "e1", "item_id": "i1", "title": "Trail Runner 2 shoe", "brand": "Acme",
    "category": ["Shoes", "Running"], "attributes": {"colour": "red"}, "price": 59.0,
    "currency": "USD", "description": None, "review_count": 0, "language": "en", "created_at_ms": 1,
}
WARM = {**LISTING, "item_id": "i2", "event_id": "e2", "review_count": 10,
        "description": "A light trail running shoe with a grippy sole, a breathable upper and a "
                       "padded collar for long days on rocky paths."}
GOOD_TEXT = "A light red running shoe from Acme with a soft sole and a breathable upper for daily runs."


class ScriptedGenerator:
    version = "scripted-1"

    def __init__(self, outputs: list[str]):
        self.outputs = list(outputs)
        self.calls: list[dict] = []

    def generate(self, prompts, **kwargs):
        self.calls.append({"prompts": list(prompts), **kwargs})
        return [self.outputs.pop(0) for _ in prompts]


def source(offset: int) -> SourceRef:
    return SourceRef(topic="product-created", partition=0, offset=offset)


def test_cold_policy_reasons():
    policy = ColdStartPolicy(min_description_words=12, min_reviews=3, min_interactions=5)
    assert policy.reasons(LISTING) == ["thin_description", "few_reviews", "few_interactions"]
    assert policy.reasons(WARM, interactions=5) == []
    assert policy.reasons(WARM, interactions=4) == ["few_interactions"]


def test_description_words_counts_chinese():
    assert description_words("纯棉短袖T恤夏季新款") == 1 + 4
    assert description_words(None) == 0


def test_cold_listing_gets_description_and_review():
    generator = ScriptedGenerator([GOOD_TEXT, "Great shoe, comfortable from the first run and light on my feet."])
    enricher = Enricher(generator=generator, review_ratings=(5,))
    [record] = enricher.enrich_batch([LISTING], [source(7)])
    assert record["description"] == GOOD_TEXT
    assert record["description_synthetic"] is True
    assert record["reviews"][0]["synthetic"] is True
    assert record["reviews"][0]["rating"] == 5
    assert record["enriched"] is True
    assert record["generator_version"] == "scripted-1"
    assert record["record_version"] == "product-created/0/7"
    assert all(check["passed"] for check in record["quality"]["description"].values())


def test_warm_listing_is_not_generated():
    generator = ScriptedGenerator([])
    enricher = Enricher(generator=generator, policy=ColdStartPolicy(min_interactions=0))
    [record] = enricher.enrich_batch([WARM], [source(1)])
    assert generator.calls == []
    assert record["cold"] is False
    assert record["description"] == WARM["description"]
    assert record["description_synthetic"] is False


def test_rejected_text_is_regenerated_with_seed():
    invented_number = "A red Acme shoe that weighs 999 grams and lasts for 12 years of running."
    generator = ScriptedGenerator([invented_number, GOOD_TEXT, "Nice shoe, fits well and feels light."])
    enricher = Enricher(generator=generator, max_regenerations=1)
    [record] = enricher.enrich_batch([LISTING], [source(1)])
    assert record["description"] == GOOD_TEXT
    assert generator.calls[1]["seed"] is not None
    assert generator.calls[1]["temperature"] > 0


def test_text_rejected_twice_is_flagged():
    bad = "buy buy buy buy buy buy buy buy buy buy buy buy buy buy buy buy"
    generator = ScriptedGenerator([bad, bad, "Nice shoe, fits well and feels light."])
    enricher = Enricher(generator=generator, max_regenerations=1)
    [record] = enricher.enrich_batch([LISTING], [source(1)])
    assert record["description"] is None
    assert record["description_synthetic"] is False
    assert record["gate_rejected"] == ["description"]
    assert record["quality"]["description"]["repetition"]["passed"] is False


def test_regeneration_seed_is_stable():
    bad = "Call 555-123-4567 for this red Acme shoe with a soft sole and a light upper."
    seeds = []
    for _ in range(2):
        generator = ScriptedGenerator([bad, GOOD_TEXT, "Nice shoe, fits well and feels light."])
        Enricher(generator=generator).enrich_batch([LISTING], [source(1)])
        seeds.append(generator.calls[1]["seed"])
    assert seeds[0] == seeds[1]


def test_no_generator_flags_cold_listing():
    [record] = Enricher(generator=None).enrich_batch([LISTING], [source(3)])
    assert record["enriched"] is False
    assert record["enrichment_error"] == "generator unavailable"
    assert "_listing" not in finish_record(record)


def test_chinese_listing_uses_language_generator():
    chinese = {**LISTING, "item_id": "zh1", "event_id": "zh-e1", "title": "简约白色牛仔外套", "brand": None,
               "category": ["服装", "上衣"], "attributes": {"颜色": "白色"}, "price": None, "currency": None,
               "language": "zh"}
    zh_text = "这款简约的白色牛仔外套版型宽松，面料柔软舒适，日常出行百搭又好看，上身显得很有精神。"
    english = ScriptedGenerator([GOOD_TEXT, "Great shoe, light and comfortable on long runs every week."])
    zh = ScriptedGenerator([zh_text, "外套质量很好，穿着舒服，颜色也很正，非常满意这次购物。"])
    zh.version = "zh-1"
    enricher = Enricher(generator=english, language_generators={"zh": zh}, near_duplicates=None)

    records = enricher.enrich_batch([LISTING, chinese], [source(1), source(2)])

    assert all("简约白色牛仔外套" not in prompt for call in english.calls for prompt in call["prompts"])
    assert all("简约白色牛仔外套" in prompt for call in zh.calls for prompt in call["prompts"])
    assert records[0]["generator_version"] == "scripted-1"
    assert records[1]["generator_version"] == "zh-1"
    assert records[1]["description"] == zh_text


def test_missing_language_generator_flags_listing():
    chinese = {**LISTING, "item_id": "zh2", "event_id": "zh-e2", "language": "zh"}
    enricher = Enricher(generator=None, language_generators={"en": ScriptedGenerator([GOOD_TEXT, GOOD_TEXT])})
    records = enricher.enrich_batch([chinese], [source(3)])
    assert records[0]["enrichment_error"] == "generator unavailable"
    assert records[0]["enriched"] is False
