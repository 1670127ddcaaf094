"""Real fine-tuning corpora for the generator, in English and Chinese, as :class:`TextExample` lists.

Sources, each under the dataset root (``$SHOPSYNTH_DATA_DIR`` or ``--data-dir``):

* English descriptions: the Myntra catalogue, Amazon 2018 item metadata
  (``meta_*.json.gz``) and Amazon 2014 Office Products item texts.
* English reviews: Amazon 2018 Gift Cards 5-core reviews with star ratings,
  joined with their item metadata for the title.
* Chinese descriptions: AdvertiseGen (Taobao apparel attribute sets and copy).
* Chinese reviews: online_shopping_10_cats (category, polarity label, review).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import logging
import os
from pathlib import Path

from models.text_prep import (
    TextExample,
    normalise_text,
    prepare_examples,
    sentiment_from_classifier,
    sentiment_from_rating,
)
from models.training_data import load_amazon2018_pairs, load_myntra_pairs, read_amazon2018_listings

logger = logging.getLogger(__name__)

# Folder names under the dataset root.
MYNTRA_DIR = "myntra_fashion_catalog"
GIFT_CARDS_DIR = "amazon2018_gift_cards_5core"
OFFICE_DIR = "amazon2014_office_products_5core_text"
ADVERTISEGEN_DIR = "advertisegen_taobao_fashion_copy"
ONLINE_SHOPPING_DIR = "chinese_online_shopping_10_cats"

# AdvertiseGen masks brand names as "BRAND" and rare words as "<UNK>" upstream.
ADVERTISEGEN_BRAND_MASK = "BRAND"
ADVERTISEGEN_UNKNOWN = "<UNK>"
ADVERTISEGEN_TYPE_KEY = "类型"
ADVERTISEGEN_ROOT_CATEGORY = "服装"


def resolve_data_dir(data_dir: Path | str | None = None) -> Path:
    """Return the dataset root: ``data_dir`` or ``$SHOPSYNTH_DATA_DIR``.

    Raises
    ------
    ValueError
        If neither is set, or the folder does not exist.
    """
    value = data_dir or os.environ.get("SHOPSYNTH_DATA_DIR")
    if not value:
        raise ValueError("no dataset root: pass --data-dir or set SHOPSYNTH_DATA_DIR")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ValueError(f"dataset root {path} is not a directory; pass --data-dir or fix SHOPSYNTH_DATA_DIR")
    return path


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; check the dataset root (--data-dir or SHOPSYNTH_DATA_DIR)")
    return path


def _listing_examples(pairs: list[tuple[dict, str]], *, source: str) -> list[TextExample]:
    return [
        TextExample(task="description", language="en", item_id=f"{source}-{listing['item_id']}",
                    listing=listing, target=description, source=source)
        for listing, description in pairs
    ]


def read_office_descriptions(item_path: Path, *, limit: int | None = None) -> list[TextExample]:
    """Read English descriptions from the Amazon 2014 Office Products ``Office.item.json.gz``.

    The file is one JSON object keyed by item id, each with ``title``,
    ``description``, ``brand`` and a comma-joined ``categories`` path.
    """
    with _open_text(_require(item_path)) as handle:
        items = json.load(handle)
    examples: list[TextExample] = []
    for item_id, item in items.items():
        title = normalise_text(item.get("title"))
        description = normalise_text(item.get("description"))
        if not title or not description:
            continue
        listing = _english_listing(
            item_id=f"office-{item_id}", title=title, brand=normalise_text(item.get("brand")) or None,
            category=[part.strip() for part in (item.get("categories") or "").split(",") if part.strip()],
        )
        examples.append(TextExample(task="description", language="en", item_id=listing["item_id"],
                                    listing=listing, target=description, source="office2014"))
        if limit is not None and len(examples) >= limit:
            break
    return examples


def read_amazon_reviews(reviews_path: Path, meta_path: Path, *, limit: int | None = None) -> list[TextExample]:
    """Read English reviews with star ratings from an Amazon 2018 5-core file and its metadata.

    Reviews repeated across product variants (same reviewer, item and time) are
    read once. Items without a title in the metadata are skipped.
    """
    listings = read_amazon2018_listings(_require(meta_path))
    seen: set[tuple[str, str, int]] = set()
    examples: list[TextExample] = []
    with _open_text(_require(reviews_path)) as handle:
        for line in handle:
            if not line.strip():
                continue
            record = json.loads(line)
            key = (str(record.get("reviewerID")), str(record.get("asin")), int(record.get("unixReviewTime") or 0))
            listing = listings.get(key[1])
            if key in seen or listing is None or record.get("overall") is None:
                continue
            seen.add(key)
            rating = int(round(float(record["overall"])))
            examples.append(TextExample(
                task="review", language="en", item_id=f"amazon2018-{key[1]}", listing=listing,
                target=str(record.get("reviewText") or ""), rating=rating,
                sentiment=sentiment_from_rating(rating), source="amazon2018-reviews",
            ))
            if limit is not None and len(examples) >= limit:
                break
    return examples


def parse_advertisegen_content(content: str) -> dict[str, list[str]]:
    """Parse an AdvertiseGen attribute string ``key#value*key#value`` into key -> values (in order)."""
    attributes: dict[str, list[str]] = {}
    for part in content.split("*"):
        key, separator, value = part.partition("#")
        key, value = key.strip(), value.strip()
        if not separator or not key or not value:
            continue
        values = attributes.setdefault(key, [])
        if value not in values:
            values.append(value)
    return attributes


