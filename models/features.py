"""Feature tokens for the hybrid recommender, built from listing dicts and text.

Item features are strings such as ``"brand=acme"``, ``"cat=clothing/women"``,
``"attr=colour=red"`` and ``"price=usd:32-64"``. The recommender adds the identity
token ``"item=<id>"`` itself and normalises the feature weights of each item row.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence

logger = logging.getLogger(__name__)

# ISO 4217 code for "no currency", used when a listing has a price but no currency.
NO_CURRENCY = "xxx"

SUPPORTED_LANGUAGES = ("en", "zh")

# A compact English stop-word list (articles, pronouns, auxiliaries, prepositions,
# conjunctions) plus a few words that carry no product meaning in listings.
ENGLISH_STOP_WORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each
    few for from further had has have having he her here hers herself him himself his how
    i if in into is it its itself just me more most my myself no nor not now of off on
    once only or other our ours ourselves out over own same she should so some such than
    that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with
    would you your yours yourself yourselves
    s t don ll re ve m d
    """.split()
)

_WHITESPACE = re.compile(r"\s+")
# Runs of CJK unified ideographs (basic block and extension A).
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+")
# Word characters that are not CJK ideographs: Latin words and numbers.
_NON_CJK_WORD = re.compile(r"[^\W\u3400-\u4dbf\u4e00-\u9fff]+")


def normalise_text(value: str) -> str:
    """Normalise a feature value: NFKC, lowercase, whitespace collapsed to one space.

    NFKC maps full-width forms (common in Chinese listings) to their ASCII
    equivalents, so ``"ＡＢＣ 牌"`` and ``"abc 牌"`` give the same value.

    Parameters
    ----------
    value : str
        Raw text, such as a brand or category name.

    Returns
    -------
    str
        The normalised text, empty when ``value`` has no visible characters.
    """
    folded = unicodedata.normalize("NFKC", value).casefold()
    return _WHITESPACE.sub(" ", folded).strip()


def category_tokens(category: Sequence[str] | str | None) -> list[str]:
    """Build one ``"cat=<path>"`` token for every ancestor of a category path.

    Parameters
    ----------
    category : sequence of str, str or None
        Category path from root to leaf. A single string is one level. ``"/"``
        inside a level becomes ``"|"`` so that it cannot be read as a level break.
        Empty levels are dropped.

    Returns
    -------
    list of str
        ``["cat=a", "cat=a/b", ...]``, root first; empty for an empty path.
    """
    if category is None:
        return []
    levels = [category] if isinstance(category, str) else list(category)
    path: list[str] = []
    tokens = []
    for level in levels:
        name = normalise_text(str(level)).replace("/", "|")
        if not name:
            continue
        path.append(name)
        tokens.append("cat=" + "/".join(path))
    return tokens


def price_bucket_token(
    price: float | None, currency: str | None, *, bucket_base: float = 2.0
) -> str | None:
    """Map a price to a log-scale bucket token per currency, like ``"price=usd:32-64"``.

    Bucket ``b`` covers ``[base**b, base**(b + 1))`` in ``currency`` units. Prices are
    not converted between currencies, so each currency has its own buckets.

    Parameters
    ----------
    price : float or None
        Price in ``currency`` units.
    currency : str or None
        ISO 4217 code; None becomes ``"xxx"`` (the ISO code for no currency).
    bucket_base : float, default 2.0
        Ratio between the upper and lower bound of a bucket; must be > 1.

    Returns
    -------
    str or None
        The token; ``"price=<cur>:0"`` for a price of 0; None for a missing,
        negative or non-finite price.
    """
    if bucket_base <= 1.0:
        raise ValueError(f"bucket_base must be > 1, got {bucket_base!r}")
    if price is None:
        return None
    price = float(price)
    if not math.isfinite(price) or price < 0:
        logger.debug("no price bucket for price=%r currency=%r", price, currency)
        return None
    code = normalise_text(currency) if currency else NO_CURRENCY
    if price == 0:
        return f"price={code}:0"
    bucket = math.floor(math.log(price) / math.log(bucket_base))
    return f"price={code}:{bucket_base ** bucket:g}-{bucket_base ** (bucket + 1):g}"


def attribute_tokens(
    attributes: Mapping[str, object] | None,
    *,
    max_attributes: int = 16,
    max_value_chars: int = 40,
) -> list[str]:
    """Build ``"attr=<key>=<value>"`` tokens, sorted by key and capped.

    Parameters
    ----------
    attributes : mapping or None
        Attribute name to value. Entries whose normalised key or value is empty
        are dropped. ``"="`` in a key becomes ``":"`` so that the key ends at the
        first ``"="`` of the token.
    max_attributes : int, default 16
        Maximum number of tokens; the first keys in sorted order are kept.
    max_value_chars : int, default 40
        Values longer than this are cut to this many characters, so free text in
        an attribute does not create a near-unique token per item.

    Returns
    -------
    list of str
    """
    if not attributes:
        return []
    tokens = []
    for key in sorted(attributes, key=lambda raw: normalise_text(str(raw))):
        name = normalise_text(str(key)).replace("=", ":")
        value = normalise_text(str(attributes[key]))[:max_value_chars].rstrip()
        if not name or not value:
            continue
        tokens.append(f"attr={name}={value}")
        if len(tokens) == max_attributes:
            break
    return tokens


