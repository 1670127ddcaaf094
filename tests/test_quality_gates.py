"""Quality and safety gates: fidelity, near duplicates, personal data and blocked claims.

Every check has a passing and a failing case in English and in Chinese. The
Chinese listing follows the AdvertiseGen attribute style (类型=裙, 材质=雪纺).
"""

from __future__ import annotations

import math

import pytest

from models import quality, safety
from models.fidelity import Lexicon, check_numbers
from models.near_duplicate import NearDuplicateIndex
from streams.cold_start import ColdStartPolicy
from streams.enrichment import Enricher, gate_from_settings, near_duplicates_from_settings
from streams.settings import Settings
from tests.test_enrichment import ScriptedGenerator, source

EN_LISTING = {
    "event_id": "e1", "item_id": "en-1", "title": "Acme Trail Runner 2 shoe", "brand": "Acme",
    "category": ["Shoes", "Running"], "attributes": {"colour": "red", "material": "mesh"}, "price": 59.0,
    "currency": "USD", "description": None, "review_count": 0, "language": "en", "created_at_ms": 1,
}
ZH_LISTING = {
    "event_id": "e2", "item_id": "zh-1", "title": "南极人 雪纺连衣裙 白色", "brand": "南极人",
    "category": ["女装"], "attributes": {"类型": "裙", "材质": "雪纺", "颜色": "白色", "裙长": "九分"},
    "price": 199.0, "currency": "CNY", "description": None, "review_count": 0, "language": "zh",
    "created_at_ms": 1,
}
CATALOG = [
    EN_LISTING,
    ZH_LISTING,
    {"item_id": "en-2", "title": "Nike Pegasus", "brand": "Nike", "category": ["Shoes", "Running"]},
    {"item_id": "en-3", "title": "Voltix Buds", "brand": "Voltix", "category": ["Electronics", "Headphones"]},
    {"item_id": "zh-2", "title": "优衣库 休闲裤", "brand": "优衣库", "category": ["女装"], "attributes": {"类型": "裤"}},
    {"item_id": "zh-3", "title": "太平鸟 衬衫", "brand": "太平鸟", "category": ["女装"], "attributes": {"类型": "上衣"}},
]

EN_GOOD = ("A light red running shoe from Acme with a breathable mesh upper and a soft sole "
           "for daily runs on roads and gravel paths.")
ZH_GOOD = ("这款南极人连衣裙采用轻盈的雪纺面料，垂感自然，穿着清爽透气。白色的裙身干净利落，九分的长度"
           "走动间尽显温柔气质。简约的版型不挑身材，无论是日常通勤还是周末约会都能轻松驾驭，让你在夏日里"
           "保持清新优雅的状态。")
EN_OTHER = ("Wireless earbuds from Voltix with deep bass, a snug fit and a charging case that "
            "keeps them ready for the commute and the gym.")
ZH_OTHER = ("优衣库这款休闲裤选用柔软的棉质面料，版型宽松舒适，腰部松紧设计贴合身形。简约的纯色款式"
            "百搭耐看，无论是上班通勤还是周末出游都能轻松搭配，是衣橱里不可缺少的基础单品。")

