"""Amazon Review Data (2018) to product-created and user-behaviour events.

Input: the per-category JSON-lines files of Ni, Li and McAuley (EMNLP 2019),
``<Category>_5.json.gz`` (5-core reviews) and ``meta_<Category>.json.gz``
(item metadata). Every review becomes a ``purchase`` event of its reviewer,
and every reviewed item with usable metadata becomes a product-created event
one second before its first review.

The star rating is dropped because the behaviour schema has no rating field.
"""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path
from typing import Any, Iterable

import orjson

from streams.loaders import LoadedEvents, find_files, keep_valid, numbered_lines, stable_event_id
from streams.schemas import DEFAULT_LIMITS, EventLimits

logger = logging.getLogger(__name__)

DATASET = "amazon2018"
_BREAK_TAG = re.compile(r"<\s*(?:br|/?p|/div|/li)\b[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t\u00a0]+")
_PRICE = re.compile(r"\$\s*([0-9][0-9,]*(?:\.[0-9]+)?)")
_MAX_CATEGORY_LEVEL_CHARS = 60  # longer "levels" are feature bullets scraped into the path


def load_amazon2018(path: str | Path | Iterable[str | Path], *, limit: int | None = None,
                    only_reviewed_items: bool = True,
                    limits: EventLimits = DEFAULT_LIMITS) -> LoadedEvents:
    """Load reviews and metadata into events sorted by event time (lists, not iterators).

    Parameters
    ----------
    path
        A directory with ``*_5.json.gz`` and ``meta_*.json.gz`` files, or the
        files themselves. Files whose name starts with ``meta_`` are metadata.
    limit
        Maximum number of review rows read, counted from the start of the
        review files in name order; ``None`` reads all.
    only_reviewed_items
        Emit product-created events only for items with a loaded review. With
        ``False``, every metadata item is emitted, and items without reviews are
        created one second before the earliest loaded review.
    limits
        Schema limits; events that break them are skipped and counted.

    Returns
    -------
    LoadedEvents
        Products sorted by ``created_at_ms``, purchases sorted by ``timestamp_ms``
        (file order on equal timestamps), and the skip counts.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    files = find_files(path, patterns=("*_5.json.gz", "*_5.json", "meta_*.json.gz", "meta_*.json"))
    meta_files = [f for f in files if f.name.startswith("meta_")]
    review_files = [f for f in files if not f.name.startswith("meta_")]
    if not review_files or not meta_files:
        raise FileNotFoundError(f"need review and meta_ files, found reviews={review_files} "
                                f"meta={meta_files}; pass the category directory")

    loaded = LoadedEvents()
    first_review_ms = _read_reviews(review_files, loaded, limit=limit)
    reference_ms = min(first_review_ms.values(), default=None)
    categories = _read_metadata(meta_files, loaded, first_review_ms=first_review_ms,
                                reference_ms=reference_ms, only_reviewed_items=only_reviewed_items,
                                limits=limits)
    for event in loaded.behaviour:
        path_levels = categories.get(event["item_id"])
        event["category"] = "/".join(path_levels) if path_levels else None
    missing = {e["item_id"] for e in loaded.behaviour} - set(categories)
    if missing:
        logger.info("%d reviewed items have no usable metadata, so they get no product-created "
                    "event", len(missing))

    keep_valid(loaded, limits=limits)
    loaded.products.sort(key=lambda p: (p["created_at_ms"], p["item_id"]))
    loaded.behaviour.sort(key=lambda b: b["timestamp_ms"])  # stable: file order on ties
    logger.info("loaded %s products=%d behaviour=%d skipped=%s", DATASET, len(loaded.products),
                len(loaded.behaviour), loaded.skipped)
    return loaded


def _read_reviews(files: list[Path], loaded: LoadedEvents, *, limit: int | None) -> dict[str, int]:
    """Append one purchase per review row; return each item's first review time (ms)."""
    first_review_ms: dict[str, int] = {}
    rows = 0
    for path in files:
        for line_number, line in numbered_lines(path):
            if limit is not None and rows >= limit:
                return first_review_ms
            rows += 1
            try:
                row = orjson.loads(line)
                user_id, item_id, seconds = row["reviewerID"], row["asin"], row["unixReviewTime"]
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                loaded.skip("malformed_review")
                logger.warning("skipped malformed review %s line %d: %r", path.name, line_number, exc)
                continue
            if not (isinstance(user_id, str) and isinstance(item_id, str) and type(seconds) is int):
                loaded.skip("malformed_review")
                logger.warning("skipped review %s line %d: reviewerID, asin or unixReviewTime has "
                               "the wrong type", path.name, line_number)
                continue
            timestamp_ms = seconds * 1000
            loaded.behaviour.append({
                "event_id": stable_event_id(DATASET, path.name, line_number, line),
                "user_id": user_id,
                "item_id": item_id,
                "event_type": "purchase",
                "timestamp_ms": timestamp_ms,
                "weight": None,
                "category": None,
            })
            first_review_ms[item_id] = min(first_review_ms.get(item_id, timestamp_ms), timestamp_ms)
    return first_review_ms


