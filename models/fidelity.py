"""Attribute fidelity checks: brand, category and numbers of a generated text.

A text is faithful when it does not contradict the listing it was written
for. It must not name a known brand or category that the listing does not
carry, and it must not state a number that is absent from the listing.
Known brands and categories come from a :class:`Lexicon`, which the enricher
grows from the listings it receives and which can also be built from a training
corpus of listings.

Term matching follows :mod:`models.text_match`: case-insensitive and on whole
tokens for Latin names, exact substrings for names with CJK characters.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from models.gate_result import CheckResult
from models.features import ENGLISH_STOP_WORDS
from models.text_match import TermMatcher

logger = logging.getLogger(__name__)

# Attribute keys whose value is the listing's category. AdvertiseGen listings
# carry their garment type as 类型 (裙, 裤, 上衣, ...).
CATEGORY_ATTRIBUTE_KEYS = ("类型",)
# Latin brand and category names shorter than this are ignored as evidence of
# another brand or category, because names such as "On" or "HP" are also words.
MIN_LATIN_TERM_CHARS = 3


@dataclass(kw_only=True)
class Lexicon:
    """Known brand and category names, grown from listings as they arrive.

    Parameters
    ----------
    brands, categories
        Initial names, for example from a training corpus.

    The sets grow without bound, so a very large catalog enlarges the memory
    and the matching time of every check. Matchers are rebuilt lazily after a
    name is added.
    """

    brands: set[str] = field(default_factory=set)
    categories: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.brands = {name.strip() for name in self.brands if name and name.strip()}
        self.categories = {name.strip() for name in self.categories if name and name.strip()}
        self._brand_matcher: TermMatcher | None = None
        self._category_matcher: TermMatcher | None = None

    @classmethod
    def from_listings(cls, listings: Iterable[Mapping]) -> "Lexicon":
        """Build a lexicon from the brands and categories of ``listings``."""
        lexicon = cls()
        for listing in listings:
            lexicon.add_listing(listing)
        return lexicon

    def add_listing(self, listing: Mapping) -> None:
        """Add the brand and the category terms of ``listing``."""
        brand = str(listing.get("brand") or "").strip()
        if brand and brand not in self.brands:
            self.brands.add(brand)
            self._brand_matcher = None
        new_categories = set(category_terms(listing)) - self.categories
        if new_categories:
            self.categories |= new_categories
            self._category_matcher = None

    @property
    def brand_matcher(self) -> TermMatcher:
        if self._brand_matcher is None:
            # A one-word brand written in lower case ("even") is indistinguishable from the ordinary word.
            brands = {name for name in self.brands if not (name.isascii() and name.islower() and " " not in name)}
            self._brand_matcher = TermMatcher(brands, min_latin_chars=MIN_LATIN_TERM_CHARS,
                                              case_sensitive=True, skip_words=ENGLISH_STOP_WORDS)
        return self._brand_matcher

    @property
    def category_matcher(self) -> TermMatcher:
        if self._category_matcher is None:
            self._category_matcher = TermMatcher(self.categories, plurals=True,
                                                 min_latin_chars=MIN_LATIN_TERM_CHARS)
        return self._category_matcher


def category_terms(listing: Mapping) -> list[str]:
    """Return the listing's category path (root first) and its 类型 value, if any."""
    terms = [str(part).strip() for part in listing.get("category") or [] if str(part).strip()]
    attributes = listing.get("attributes") or {}
    for key in CATEGORY_ATTRIBUTE_KEYS:
        value = str(attributes.get(key) or "").strip()
        if value and value not in terms:
            terms.append(value)
    return terms


def listing_source_text(listing: Mapping) -> str:
    """Join the fields a generated text may repeat: title, brand, category and attributes."""
    attributes = listing.get("attributes") or {}
    parts = [str(listing.get("title") or ""), str(listing.get("brand") or "")]
    parts += [str(part) for part in listing.get("category") or []]
    parts += [f"{key} {value}" for key, value in attributes.items()]
    return " \n ".join(parts)