# (check, listing, text, expected to pass)
CASES = [
    ("length", EN_LISTING, EN_GOOD, True),
    ("length", EN_LISTING, "Red shoe.", False),
    ("length", ZH_LISTING, ZH_GOOD, True),
    ("length", ZH_LISTING, "白色好看", False),
    ("repetition", EN_LISTING, EN_GOOD, True),
    ("repetition", EN_LISTING, "buy it now " * 8, False),
    ("repetition", ZH_LISTING, ZH_GOOD, True),
    ("repetition", ZH_LISTING, "超级好看的裙子" * 6, False),
    ("language", EN_LISTING, EN_GOOD, True),
    ("language", EN_LISTING, ZH_GOOD, False),
    ("language", ZH_LISTING, ZH_GOOD, True),
    ("language", ZH_LISTING, EN_GOOD, False),
    ("brand", EN_LISTING, EN_GOOD, True),
    ("brand", EN_LISTING, "A light red running shoe with the same cushioning as a Nike racer.", False),
    ("brand", ZH_LISTING, ZH_GOOD, True),
    ("brand", ZH_LISTING, "这款优衣库连衣裙采用雪纺面料，白色清爽透气。", False),
    ("category", EN_LISTING, EN_GOOD, True),
    ("category", EN_LISTING, "Wireless headphones from Acme with deep bass for the daily commute.", False),
    ("category", ZH_LISTING, ZH_GOOD, True),
    ("category", ZH_LISTING, "南极人雪纺上衣，白色清爽，透气舒适，日常通勤百搭。", False),
    ("numbers", EN_LISTING, "The Trail Runner 2 costs 59.00 USD.", True),
    ("numbers", EN_LISTING, "The shoe weighs 280 grams and lasts 500 miles.", False),
    ("numbers", ZH_LISTING, "九分长度的白色雪纺连衣裙，到手价199元。", True),
    ("numbers", ZH_LISTING, "白色雪纺连衣裙，两年质保，三件套更划算。", False),
    ("near_duplicate", EN_LISTING, EN_GOOD, True),
    ("near_duplicate", EN_LISTING, EN_OTHER.replace("gym", "office"), False),
    ("near_duplicate", ZH_LISTING, ZH_GOOD, True),
    ("near_duplicate", ZH_LISTING, ZH_OTHER.replace("周末", "假日"), False),
    ("pii", EN_LISTING, EN_GOOD, True),
    ("pii", EN_LISTING, "A light red running shoe; email sales@acme-shoes.com for a discount.", False),
    ("pii", ZH_LISTING, ZH_GOOD, True),
    ("pii", ZH_LISTING, "白色雪纺连衣裙，下单请联系138 1234 5678。", False),
    ("blocklist", EN_LISTING, EN_GOOD, True),
    ("blocklist", EN_LISTING, "A clinically proven running shoe that cures knee pain.", False),
    ("blocklist", ZH_LISTING, ZH_GOOD, True),
    ("blocklist", ZH_LISTING, "白色雪纺连衣裙，国家级品质，第一品牌。", False),
]


def filled_index() -> NearDuplicateIndex:
    index = NearDuplicateIndex(threshold=0.8, capacity=100)
    index.add(EN_OTHER, item_id="en-3")
    index.add(ZH_OTHER, item_id="zh-2")
    return index


@pytest.mark.parametrize("check, listing, text, expected", CASES,
                         ids=[f"{c[0]}-{c[1]['language']}-{'pass' if c[3] else 'fail'}" for c in CASES])
def test_gate_check_table(check, listing, text, expected):
    results = quality.QualityGate().check(text, listing, lexicon=Lexicon.from_listings(CATALOG),
                                          near_duplicates=filled_index())
    assert results[check].passed is expected, results[check].reason
    assert isinstance(results[check].reason, str) and results[check].reason


def test_gate_check_names_are_grouped():
    results = quality.QualityGate().check(EN_GOOD, EN_LISTING)
    assert tuple(results) == quality.QUALITY_CHECKS + quality.SAFETY_CHECKS
    assert set(quality.FIDELITY_CHECKS) <= set(quality.QUALITY_CHECKS)


def test_gate_check_without_extras_passes_fidelity():
    results = quality.QualityGate().check("A red Nike running shoe with a soft sole and a light upper.", EN_LISTING)
    assert results["brand"].passed
    assert results["near_duplicate"].passed
    assert "no brand lexicon" in results["brand"].reason


def test_brand_word_boundary_and_case():
    lexicon = Lexicon(brands={"Acme", "Nike"}, categories=set())
    gate = quality.QualityGate()
    assert gate.check("Shoes like Nikes are everywhere.", EN_LISTING, lexicon=lexicon)["brand"].passed
    assert not gate.check("A NIKE-style upper.", EN_LISTING, lexicon=lexicon)["brand"].passed
    assert not gate.check("Nike运动鞋同款鞋底", ZH_LISTING, lexicon=lexicon)["brand"].passed
    assert gate.check("ACME's lightest shoe.", EN_LISTING, lexicon=lexicon)["brand"].score == 1.0


def test_brand_in_title_is_not_hallucinated():
    listing = {**EN_LISTING, "title": "Acme case for Nike shoes"}
    lexicon = Lexicon(brands={"Acme", "Nike"})
    result = quality.QualityGate().check("A shoe bag that fits Nike running shoes.", listing, lexicon=lexicon)
    assert result["brand"].passed


