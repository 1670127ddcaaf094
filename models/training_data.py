"""Real (listing, description) pairs from public catalogues, for fine-tuning the generator.

Readers:

* Amazon Review Data 2018 item metadata (``meta_<Category>.json.gz``, JSON lines).
* The Myntra fashion catalogue (``myntra_products_catalog.csv.gz``).

Descriptions are cleaned the same way for both sources: HTML tags stripped,
entities unescaped, whitespace normalised, short texts dropped, long texts cut at
a sentence or word boundary, and exact duplicates removed.
"""

from __future__ import annotations

import collections
import csv
import gzip
import html
import json
import logging
import re
from pathlib import Path

logger = logging.getLogger(__name__)

MIN_DESCRIPTION_CHARS = 40
MIN_DESCRIPTION_WORDS = 6
MAX_DESCRIPTION_CHARS = 600
MAX_CATEGORY_PART_CHARS = 40

_TAG_RE = re.compile(r"<[^>]*>")
_WHITESPACE_RE = re.compile(r"\s+")
_PRICE_RE = re.compile(r"^\$\s*([0-9][0-9,]*(?:\.[0-9]+)?)$")
# Amazon "details" keys that hold identifiers or shipping terms, not product attributes.
_AMAZON_SKIPPED_DETAILS = {
    "asin",
    "upc",
    "domestic shipping",
    "international shipping",
    "shipping weight",
    "date first listed on amazon",
    "discontinued by manufacturer",
    "amazon best sellers rank",
    "item model number",
}


def clean_text(text: str | None) -> str:
    """Strip HTML tags, unescape entities and collapse whitespace.

    Entities are unescaped twice because some sources escape them twice
    (``&amp;amp;``). Tags are removed before and after unescaping, so escaped
    markup such as ``&lt;br&gt;`` is removed too.
    """
    if not text:
        return ""
    text = _TAG_RE.sub(" ", str(text))
    for _ in range(2):
        text = html.unescape(text)
    text = _TAG_RE.sub(" ", text)
    text = text.replace("\u00a0", " ")
    return _WHITESPACE_RE.sub(" ", text).strip()


