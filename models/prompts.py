"""Plain-text task prompts for description and review generation.

The prompts do not use the tokenizer's chat template, so that a fine-tuned base
and a tiny test model see the same text. Each prompt is a short block of
``### <section>`` headers and ends with the header of the section to write.
A model trained on (prompt, target + EOS) pairs ends the target with EOS. An
untuned model often starts a new ``###`` section instead, so
:func:`clean_generation` cuts at either.
"""

from __future__ import annotations

import re

SECTION_MARKER = "###"
DESCRIPTION_HEADER = f"{SECTION_MARKER} Description\n"
REVIEW_HEADER = f"{SECTION_MARKER} Review\n"

# Special tokens of the SmolLM2 tokenizer (EOS is <|im_end|>) and generic ones,
# in case a decoder keeps special tokens in the text.
STOP_STRINGS = (SECTION_MARKER, "<|im_end|>", "<|im_start|>", "<|endoftext|>", "</s>")

LANGUAGE_NAMES = {"en": "English", "zh": "Chinese"}
SENTIMENT_WORDS = {"negative": "negative", "neutral": "mixed", "positive": "positive"}
MAX_ATTRIBUTES = 12
MAX_FIELD_CHARS = 200


def _field(value: object) -> str:
    text = re.sub(r"\s+", " ", str(value)).strip()
    if len(text) > MAX_FIELD_CHARS:
        text = text[:MAX_FIELD_CHARS].rstrip() + "…"
    return text


def _format_price(price: object, currency: object) -> str | None:
    if price is None:
        return None
    try:
        amount = f"{float(price):.2f}"
    except (TypeError, ValueError):
        amount = _field(price)
    return f"{amount} {_field(currency)}" if currency else amount


def _listing_block(listing: dict) -> str:
    title = _field(listing.get("title") or "")
    if not title:
        raise ValueError(
            f"listing {listing.get('item_id')!r} has an empty title; a title is required for the prompt"
        )
    lines = [f"Title: {title}"]
    if listing.get("brand"):
        lines.append(f"Brand: {_field(listing['brand'])}")
    category = [_field(part) for part in listing.get("category") or [] if str(part).strip()]
    if category:
        lines.append("Category: " + " > ".join(category))
    attributes = listing.get("attributes") or {}
    attribute_parts = [
        f"{_field(name)}: {_field(value)}"
        for name, value in list(attributes.items())[:MAX_ATTRIBUTES]
        if str(value).strip()
    ]
    if attribute_parts:
        lines.append("Attributes: " + "; ".join(attribute_parts))
    price = _format_price(listing.get("price"), listing.get("currency"))
    if price:
        lines.append(f"Price: {price}")
    return "\n".join(lines)


def _language_name(listing: dict) -> str:
    code = listing.get("language") or "en"
    return LANGUAGE_NAMES.get(code, code)


def description_prompt(listing: dict) -> str:
    """Build the prompt that requests a product description of ``listing``.

    Parameters
    ----------
    listing : dict
        Listing dict with at least a non-empty ``title``. ``brand``, ``category``,
        ``attributes``, ``price``/``currency`` and ``language`` are used when set.

    Returns
    -------
    str
        Prompt text that ends with the ``### Description`` header line.

    Raises
    ------
    ValueError
        If the title is missing or empty.
    """
    return (
        f"{SECTION_MARKER} Task\n"
        f"Write the product description for this store listing in {_language_name(listing)}.\n"
        f"{SECTION_MARKER} Listing\n"
        f"{_listing_block(listing)}\n"
        f"{DESCRIPTION_HEADER}"
    )


def review_prompt(listing: dict, rating: int | None = None, *, sentiment: str | None = None) -> str:
    """Build the prompt that requests a customer review of ``listing``.

    Parameters
    ----------
    listing : dict
        Listing dict with at least a non-empty ``title``.
    rating : int or None
        Star rating from 1 to 5.
    sentiment : str or None
        ``"negative"``, ``"neutral"`` or ``"positive"``, for sources without star
        ratings. At least one of ``rating`` and ``sentiment`` is required.

    Returns
    -------
    str
        Prompt text that ends with the ``### Review`` header line.

    Raises
    ------
    ValueError
        If ``rating`` is not an integer from 1 to 5, ``sentiment`` is not a known
        label, both are missing, or the title is empty.
    """
    if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5):
        raise ValueError(f"invalid rating {rating!r}: expected an integer from 1 to 5")
    if sentiment is not None and sentiment not in SENTIMENT_WORDS:
        raise ValueError(f"invalid sentiment {sentiment!r}: expected one of {sorted(SENTIMENT_WORDS)}")
    if rating is None and sentiment is None:
        raise ValueError("missing rating and sentiment: pass a rating from 1 to 5 or a sentiment label")
    language = _language_name(listing)
    if rating is not None:
        request = f"Write a customer review in {language} of this product, rated {rating} out of 5 stars.\n"
        condition = f"Rating: {rating}/5\n"
    else:
        request = f"Write a {SENTIMENT_WORDS[sentiment]} customer review in {language} of this product.\n"
        condition = f"Sentiment: {sentiment}\n"
    return (
        f"{SECTION_MARKER} Task\n"
        f"{request}"
        f"{SECTION_MARKER} Listing\n"
        f"{_listing_block(listing)}\n"
        f"{condition}"
        f"{REVIEW_HEADER}"
    )


def clean_generation(text: str) -> str:
    """Cut generated text at the first stop string and normalise whitespace.

    Stop strings are the ``###`` section marker and the EOS-like special tokens in
    :data:`STOP_STRINGS`. Runs of spaces and tabs collapse to one space, blank lines
    collapse to one line break, and the result is stripped.
    """
    cut = len(text)
    for stop in STOP_STRINGS:
        index = text.find(stop)
        if index != -1:
            cut = min(cut, index)
    text = text[:cut]
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    text = re.sub(r"\s*\n\s*", "\n", text)
    return text.strip()


def prompt_token_ids(tokenizer, text: str) -> list[int]:
    """Tokenize a prompt without special tokens, except a leading BOS where the tokenizer adds one.

    Gemma tokenizers add ``<bos>`` by default and Gemma models degrade without it;
    the SmolLM2 tokenizer adds nothing. Training, evaluation and the ONNX runtime
    all tokenize prompts this way.
    """
    token_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos_id = tokenizer.bos_token_id
    if bos_id is not None and tokenizer("", add_special_tokens=True)["input_ids"][:1] == [bos_id]:
        return [bos_id] + token_ids
    return token_ids