def test_category_singular_and_plural_match():
    jacket = {**EN_LISTING, "title": "Fernwood Shell", "category": ["Clothing", "Jackets"]}
    lexicon = Lexicon(categories={"Clothing", "Jackets", "Headphone"})
    gate = quality.QualityGate()
    assert gate.check("A warm jacket for wet days.", jacket, lexicon=lexicon)["category"].score == 1.0
    assert not gate.check("Noise-cancelling headphones.", jacket, lexicon=lexicon)["category"].passed


def test_category_plural_and_own_term_win():
    lexicon = Lexicon.from_listings(CATALOG)
    gate = quality.QualityGate()
    own_and_other = gate.check("A running shoe you can wear with headphones on.", EN_LISTING, lexicon=lexicon)
    assert own_and_other["category"].passed
    assert own_and_other["category"].score == 1.0
    uncategorised = {**EN_LISTING, "category": [], "attributes": {}}
    assert gate.check("Wireless headphones.", uncategorised, lexicon=lexicon)["category"].passed


@pytest.mark.parametrize("text, expected", [
    ("一年四季都能穿的连衣裙", True),
    ("十分好看，百搭耐看", True),
    ("9分裙长，垂感好", True),
    ("２条装，更划算", False),
    ("两千克的重量", False),
    ("一百二十元入手", False),
])
def test_numbers_chinese_numerals(text, expected):
    assert check_numbers(text, ZH_LISTING).passed is expected


def test_repetition_catches_chinese_word_loops_without_repeated_4grams():
    # No character 4-gram repeats here, so only the bigram share can catch the loop.
    loop = "这条裙子好看，裙子的裙摆，裙子很好，好看的裙子，裙摆好看。"
    gate = quality.QualityGate()
    result = gate.check(loop, ZH_LISTING)["repetition"]
    assert not result.passed
    assert "n-gram share 0.00" in result.reason
    assert "CJK bigram share" in result.reason
    assert gate.check(ZH_GOOD, ZH_LISTING)["repetition"].passed
    assert quality.QualityGate(max_repeated_cjk_bigram_share=0.5).check(loop, ZH_LISTING)["repetition"].passed


def test_repetition_share_must_be_a_fraction():
    with pytest.raises(ValueError, match="max_repeated_cjk_bigram_share"):
        quality.QualityGate(max_repeated_cjk_bigram_share=1.5)


@pytest.mark.parametrize("text", [
    "用了3天就坏了，第二次买了", "5星好评，住在5楼", "1、外观不错；2、声音不错", "两个月前买的，用了十天",
    "Used it for 2 weeks and give it 5 stars.",
])
def test_numbers_review_may_state_its_use(text):
    assert check_numbers(text, ZH_LISTING, task="review").passed
    assert not check_numbers(text, ZH_LISTING, task="description").passed


@pytest.mark.parametrize("text", ["只要99元，用了3天", "500万像素，两个月前买的", "内存10g", "Paid $45 after 2 weeks."])
def test_numbers_review_still_checks_prices_and_specs(text):
    assert not check_numbers(text, ZH_LISTING, task="review").passed


def test_numbers_task_is_checked():
    with pytest.raises(ValueError, match="'summary'"):
        check_numbers("3 days", EN_LISTING, task="summary")


def test_numbers_thousands_separator():
    listing = {**EN_LISTING, "price": 1299.0}
    assert check_numbers("Yours for 1,299.00 USD.", listing).passed
    assert not check_numbers("Yours for 1,399.00 USD.", listing).passed


@pytest.mark.parametrize("number, valid", [
    ("4111 1111 1111 1111", True),
    ("5500-0000-0000-0004", True),
    ("378282246310005", True),
    ("4111 1111 1111 1112", False),
    ("5500-0000-0000-0005", False),
    ("378282246310006", False),
])
def test_pii_card_number_needs_luhn(number, valid):
    found = safety.find_pii(f"Pay with card {number} today")
    assert ("card_number" in found) is valid


@pytest.mark.parametrize("phone", [
    "13812345678", "138 1234 5678", "138-1234-5678", "+86-13812345678", "+86 138 1234 5678",
    "0086 13812345678", "１３８１２３４５６７８",
])
def test_pii_chinese_mobile_formats(phone):
    assert "cn_mobile" in safety.find_pii(f"欢迎致电{phone}咨询")