def check_brand(text: str, listing: Mapping, *, lexicon: Lexicon | None = None) -> CheckResult:
    """Fail when ``text`` names a known brand that the listing does not carry.

    A known brand that also occurs in the listing's title, brand, category or
    attributes is not counted, so a case titled "Acme case for Apple iPhone"
    may name Apple. Naming another brand is the only way to fail, so a failed
    brand check is a hallucinated brand.

    Score: 1.0 when the listing's brand is named, 0.5 when no brand is named,
    0.0 when another brand is named.
    """
    brand = str(listing.get("brand") or "").strip()
    own_named = bool(brand) and bool(TermMatcher([brand]).find(text))
    if lexicon is None:
        reason = "listing brand named" if own_named else "listing brand not named"
        return CheckResult(True, 1.0 if own_named else 0.5, f"{reason}; no brand lexicon, other brands not checked")

    source = listing_source_text(listing)
    source_brands = set(lexicon.brand_matcher.find(source))
    other = [name for name in lexicon.brand_matcher.find(text) if name not in source_brands]
    if other:
        return CheckResult(False, 0.0, f"names brands not in the listing: {other[:5]}")
    if own_named:
        return CheckResult(True, 1.0, f"names the listing brand {brand!r} and no other known brand")
    return CheckResult(True, 0.5, "names no known brand")


def check_category(text: str, listing: Mapping, *, lexicon: Lexicon | None = None) -> CheckResult:
    """Fail when ``text`` names a conflicting category and none of the listing's own.

    The listing's own terms are its category path and its 类型 value; English
    terms also match their singular or plural ("Jackets" matches "jacket"). A
    known category that occurs in the listing's title, category or attributes
    does not conflict. A listing without any category terms has nothing to
    contradict and passes.

    Score: 1.0 when an own term is named, 0.5 when no category is named,
    0.0 when only conflicting categories are named.
    """
    own_terms = category_terms(listing)
    if not own_terms:
        return CheckResult(True, 0.5, "listing has no category terms; nothing to contradict")
    own_named = TermMatcher(own_terms, plurals=True).find(text)
    if own_named:
        return CheckResult(True, 1.0, f"names the listing category {own_named[:3]}")
    if lexicon is None:
        return CheckResult(True, 0.5, "listing category not named; no category lexicon, conflicts not checked")

    source_categories = set(lexicon.category_matcher.find(listing_source_text(listing)))
    conflicting = [name for name in lexicon.category_matcher.find(text) if name not in source_categories]
    if conflicting:
        return CheckResult(False, 0.0, f"names categories not in the listing {conflicting[:5]} "
                                       f"and none of its own {own_terms[:5]}")
    return CheckResult(True, 0.5, "names no known category")


# A number with thousands separators ("1,299.00") or a plain or decimal one ("59", "0,5").
_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:[.,]\d+)?")
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
              "八": 8, "九": 9}
_CN_SMALL_UNITS = {"十": 10, "百": 100, "千": 1000}
_CN_NUMERAL = re.compile("[零〇一二两三四五六七八九十百千万]+")
# A Chinese numeral in generated text counts as a stated number only before one of
# these measure words or units, because 一 and 十 also occur in ordinary words
# (一直, 十分, 百搭). Longer units come first so that 个月 wins over 个. The
# numeral is matched lazily, so 两千克 reads as 2 千克 and 两千元 as 2000 元.
_CN_UNITS = ("个月", "小时", "分钟", "千克", "千米", "千瓦", "公斤", "毫升", "厘米", "毫米", "公分",
             "英寸", "毫安", "岁", "年", "天", "周", "秒", "斤", "克", "升", "米", "寸", "码", "层",
             "倍", "折", "元", "块", "瓦", "伏", "度", "档", "色", "种", "款", "个", "只", "双", "件",
             "片", "包", "套", "袋", "支", "瓶", "盒", "颗", "粒")
_CN_NUMERAL_WITH_UNIT = re.compile("(?<![零〇一二两三四五六七八九十百千万])([零〇一二两三四五六七八九十百千万]+?)(?=" + "|".join(_CN_UNITS) + ")")