def cap_length(text: str, *, max_chars: int = MAX_DESCRIPTION_CHARS) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, at a sentence end if possible.

    The cut falls at the last sentence end (``.``, ``!``, ``?``) in the second half of
    the allowed span, else at the last space, else exactly at ``max_chars``.
    """
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    sentence_end = max(head.rfind(". "), head.rfind("! "), head.rfind("? "))
    if sentence_end >= max_chars // 2:
        return head[: sentence_end + 1]
    space = head.rfind(" ")
    if space >= max_chars // 2:
        return head[:space].rstrip(",;:-")
    return head


def is_usable_description(text: str) -> bool:
    """Return True when a cleaned description is long enough to learn from."""
    return len(text) >= MIN_DESCRIPTION_CHARS and len(text.split()) >= MIN_DESCRIPTION_WORDS


def _parse_amazon_price(price: str | None) -> float | None:
    """Parse a single dollar amount such as ``"$1,025.00"``. Ranges and other text return None."""
    match = _PRICE_RE.match((price or "").strip())
    return float(match.group(1).replace(",", "")) if match else None


def _clean_category(parts: list) -> list[str]:
    """Keep short path segments, dropping HTML leftovers, sentences and repeats of the parent."""
    category: list[str] = []
    for part in parts or []:
        name = clean_text(part)
        if not name or len(name) > MAX_CATEGORY_PART_CHARS or name.endswith("."):
            continue
        if category and category[-1] == name:
            continue
        category.append(name)
    return category


def _clean_amazon_details(details: dict | None) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for key, value in (details or {}).items():
        name = clean_text(key).rstrip(":").strip()
        if not name or name.lower() in _AMAZON_SKIPPED_DETAILS:
            continue
        cleaned_value = clean_text(value) if isinstance(value, str) else ""
        if cleaned_value:
            attributes[name] = cleaned_value
    return attributes


def _finish_pairs(
    candidates: list[tuple[dict, str]], *, source: str, limit: int | None
) -> list[tuple[dict, str]]:
    """Drop short and duplicate descriptions, cap lengths and apply ``limit``."""
    pairs: list[tuple[dict, str]] = []
    seen: set[str] = set()
    dropped_short = dropped_duplicate = 0
    for listing, raw_description in candidates:
        description = cap_length(raw_description)
        if not is_usable_description(description):
            dropped_short += 1
            continue
        key = description.lower()
        if key in seen:
            dropped_duplicate += 1
            continue
        seen.add(key)
        pairs.append((listing, description))
        if limit is not None and len(pairs) >= limit:
            break
    logger.info(
        "loaded %d %s pairs (dropped %d short, %d duplicate descriptions)",
        len(pairs), source, dropped_short, dropped_duplicate,
    )
    return pairs


def load_amazon2018_pairs(
    meta_path: Path, *, limit: int | None = None, boilerplate_min_items: int = 20
) -> list[tuple[dict, str]]:
    """Read (listing, description) pairs from Amazon 2018 item metadata.

    Parameters
    ----------
    meta_path : Path
        ``meta_<Category>.json.gz`` (or an uncompressed ``.json``) with one JSON object
        per line and the fields ``asin``, ``title``, ``brand``, ``category``,
        ``description`` (list of strings), ``price`` and ``details``.
    limit : int or None
        Maximum number of pairs returned, in file order.
    boilerplate_min_items : int
        A description segment that appears verbatim in at least this many items
        (store-wide marketing or legal text) is removed before cleaning.

    Returns
    -------
    list of (dict, str)
        Listing dicts in the shared listing schema and the cleaned real description.
    """
    meta_path = Path(meta_path)
    records = _read_json_lines(meta_path)
    segment_items = collections.Counter(
        segment for record in records for segment in set(record.get("description") or [])
    )
    candidates: list[tuple[dict, str]] = []
    for record in records:
        listing = amazon2018_listing(record)
        if listing is None:
            continue
        segments = [
            clean_text(segment)
            for segment in record.get("description") or []
            if segment_items[segment] < boilerplate_min_items
        ]
        description = " ".join(segment for segment in segments if segment)
        candidates.append((listing, description))
    return _finish_pairs(candidates, source=f"amazon2018 {meta_path.name}", limit=limit)


def read_amazon2018_listings(meta_path: Path) -> dict[str, dict]:
    """Read every titled item of an Amazon 2018 metadata file as a listing, keyed by ASIN."""
    listings = {}
    for record in _read_json_lines(Path(meta_path)):
        listing = amazon2018_listing(record)
        if listing is not None:
            listings[listing["item_id"]] = listing
    return listings


def amazon2018_listing(record: dict) -> dict | None:
    """Convert one Amazon 2018 metadata record to the shared listing schema; None without a title."""
    title = clean_text(record.get("title"))
    if not title:
        return None
    price = _parse_amazon_price(record.get("price"))
    return {
        "event_id": f"amazon2018-{record.get('asin')}",
        "item_id": str(record.get("asin")),
        "title": title,
        "brand": clean_text(record.get("brand")) or None,
        "category": _clean_category(record.get("category") or []),
        "attributes": _clean_amazon_details(record.get("details")),
        "price": price,
        "currency": "USD" if price is not None else None,
        "description": None,
        "review_count": 0,
        "language": "en",
        "created_at_ms": 0,
    }


def _read_json_lines(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    records = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                logger.warning("skipping invalid JSON at %s line %d: %s", path, line_number, error)
    return records


def _split_glued_sentences(text: str, *, keep_words: set[str]) -> str:
    """Insert ". " where a line break was lost between two sentences ("lockOne" -> "lock. One").

    Words that also appear in the title or brand (such as "DressBerry") are kept.
    """

    def split_word(match: re.Match) -> str:
        word = match.group(0)
        if word.lower() in keep_words:
            return word
        return re.sub(r"(?<=[a-z]{2})(?=[A-Z][a-z])", ". ", word)

    return re.sub(r"\b[A-Za-z]+\b", split_word, text)


def load_myntra_pairs(csv_path: Path, *, limit: int | None = None) -> list[tuple[dict, str]]:
    """Read (listing, description) pairs from the Myntra fashion catalogue CSV.

    Parameters
    ----------
    csv_path : Path
        ``myntra_products_catalog.csv.gz`` (or plain ``.csv``) with the columns
        ``Product_ID``, ``Product_Name``, ``Product_Brand``, ``Gender``, ``Price``
        (INR) and ``Description``. Other columns are ignored.
    limit : int or None
        Maximum number of pairs returned, in file order.

    Returns
    -------
    list of (dict, str)
        Listing dicts in the shared listing schema and the cleaned real description.

    Raises
    ------
    ValueError
        If a required column is missing from the header.
    """
    csv_path = Path(csv_path)
    opener = gzip.open if csv_path.suffix == ".gz" else open
    required = {"Product_ID", "Product_Name", "Product_Brand", "Gender", "Price", "Description"}
    candidates: list[tuple[dict, str]] = []
    with opener(csv_path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = required - set(reader.fieldnames or [])
        if missing:
            raise ValueError(
                f"{csv_path} is missing columns {sorted(missing)}; expected the Myntra catalogue header"
            )
        for row in reader:
            title = clean_text(row["Product_Name"])
            if not title:
                continue
            brand = clean_text(row["Product_Brand"]) or None
            keep_words = {word.lower() for word in re.findall(r"[A-Za-z]+", f"{title} {brand or ''}")}
            description = _split_glued_sentences(clean_text(row["Description"]), keep_words=keep_words)
            try:
                price = float(row["Price"])
            except (TypeError, ValueError):
                price = None
            gender = clean_text(row["Gender"])
            # Primary_Color is left out: it is often wrong for multi-colour items,
            # and the title names the colour.
            listing = {
                "event_id": f"myntra-{row['Product_ID']}",
                "item_id": str(row["Product_ID"]),
                "title": title,
                "brand": brand,
                "category": [],
                "attributes": {"gender": gender} if gender else {},
                "price": price,
                "currency": "INR" if price is not None else None,
                "description": None,
                "review_count": 0,
                "language": "en",
                "created_at_ms": 0,
            }
            candidates.append((listing, description))
    return _finish_pairs(candidates, source=f"myntra {csv_path.name}", limit=limit)