def advertisegen_listing(content: str, *, item_id: str) -> dict:
    """Build a Chinese listing from an AdvertiseGen attribute string.

    AdvertiseGen has no titles, so the title joins the attribute values (type
    last), as Taobao titles do. The category path is ``服装 > <type>``.
    """
    attributes = parse_advertisegen_content(content)
    types = attributes.pop(ADVERTISEGEN_TYPE_KEY, [])
    values = [value for values in attributes.values() for value in values]
    title = "".join(dict.fromkeys(values))
    if types and types[0] not in title:
        title += types[0]
    return {
        "event_id": f"advertisegen-{item_id}",
        "item_id": item_id,
        "title": title[:60] or ADVERTISEGEN_ROOT_CATEGORY,
        "brand": None,
        "category": [ADVERTISEGEN_ROOT_CATEGORY] + types[:1],
        "attributes": {key: "、".join(values) for key, values in attributes.items()},
        "price": None,
        "currency": None,
        "description": None,
        "review_count": 0,
        "language": "zh",
        "created_at_ms": 0,
    }


def read_advertisegen(path: Path, *, limit: int | None = None) -> list[TextExample]:
    """Read Chinese (attribute set, copy) pairs from an AdvertiseGen JSON-lines file.

    Copies with the upstream ``<UNK>`` mask are dropped; the ``BRAND`` mask is
    removed. Pairs with the same attribute set share an item id, so a split by
    item keeps them on one side.
    """
    examples: list[TextExample] = []
    dropped_unknown = 0
    with _open_text(_require(path)) as handle:
        for line in handle:
            if not line.strip():
                continue
            record = json.loads(line)
            content, summary = str(record.get("content") or ""), str(record.get("summary") or "")
            if ADVERTISEGEN_UNKNOWN in summary:
                dropped_unknown += 1
                continue
            item_id = "advertisegen-" + hashlib.sha256(content.encode("utf-8")).hexdigest()[:16]
            examples.append(TextExample(
                task="description", language="zh", item_id=item_id,
                listing=advertisegen_listing(content, item_id=item_id),
                target=summary.replace(ADVERTISEGEN_BRAND_MASK, ""), source="advertisegen",
            ))
            if limit is not None and len(examples) >= limit:
                break
    logger.info("read %d AdvertiseGen pairs from %s (dropped %d with <UNK>)", len(examples), path, dropped_unknown)
    return examples