def _read_metadata(files: list[Path], loaded: LoadedEvents, *, first_review_ms: dict[str, int],
                   reference_ms: int | None, only_reviewed_items: bool,
                   limits: EventLimits) -> dict[str, list[str]]:
    """Append product-created events; return each emitted item's category path."""
    categories: dict[str, list[str]] = {}
    for path in files:
        for line_number, line in numbered_lines(path):
            try:
                row = orjson.loads(line)
                item_id = row["asin"]
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                loaded.skip("malformed_metadata")
                logger.warning("skipped malformed metadata %s line %d: %r", path.name, line_number, exc)
                continue
            if item_id in categories:
                loaded.skip("duplicate_metadata")
                continue
            if item_id in first_review_ms:
                created_at_ms = first_review_ms[item_id] - 1000
            elif only_reviewed_items:
                continue
            elif reference_ms is not None:
                created_at_ms = reference_ms - 1000
            else:
                loaded.skip("unreviewed_item_without_reference_time")
                continue
            product = listing_from_metadata(row, limits=limits)
            if product is None:
                loaded.skip("metadata_without_title")
                continue
            event_id = stable_event_id(DATASET, path.name, line_number, line)
            product = {"event_id": event_id, **product, "created_at_ms": created_at_ms}
            loaded.products.append(product)
            categories[item_id] = product["category"]
    return categories


def listing_from_metadata(row: dict[str, Any], *,
                          limits: EventLimits = DEFAULT_LIMITS) -> dict[str, Any] | None:
    """Map one metadata row to a listing dict without ``event_id`` and ``created_at_ms``.

    Returns ``None`` when the row has no usable title. A title or description
    longer than the schema limit is cut to it.
    """
    title = clean_line(row.get("title"))
    if not title:
        return None
    description_parts = row.get("description") or []
    if isinstance(description_parts, str):
        description_parts = [description_parts]
    description = "\n".join(filter(None, (clean_html(part) for part in description_parts
                                          if isinstance(part, str))))
    if len(description) > limits.max_description_chars:
        # NOTE: long descriptions are cut at the schema limit, not at a sentence end.
        description = description[:limits.max_description_chars].rstrip()
    price = parse_price(row.get("price"))
    return {
        "item_id": row["asin"],
        "title": title[:limits.max_title_chars],
        "brand": clean_line(row.get("brand")) or None,
        "category": clean_category(row.get("category"), max_depth=limits.max_category_depth),
        "attributes": clean_details(row.get("details"), max_attributes=limits.max_attributes,
                                    max_value_chars=limits.max_attribute_value_chars),
        "price": price,
        "currency": "USD" if price is not None else None,
        "description": description or None,
        "review_count": 0,
        "language": "en",
    }


def clean_html(text: str) -> str:
    """Strip tags, unescape entities and normalise whitespace; keeps line breaks."""
    text = _TAG.sub(" ", _BREAK_TAG.sub("\n", text))
    text = _CONTROL.sub(" ", html.unescape(text))
    lines = (_SPACES.sub(" ", line).strip() for line in text.replace("\r", "\n").split("\n"))
    return "\n".join(line for line in lines if line)


def clean_line(value: Any) -> str:
    """Return ``value`` as one clean line of text, or ``""`` if it is not a string."""
    if not isinstance(value, str):
        return ""
    return " ".join(clean_html(value).split())


def parse_price(value: Any) -> float | None:
    """Parse ``"$1,250.00"`` to ``1250.0``; ranges, empty strings and page debris give ``None``."""
    if not isinstance(value, str):
        return None
    match = _PRICE.fullmatch(value.strip())
    return float(match.group(1).replace(",", "")) if match else None


def clean_category(levels: Any, *, max_depth: int = DEFAULT_LIMITS.max_category_depth) -> list[str]:
    """Clean a category path: drop repeated levels and stop at scraped debris.

    In the 2018 metadata, feature bullets and HTML fragments sometimes follow the
    real path, so the path ends at the first level that contains markup, ends
    with a full stop or is longer than 60 characters.
    """
    path: list[str] = []
    for level in levels if isinstance(levels, list) else []:
        if not isinstance(level, str) or "<" in level or ">" in level:
            break
        text = clean_line(level)
        if text.endswith(".") or len(text) > _MAX_CATEGORY_LEVEL_CHARS:
            break
        if text and text not in path:
            path.append(text)
    return path[:max_depth]


def clean_details(details: Any, *, max_attributes: int = DEFAULT_LIMITS.max_attributes,
                  max_value_chars: int = DEFAULT_LIMITS.max_attribute_value_chars) -> dict[str, str]:
    """Map the ``details`` dict to attributes with snake_case keys, without the ASIN."""
    attributes: dict[str, str] = {}
    for key, value in details.items() if isinstance(details, dict) else ():
        name = re.sub(r"[^0-9a-z]+", "_", clean_line(key).lower()).strip("_")
        text = clean_line(value).rstrip(" (")
        if not name or name == "asin" or not text or len(text) > max_value_chars:
            continue
        attributes[name] = text
        if len(attributes) == max_attributes:
            break
    return attributes