@pytest.mark.parametrize("text, kind", [
    ("座机010-12345678", "cn_landline"),
    ("Call (555) 123-4567", "phone"),
    ("Call +44 20 7946 0958", "international_phone"),
    ("Write to help@example.org", "email"),
    ("See https://example.com/deal", "url"),
    ("访问shop.example.com购买", "domain"),
    ("身份证11010519491231002X", "cn_id_card"),
    ("加微信abc_12345咨询", "wechat_qq"),
    ("WeChat: shopperxyz", "wechat_qq"),
    ("QQ：12345678", "wechat_qq"),
])
def test_pii_kinds(text, kind):
    assert kind in safety.find_pii(text)


@pytest.mark.parametrize("text", [
    "支持微信支付和支付宝", "QQ音乐会员专享", "Supports WeChat payment", "e.g. the v1.2 firmware",
    "Built with Node.js", "货号：12812345678", "Size 38 39 40 in stock", "1.2千克，30x20x10厘米",
    "Pay with card 1234 5678 1234 5678",
])
def test_pii_ordinary_text_passes(text):
    assert safety.find_pii(text) == []


@pytest.mark.parametrize("text", ["ＦＤＡ　Ａｐｐｒｏｖｅｄ formula", "FDA-approved", "１００％安全", "本品可根治脱发"])
def test_blocklist_full_width_and_variants(text):
    assert not quality.QualityGate().check(text, EN_LISTING)["blocklist"].passed


def test_blocklist_word_boundary():
    assert safety.check_blocklist("The lid secures with a twist.").passed
    assert not safety.check_blocklist("It CURES everything.").passed


def test_blocklist_file_loading(tmp_path):
    path = tmp_path / "blocked.txt"
    path.write_text("# forbidden claims\n\nmiracle fabric\n\\#1 seller\n永不起球\n", encoding="utf-8")
    phrases = safety.load_blocklist(path)
    assert phrases == ("miracle fabric", "#1 seller", "永不起球")
    gate = quality.QualityGate(blocklist=phrases)
    assert not gate.check("Made of a Miracle Fabric.", EN_LISTING)["blocklist"].passed
    assert not gate.check("面料永不起球", ZH_LISTING)["blocklist"].passed
    assert gate.check("It cures nothing.", EN_LISTING)["blocklist"].passed


def test_blocklist_file_missing(tmp_path):
    path = tmp_path / "absent.txt"
    with pytest.raises(ValueError, match="absent.txt.*not found"):
        safety.load_blocklist(path)