def read_online_shopping_reviews(path: Path, *, limit: int | None = None) -> list[TextExample]:
    """Read Chinese reviews with polarity from ``online_shopping_10_cats.csv.gz``.

    The file has no item ids or titles: the listing is the category name, and
    every review is its own item for the split. A row without a 0/1 label gets
    its sentiment from SnowNLP. The file is sorted by category, so with a
    ``limit`` the reviews are taken in turn from each (category, sentiment) group.
    """
    examples: list[TextExample] = []
    with _open_text(_require(path)) as handle:
        for row in csv.DictReader(handle):
            category = normalise_text(row.get("cat"))
            review = str(row.get("review") or "")
            if not category or not review.strip():
                continue
            label = (row.get("label") or "").strip()
            sentiment = {"1": "positive", "0": "negative"}.get(label) or sentiment_from_classifier(review)
            item_id = "online-shopping-" + hashlib.sha256(review.encode("utf-8")).hexdigest()[:16]
            listing = {
                "event_id": item_id, "item_id": item_id, "title": category, "brand": None,
                "category": [category], "attributes": {}, "price": None, "currency": None,
                "description": None, "review_count": 0, "language": "zh", "created_at_ms": 0,
            }
            examples.append(TextExample(task="review", language="zh", item_id=item_id, listing=listing,
                                        target=review, sentiment=sentiment, source="online-shopping"))
    return _take_in_turn(examples, key=lambda example: (example.listing["title"], example.sentiment), limit=limit)


def _take_in_turn(examples: list[TextExample], *, key, limit: int | None) -> list[TextExample]:
    """Take examples round-robin from the groups of ``key``, in file order inside each group."""
    if limit is None or len(examples) <= limit:
        return examples
    groups: dict[object, list[TextExample]] = {}
    for example in examples:
        groups.setdefault(key(example), []).append(example)
    taken: list[TextExample] = []
    for index in range(max(len(group) for group in groups.values())):
        for group in groups.values():
            if index < len(group):
                taken.append(group[index])
                if len(taken) >= limit:
                    return taken
    return taken


def load_corpus(
    language: str, *, data_dir: Path | str | None = None, tasks: tuple[str, ...] = ("description", "review"),
    limit_per_source: int | None = 2000,
) -> list[TextExample]:
    """Read, normalise and filter every source of ``language`` for the given tasks.

    Parameters
    ----------
    language : str
        ``"en"`` or ``"zh"``.
    data_dir : Path, str or None
        Dataset root; see :func:`resolve_data_dir`.
    tasks : tuple of str
        Any of ``"description"`` and ``"review"``.
    limit_per_source : int or None
        Maximum raw examples read from each source file, in file order.
    """
    root = resolve_data_dir(data_dir)
    readers = {
        ("en", "description"): [
            lambda: _listing_examples(load_myntra_pairs(
                _require(root / MYNTRA_DIR / "myntra_products_catalog.csv.gz"), limit=limit_per_source),
                source="myntra"),
            lambda: _listing_examples(load_amazon2018_pairs(
                _require(root / GIFT_CARDS_DIR / "meta_Gift_Cards.json.gz"), limit=limit_per_source),
                source="amazon2018"),
            lambda: read_office_descriptions(root / OFFICE_DIR / "Office.item.json.gz", limit=limit_per_source),
        ],
        ("en", "review"): [
            lambda: read_amazon_reviews(root / GIFT_CARDS_DIR / "Gift_Cards_5.json.gz",
                                        root / GIFT_CARDS_DIR / "meta_Gift_Cards.json.gz", limit=limit_per_source),
        ],
        ("zh", "description"): [
            lambda: read_advertisegen(root / ADVERTISEGEN_DIR / "train_head5000.jsonl.gz", limit=limit_per_source),
            lambda: read_advertisegen(root / ADVERTISEGEN_DIR / "dev.jsonl.gz", limit=limit_per_source),
        ],
        ("zh", "review"): [
            lambda: read_online_shopping_reviews(root / ONLINE_SHOPPING_DIR / "online_shopping_10_cats.csv.gz",
                                                 limit=limit_per_source),
        ],
    }
    examples: list[TextExample] = []
    for task in tasks:
        if (language, task) not in readers:
            raise ValueError(f"invalid language {language!r} or task {task!r}: expected en/zh and description/review")
        for read in readers[(language, task)]:
            examples.extend(prepare_examples(read(), source=f"{language} {task}"))
    return examples


def _english_listing(*, item_id: str, title: str, brand: str | None, category: list[str]) -> dict:
    return {
        "event_id": item_id, "item_id": item_id, "title": title, "brand": brand, "category": category,
        "attributes": {}, "price": None, "currency": None, "description": None, "review_count": 0,
        "language": "en", "created_at_ms": 0,
    }
