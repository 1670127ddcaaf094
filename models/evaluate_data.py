"""Datasets for the cold-start experiment: item metadata and text plus user sequences.

Two on-disk formats are read, each from a directory:

LC-Rec / TIGER format (Amazon 2014 Office Products 5-core with descriptions)
    ``<name>.item.json.gz`` (``{"<item_id>": {"title", "description", "brand",
    "categories"}}``, categories comma-joined) and ``<name>.inter.json.gz``
    (``{"<user_id>": [item_id, ...]}`` in time order).
S3-Rec format (Amazon 2014 Beauty)
    ``<name>.txt`` (one user per line: ``user_id item_id item_id ...``),
    ``<name>_datamaps_p5.json.gz`` (``id2item``: item id to ASIN) and
    ``<name>_items_meta.tsv`` (RecBole atomic item file keyed by ASIN with title,
    categories, price and brand). It has no descriptions, so the title is the
    item text and the metadata is brand, categories and price.
"""

from __future__ import annotations

import ast
import csv
import gzip
import html
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# Dataset directory names under $SHOPSYNTH_DATA_DIR for the named datasets.
NAMED_DATASETS = {
    "office": "amazon2014_office_products_5core_text",
    "beauty": "s3rec_amazon_beauty_toys",
}


@dataclass(kw_only=True)
class Dataset:
    """Items and interaction sequences of one dataset.

    Attributes
    ----------
    name : str
    listings : dict
        item_id to a listing dict (``title``, ``brand``, ``category``, ``price``,
        ``currency``, ``language``) without the item text.
    texts : dict
        item_id to the real item text (description, or title where the dataset
        has no description); items without text are absent.
    text_field : {"description", "title"}
        Which listing field ``texts`` holds.
    sequences : dict
        user_id to item ids in time order.
    """

    name: str
    listings: dict[str, dict]
    texts: dict[str, str]
    text_field: str
    sequences: dict[str, list[str]]

    @property
    def n_interactions(self) -> int:
        return sum(len(items) for items in self.sequences.values())


def resolve_dataset_dir(name_or_path: str) -> Path:
    """Map ``office``/``beauty`` to their directory under ``$SHOPSYNTH_DATA_DIR``; pass a path through."""
    if name_or_path in NAMED_DATASETS:
        data_dir = os.environ.get("SHOPSYNTH_DATA_DIR")
        if not data_dir:
            raise ValueError(f"dataset {name_or_path!r} needs SHOPSYNTH_DATA_DIR to be set "
                             "to the folder that contains the datasets, or pass a dataset path")
        return Path(data_dir) / NAMED_DATASETS[name_or_path]
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise ValueError(f"dataset {name_or_path!r} is neither {sorted(NAMED_DATASETS)} nor a directory")
    return path


def load_dataset(name_or_path: str, *, s3rec_name: str = "Beauty") -> Dataset:
    """Load a dataset directory in LC-Rec or S3-Rec format (detected from its files).

    Parameters
    ----------
    name_or_path : str
        ``"office"``, ``"beauty"`` or a directory path.
    s3rec_name : str, default "Beauty"
        File name stem of an S3-Rec directory (``<stem>.txt`` and so on).

    Raises
    ------
    ValueError
        When the directory matches neither format.
    """
    directory = resolve_dataset_dir(name_or_path)
    item_files = sorted(directory.glob("*.item.json.gz"))
    if item_files:
        return _load_lcrec(directory, item_files[0])
    if (directory / f"{s3rec_name}.txt").is_file():
        return _load_s3rec(directory, s3rec_name)
    raise ValueError(f"{directory} has neither a *.item.json.gz file (LC-Rec format) nor "
                     f"{s3rec_name}.txt (S3-Rec format); pass s3rec_name for another S3-Rec stem")


def _clean(text: str | None) -> str:
    return " ".join(html.unescape(text or "").split())


def _load_lcrec(directory: Path, item_file: Path) -> Dataset:
    stem = item_file.name[: -len(".item.json.gz")]
    with gzip.open(item_file, "rt", encoding="utf-8") as handle:
        raw_items = json.load(handle)
    with gzip.open(directory / f"{stem}.inter.json.gz", "rt", encoding="utf-8") as handle:
        raw_sequences = json.load(handle)
    listings, texts = {}, {}
    for item_id, raw in raw_items.items():
        title = _clean(raw.get("title")) or f"item {item_id}"
        categories = [part.strip() for part in (raw.get("categories") or "").split(",") if part.strip()]
        listings[item_id] = {"item_id": item_id, "title": title, "brand": _clean(raw.get("brand")) or None,
                             "category": categories, "attributes": {}, "price": None, "currency": None,
                             "language": "en"}
        description = _clean(raw.get("description"))
        if description:
            texts[item_id] = description
    sequences = {user: [str(item) for item in items] for user, items in raw_sequences.items()}
    logger.info("loaded LC-Rec dataset %s: items=%d with_text=%d users=%d", stem, len(listings),
                len(texts), len(sequences))
    return Dataset(name=stem, listings=listings, texts=texts, text_field="description", sequences=sequences)


def _load_s3rec(directory: Path, stem: str) -> Dataset:
    with gzip.open(directory / f"{stem}_datamaps_p5.json.gz", "rt", encoding="utf-8") as handle:
        id2item = json.load(handle)["id2item"]
    meta = {}
    with open(directory / f"{stem}_items_meta.tsv", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [name.split(":")[0] for name in next(reader)]
        for row in reader:
            meta[row[0]] = dict(zip(header, row))
    sequences: dict[str, list[str]] = {}
    with open(directory / f"{stem}.txt", encoding="utf-8") as handle:
        for line in handle:
            parts = line.split()
            if len(parts) > 1:
                sequences[parts[0]] = parts[1:]
    listings, texts = {}, {}
    for item_id in {item for items in sequences.values() for item in items}:
        row = meta.get(id2item.get(item_id, ""), {})
        title = _clean(row.get("title"))
        try:
            categories = [str(c) for c in ast.literal_eval(f"[{row.get('categories', '')}]")]
        except (ValueError, SyntaxError):
            categories = []
        try:
            price = float(row["price"]) if row.get("price") else None
        except ValueError:
            price = None
        listings[item_id] = {"item_id": item_id, "title": title or f"item {item_id}",
                             "brand": _clean(row.get("brand")) or None, "category": categories,
                             "attributes": {}, "price": price, "currency": "USD" if price is not None else None,
                             "language": "en"}
        if title:
            texts[item_id] = title
    logger.info("loaded S3-Rec dataset %s: items=%d with_text=%d users=%d", stem, len(listings),
                len(texts), len(sequences))
    return Dataset(name=stem, listings=listings, texts=texts, text_field="title", sequences=sequences)