def item_feature_tokens(
    listing: Mapping[str, object],
    *,
    max_attributes: int = 16,
    max_attribute_value_chars: int = 40,
    price_bucket_base: float = 2.0,
) -> list[str]:
    """Build the structured feature tokens of a listing: brand, categories, attributes, price.

    Parameters
    ----------
    listing : mapping
        A validated listing dict. Reads ``brand``, ``category``, ``attributes``,
        ``price`` and ``currency``; all are optional here.
    max_attributes, max_attribute_value_chars : int
        Caps passed to :func:`attribute_tokens`.
    price_bucket_base : float, default 2.0
        Bucket ratio passed to :func:`price_bucket_token`.

    Returns
    -------
    list of str
        Distinct tokens in a fixed order (brand, categories root first, attributes
        by key, price). The identity token ``"item=<id>"`` is not included.
    """
    tokens: list[str] = []
    brand = listing.get("brand")
    if brand:
        name = normalise_text(str(brand))
        if name:
            tokens.append(f"brand={name}")
    tokens.extend(category_tokens(listing.get("category")))
    tokens.extend(
        attribute_tokens(
            listing.get("attributes"),
            max_attributes=max_attributes,
            max_value_chars=max_attribute_value_chars,
        )
    )
    price_token = price_bucket_token(
        listing.get("price"), listing.get("currency"), bucket_base=price_bucket_base
    )
    if price_token is not None:
        tokens.append(price_token)
    return list(dict.fromkeys(tokens))


def _words(text: str, *, language: str) -> list[str]:
    """Split normalised text into English words or, for Chinese, character bigrams."""
    words = [
        word
        for word in _NON_CJK_WORD.findall(text)
        if len(word) > 1 and not word.isdigit() and word not in ENGLISH_STOP_WORDS
    ]
    if language == "zh":
        for run in _CJK_RUN.findall(text):
            if len(run) == 1:
                words.append(run)
            else:
                words.extend(run[i : i + 2] for i in range(len(run) - 1))
    return words


def text_feature_tokens(
    text: str | None,
    *,
    language: str,
    synthetic: bool,
    synthetic_weight: float = 0.25,
    max_tokens: int = 32,
) -> list[tuple[str, float]]:
    """Build bag-of-words feature tokens ``("text=<word>", weight)`` from listing text.

    English text is split into lowercase words without stop words, numbers and
    one-letter words. Chinese text gives character bigrams of each run of CJK
    ideographs (a single ideograph between non-CJK characters is kept as is) plus
    the Latin words in it.

    Parameters
    ----------
    text : str or None
        Title or description.
    language : {"en", "zh"}
        Language of ``text``.
    synthetic : bool
        True when ``text`` was generated by a model rather than written by the seller.
    synthetic_weight : float, default 0.25
        Weight of every token from synthetic text; tokens from real text weigh 1.0.
        A small weight keeps generated words from outweighing brand and category.
    max_tokens : int, default 32
        Maximum number of tokens; the most frequent words are kept, ties broken by
        first occurrence.

    Returns
    -------
    list of (str, float)
        Distinct tokens with their weights; empty for empty text.
    """
    if language not in SUPPORTED_LANGUAGES:
        raise ValueError(
            f"unsupported language {language!r}; expected one of {SUPPORTED_LANGUAGES}"
        )
    if not 0.0 < synthetic_weight <= 1.0:
        raise ValueError(f"synthetic_weight must be in (0, 1], got {synthetic_weight!r}")
    if not text:
        return []
    counts = Counter(_words(normalise_text(text), language=language))
    # Counter.most_common keeps insertion order among equal counts.
    kept = counts.most_common(max_tokens)
    weight = synthetic_weight if synthetic else 1.0
    return [(f"text={word}", weight) for word, _ in kept]


def listing_text_tokens(
    record: Mapping[str, object],
    *,
    synthetic_weight: float = 0.25,
    max_tokens: int = 32,
    include_title: bool = True,
) -> list[tuple[str, float]]:
    """Build text feature tokens from a listing's title, description and reviews.

    The description counts as synthetic when ``record["description_synthetic"]``
    is true, and each review when its ``synthetic`` flag is. A word found in
    several texts keeps the largest of its weights, so a word in real text is
    not down-weighted by the same word in generated text.

    Parameters
    ----------
    record : mapping
        An enriched listing (``listings-enriched`` record) or a plain listing dict.
        Reads ``title``, ``description``, ``description_synthetic``, ``reviews`` and
        ``language``.
    synthetic_weight : float, default 0.25
        Weight of tokens from generated text, passed to :func:`text_feature_tokens`.
    max_tokens : int, default 32
        Maximum tokens per text.
    include_title : bool, default True
        Add the words of the title as real text.

    Returns
    -------
    list of (str, float)
        Distinct ``"text=<word>"`` tokens with their weights.
    """
    language = str(record.get("language") or "en")
    texts: list[tuple[str | None, bool]] = []
    if include_title:
        texts.append((record.get("title"), False))
    texts.append((record.get("description"), bool(record.get("description_synthetic"))))
    for review in record.get("reviews") or ():
        texts.append((review.get("text"), bool(review.get("synthetic"))))
    weights: dict[str, float] = {}
    for text, synthetic in texts:
        for token, weight in text_feature_tokens(text, language=language, synthetic=synthetic,
                                                 synthetic_weight=synthetic_weight,
                                                 max_tokens=max_tokens):
            weights[token] = max(weights.get(token, 0.0), weight)
    return list(weights.items())
