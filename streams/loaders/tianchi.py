"""Tianchi (Taobao) UserBehavior CSV to user-behaviour events.

Input rows have no header: ``user_id,item_id,category_id,behavior_type,timestamp``
with integer ids, a behaviour of ``pv``, ``cart``, ``fav`` or ``buy``, and the
timestamp in Unix seconds. The official file is grouped by user, not sorted by
time. The dataset has no titles or attributes, so no product-created events
are produced; the category id goes into the event's ``category``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from streams.loaders import (LOGGED_SKIPS, LoadedEvents, find_files, keep_valid, numbered_lines,
                             stable_event_id)
from streams.schemas import DEFAULT_LIMITS, EventLimits

logger = logging.getLogger(__name__)

DATASET = "tianchi"
BEHAVIOUR_TYPES = {"pv": "view", "cart": "cart", "fav": "favourite", "buy": "purchase"}
# 2017-11-25T00:00:00+08:00, the documented start of the dataset (China Standard Time).
DATASET_START_S = 1_511_539_200


def load_tianchi_behaviour(path: str | Path | Iterable[str | Path], *, limit: int | None = None,
                           min_timestamp_s: int | None = DATASET_START_S,
                           max_timestamp_s: int | None = None,
                           limits: EventLimits = DEFAULT_LIMITS) -> LoadedEvents:
    """Load UserBehavior rows into user-behaviour events sorted by time (a list, not an iterator).

    Parameters
    ----------
    path
        A directory with ``*.csv`` or ``*.csv.gz`` files, or the files themselves.
    limit
        Maximum number of rows read, counted from the start of the files in name
        order and including skipped rows; ``None`` reads all. The official file
        is grouped by user, so a limit keeps whole histories of the first users.
    min_timestamp_s, max_timestamp_s
        Rows outside ``[min_timestamp_s, max_timestamp_s]`` (Unix seconds) are
        skipped and counted; ``None`` disables a bound. The default drops the
        rows dated before the dataset's documented start.
    limits
        Schema limits; events that break them are skipped and counted.

    Returns
    -------
    LoadedEvents
        ``behaviour`` sorted by ``timestamp_ms`` (file order on equal
        timestamps), no products, and the counts of skipped rows per reason:
        ``malformed_row``, ``unknown_behavior_type``, ``before_min_timestamp``,
        ``after_max_timestamp`` and ``invalid_behaviour:<field>``.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    files = find_files(path, patterns=("*.csv", "*.csv.gz"))
    loaded = LoadedEvents()
    rows = 0
    progress = tqdm(desc="tianchi rows", unit="row", total=limit, disable=None)
    try:
        for source in files:
            if limit is not None and rows >= limit:
                break
            for line_number, line in numbered_lines(source):
                if limit is not None and rows >= limit:
                    break
                rows += 1
                progress.update()
                event = _behaviour_event(source, line_number, line, loaded,
                                         min_timestamp_s=min_timestamp_s,
                                         max_timestamp_s=max_timestamp_s)
                if event is not None:
                    loaded.behaviour.append(event)
    finally:
        progress.close()

    keep_valid(loaded, limits=limits)
    loaded.behaviour.sort(key=lambda event: event["timestamp_ms"])  # stable: file order on ties
    logger.info("loaded %s rows=%d behaviour=%d skipped=%s", DATASET, rows, len(loaded.behaviour),
                loaded.skipped)
    return loaded


def _behaviour_event(source: Path, line_number: int, line: str, loaded: LoadedEvents, *,
                     min_timestamp_s: int | None, max_timestamp_s: int | None) -> dict | None:
    """Map one CSV row to an event, or count why it is skipped and return ``None``."""
    fields = [field.strip() for field in line.split(",")]
    try:
        if len(fields) != 5:
            raise ValueError(f"expected 5 columns, got {len(fields)}")
        user_id, item_id, category_id, behavior_type, timestamp_text = fields
        for name, value in (("user_id", user_id), ("item_id", item_id),
                            ("category_id", category_id)):
            if not value.isdigit():
                raise ValueError(f"{name} must be an integer, got {value!r}")
        timestamp_s = int(timestamp_text)
    except ValueError as exc:
        _skip(loaded, "malformed_row", source, line_number, str(exc))
        return None
    if behavior_type not in BEHAVIOUR_TYPES:
        _skip(loaded, "unknown_behavior_type", source, line_number,
              f"behavior_type {behavior_type!r} is not one of {list(BEHAVIOUR_TYPES)}")
        return None
    if min_timestamp_s is not None and timestamp_s < min_timestamp_s:
        _skip(loaded, "before_min_timestamp", source, line_number,
              f"timestamp {timestamp_s} < {min_timestamp_s}")
        return None
    if max_timestamp_s is not None and timestamp_s > max_timestamp_s:
        _skip(loaded, "after_max_timestamp", source, line_number,
              f"timestamp {timestamp_s} > {max_timestamp_s}")
        return None
    return {
        "event_id": stable_event_id(DATASET, source.name, line_number, line),
        "user_id": user_id,
        "item_id": item_id,
        "event_type": BEHAVIOUR_TYPES[behavior_type],
        "timestamp_ms": timestamp_s * 1000,
        "weight": None,
        "category": category_id,
    }


def _skip(loaded: LoadedEvents, reason: str, source: Path, line_number: int, detail: str) -> None:
    loaded.skip(reason)
    # Log the first few rows per reason; the summary line counts them all.
    if loaded.skipped[reason] <= LOGGED_SKIPS:
        logger.warning("skipped %s %s line %d: %s", reason, source.name, line_number, detail)