# Spans a review may contain without stating a product attribute: time of use,
# counts of events, star scores, ages, floors and list markers ("用了3天",
# "第二次", "5星", "住在5楼", "1、", "2 weeks", "5 stars"). Prices, sizes and
# specifications stay checked. A Chinese numeral here may end in 个 (两个月).
_NUMERAL_CHARS = r"(?:\d+(?:[.,]\d+)?|[零〇一二两三四五六七八九十百千万]+)"
_REVIEW_USAGE_NUMBER = re.compile(
    r"(?:" + _NUMERAL_CHARS + r"\s*多?\s*(?:个月|个小时|个星期|小时|分钟|星期|礼拜|月|年|周|天|晚|夜|次|遍|回|趟|楼|岁|星|颗星|分)"
    r"|(?:(?<=^)|(?<=[\s。，,；;！!？?：:（(\n]))\d{1,2}\s*[、.．)）](?!\d)"
    r"|\b\d+(?:\.\d+)?\s*(?:-\s*)?(?:days?|weeks?|months?|years?|hours?|minutes?|times?|stars?|nights?|year-old)\b)",
    re.IGNORECASE,
)


def check_numbers(text: str, listing: Mapping, *, task: str = "description") -> CheckResult:
    """Fail when ``text`` states a number that is absent from the listing.

    Numbers are compared by value after NFKC normalisation, so "59", "59.00"
    and "５９" are the same and "1,299" equals 1299. Chinese numerals in the
    text count when a measure word or unit follows them (两年, 三件套,
    一百毫升). A bare 一 before a unit is skipped, as is the English word
    "one", because both are ordinary words. In the listing every Chinese
    numeral counts (九分裤 allows "9").

    With ``task="review"``, numbers about the reviewer's use rather than the
    product are not counted: durations, counts of events, star scores,
    ages, floors and list markers (see ``_REVIEW_USAGE_NUMBER``). Prices,
    sizes and specifications are counted for both tasks.

    NOTE: English number words ("two years") and Chinese numerals without a
    unit are not checked.

    Score: the number of distinct invented numbers.
    """
    source = unicodedata.normalize("NFKC", listing_source_text(listing) + f" {listing.get('price') or ''}")
    known = {_normalise_number(number) for number in _NUMBER.findall(source)}
    source_numerals = _CN_NUMERAL.findall(source) + _CN_NUMERAL_WITH_UNIT.findall(source)
    known |= {str(value) for value in map(_parse_cn_numeral, source_numerals) if value is not None}

    if task not in ("description", "review"):
        raise ValueError(f"invalid task {task!r}: expected 'description' or 'review'")
    normalised_text = unicodedata.normalize("NFKC", text)
    if task == "review":
        normalised_text = _REVIEW_USAGE_NUMBER.sub(" ", normalised_text)
    stated = {_normalise_number(number): number for number in _NUMBER.findall(normalised_text)}
    for numeral in _CN_NUMERAL_WITH_UNIT.findall(normalised_text):
        value = _parse_cn_numeral(numeral)
        if value is not None and numeral != "一":
            stated.setdefault(str(value), f"{numeral} ({value})")
    invented = sorted(shown for value, shown in stated.items() if value not in known)
    if invented:
        return CheckResult(False, float(len(invented)), f"numbers absent from the input: {invented[:5]}")
    return CheckResult(True, 0.0, "every number appears in the input")


def _normalise_number(number: str) -> str:
    """Return a canonical decimal string: "1,299.00" -> "1299", "0,5" -> "0.5", "059.90" -> "59.9"."""
    value = number.replace(",", "") if _THOUSANDS.fullmatch(number) else number.replace(",", ".")
    integer, _, fraction = value.partition(".")
    integer = integer.lstrip("0") or "0"
    fraction = fraction.rstrip("0")
    return f"{integer}.{fraction}" if fraction else integer


def _parse_cn_numeral(numeral: str) -> int | None:
    """Return the value of a Chinese numeral (一百零五 -> 105, 二零二三 -> 2023), or None."""
    if not any(ch in _CN_SMALL_UNITS or ch == "万" for ch in numeral):
        return int("".join(str(_CN_DIGITS[ch]) for ch in numeral))
    total = section = digit = 0
    for ch in numeral:
        if ch in _CN_DIGITS:
            digit = _CN_DIGITS[ch]
        elif ch in _CN_SMALL_UNITS:
            section += (digit or 1) * _CN_SMALL_UNITS[ch]
            digit = 0
        else:  # 万
            if section == 0 and digit == 0 and total == 0:
                return None
            total = (total + section + digit) * 10000
            section = digit = 0
    return total + section + digit