def test_blocklist_file_empty(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("# only a comment\n\n   \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.txt.*no phrase"):
        safety.load_blocklist(path)


def test_blocklist_path_from_env(tmp_path):
    path = tmp_path / "blocked.txt"
    path.write_text("miracle fabric\n", encoding="utf-8")
    settings = Settings.from_env({"SHOPSYNTH_BLOCKLIST_PATH": str(path)})
    assert gate_from_settings(settings).blocklist == ("miracle fabric",)
    missing = Settings.from_env({"SHOPSYNTH_BLOCKLIST_PATH": str(tmp_path / "nope.txt")})
    with pytest.raises(ValueError, match="nope.txt"):
        gate_from_settings(missing)
    assert gate_from_settings(Settings.from_env({})).blocklist == safety.DEFAULT_BLOCKLIST


def test_near_duplicate_same_item_is_not_duplicate():
    index = NearDuplicateIndex(threshold=0.8)
    index.add(EN_GOOD, item_id="en-1")
    assert index.check(EN_GOOD, "en-1").passed
    other = index.check(EN_GOOD, "en-9")
    assert not other.passed
    assert other.score == pytest.approx(1.0)


def test_near_duplicate_threshold_on_distinct_texts():
    index = NearDuplicateIndex(threshold=0.8)
    index.add(EN_GOOD, item_id="en-1")
    index.add(ZH_GOOD, item_id="zh-1")
    result = index.check(EN_OTHER, "en-3")
    assert result.passed
    assert result.score < 0.8


def test_near_duplicate_evicts_oldest_at_capacity():
    index = NearDuplicateIndex(threshold=0.8, capacity=2)
    index.add(EN_GOOD, item_id="a")
    index.add(EN_OTHER, item_id="b")
    index.add(ZH_OTHER, item_id="c")
    assert len(index) == 2
    assert index.check(EN_GOOD, "z").passed
    assert not index.check(EN_OTHER, "z").passed
    assert not index.check(ZH_OTHER, "z").passed


def test_near_duplicate_rejects_bad_settings():
    with pytest.raises(ValueError, match="threshold"):
        NearDuplicateIndex(threshold=1.5)
    with pytest.raises(ValueError, match="capacity"):
        near_duplicates_from_settings(Settings.from_env({"SHOPSYNTH_NEAR_DUPLICATE_CAPACITY": "0"}))
    index = near_duplicates_from_settings(Settings.from_env({"SHOPSYNTH_NEAR_DUPLICATE_THRESHOLD": "0.6"}))
    assert index.threshold == 0.6


def test_gate_rates_from_records():
    gate = quality.QualityGate()
    lexicon = Lexicon.from_listings(CATALOG)
    texts = [
        quality.as_dict(gate.check(EN_GOOD, EN_LISTING, lexicon=lexicon)),
        quality.as_dict(gate.check("A red Nike shoe, email me at a@b.com today.", EN_LISTING, lexicon=lexicon)),
        gate.check(ZH_GOOD, ZH_LISTING, lexicon=lexicon),
        {"length": {"passed": True, "score": 9.0, "reason": "old record"}},
    ]
    rates = quality.gate_rates(texts)
    assert rates["texts"] == 4
    assert rates["fidelity_rate"] == pytest.approx(2 / 3)
    assert rates["hallucinated_brand_rate"] == pytest.approx(1 / 3)
    assert rates["safety_flag_rate"] == pytest.approx(1 / 3)
    assert math.isnan(quality.gate_rates([])["fidelity_rate"])


def test_enricher_flags_hallucinated_brand():
    # The Nike listing arrives after the Acme one in the same batch, but the
    # enricher adds every listing of the batch to the lexicon before gating.
    nike = {**EN_LISTING, "item_id": "en-2", "event_id": "e3", "title": "Nike Pegasus shoe", "brand": "Nike",
            "description": "A daily trainer with a responsive foam midsole and a breathable engineered mesh "
                           "upper for long runs.", "review_count": 20}
    hallucinated = [f"A light red running shoe, attempt {n}, built on the same last as a Nike racer."
                    for n in ("one", "two", "three")]
    generator = ScriptedGenerator([*hallucinated, "Comfortable from the first run and light on my feet."])
    enricher = Enricher(generator=generator, max_regenerations=2, policy=ColdStartPolicy(min_interactions=0))
    acme_record, nike_record = enricher.enrich_batch([EN_LISTING, nike], [source(1), source(2)])
    assert acme_record["description"] is None
    assert acme_record["gate_rejected"] == ["description"]
    brand = acme_record["quality"]["description"]["brand"]
    assert brand["passed"] is False
    assert "Nike" in brand["reason"]
    assert len([call for call in generator.calls if call.get("seed") is not None]) == 2
    assert acme_record["reviews"][0]["text"].startswith("Comfortable")
    assert nike_record["cold"] is False
    assert "Nike" in enricher.lexicon.brands


def test_enricher_rejects_copy_of_other_item_text():
    other = {**EN_LISTING, "item_id": "en-5", "event_id": "e5"}
    generator = ScriptedGenerator([EN_GOOD, EN_GOOD, "Comfortable from the first run and light on my feet.",
                                   "Fits true to size and the grip on wet roads is good."])
    enricher = Enricher(generator=generator, max_regenerations=0, review_ratings=(5,))
    first, second = enricher.enrich_batch([EN_LISTING, other], [source(1), source(2)])
    assert first["description"] == EN_GOOD
    assert second["description"] is None
    assert second["quality"]["description"]["near_duplicate"]["passed"] is False
    assert len(enricher.near_duplicates) >= 1


def test_brand_that_is_a_word_needs_its_case():
    lexicon = Lexicon(brands={"WITH", "Sharp", "even"}, categories=set())
    gate = quality.QualityGate()
    assert gate.check("A shirt with long sleeves and a sharp collar, even in summer.", EN_LISTING,
                      lexicon=lexicon)["brand"].passed
    assert not gate.check("Cut like the Sharp printer line.", EN_LISTING, lexicon=lexicon)["brand"].passed
    # A brand that is a stop word is never evidence, even in capitals.
    assert gate.check("A WITH logo on the chest.", EN_LISTING, lexicon=lexicon)["brand"].passed
