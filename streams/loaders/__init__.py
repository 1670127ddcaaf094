"""Loaders that turn public e-commerce datasets into shopsynth input events.

Each loader reads whole files into lists (not iterators), because the events
must be sorted by event time and the source files are not. Every event a loader
returns has passed :mod:`streams.schemas`; rows that fail are skipped and
counted in :attr:`LoadedEvents.skipped`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, TextIO

import orjson

from streams.schemas import (DEFAULT_LIMITS, EventLimits, InvalidEvent, parse_product_created,
                             parse_user_behaviour)

logger = logging.getLogger(__name__)

PRODUCT_CREATED = "product-created"
USER_BEHAVIOUR = "user-behaviour"
LOGGED_SKIPS = 5  # rows logged in full per skip reason


@dataclass(kw_only=True)
class LoadedEvents:
    """Events from one dataset, each list sorted by event time.

    ``skipped`` maps a reason (for example ``"malformed_row"``) to the number
    of source rows dropped for it.
    """

    products: list[dict] = field(default_factory=list)  # product-created events
    behaviour: list[dict] = field(default_factory=list)  # user-behaviour events
    skipped: dict[str, int] = field(default_factory=dict)

    def events(self) -> list[tuple[str, str, dict]]:
        """Return ``(topic, key, event)`` for both topics merged in event-time order.

        On equal timestamps a product comes before behaviour, so a product is
        created before the first event on it.
        """
        tagged = [(p["created_at_ms"], 0, PRODUCT_CREATED, p["item_id"], p) for p in self.products]
        tagged += [(b["timestamp_ms"], 1, USER_BEHAVIOUR, b["user_id"], b) for b in self.behaviour]
        tagged.sort(key=lambda row: (row[0], row[1]))
        return [(topic, key, event) for _, _, topic, key, event in tagged]

    def __iter__(self) -> Iterator[list[dict]]:
        """Unpack as ``products, behaviour = loaded``."""
        return iter((self.products, self.behaviour))

    def skip(self, reason: str, count: int = 1) -> None:
        """Count ``count`` source rows dropped for ``reason``."""
        self.skipped[reason] = self.skipped.get(reason, 0) + count


def stable_event_id(dataset: str, source_name: str, line_number: int, line: str) -> str:
    """Return an event id that depends only on the source row and its position.

    The line number keeps exact duplicate rows apart.
    """
    digest = hashlib.sha1(f"{source_name}:{line_number}:{line}".encode("utf-8")).hexdigest()
    return f"{dataset}-{digest[:24]}"


def find_files(path: str | Path | Iterable[str | Path], *, patterns: tuple[str, ...]) -> list[Path]:
    """Return the files that ``path`` names, sorted by name.

    ``path`` is a directory (searched, not recursively, for ``patterns``), one
    file, or several files.
    """
    paths = [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
    files: list[Path] = []
    for candidate in paths:
        if candidate.is_dir():
            matched = sorted({f for pattern in patterns for f in candidate.glob(pattern)})
            if not matched:
                raise FileNotFoundError(f"no file matching {list(patterns)} in {candidate}")
            files.extend(matched)
        elif candidate.is_file():
            files.append(candidate)
        else:
            raise FileNotFoundError(f"{candidate} is neither a file nor a directory")
    return files


def open_text(path: Path) -> TextIO:
    """Open a text file for reading, decompressing it when the name ends in ``.gz``."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` with line numbers from 1 and line ends removed."""
    with open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            yield line_number, line.rstrip("\r\n")


def keep_valid(loaded: LoadedEvents, *, limits: EventLimits = DEFAULT_LIMITS) -> None:
    """Drop the events that fail the schema parsers, counting them per invalid field.

    The check runs on the serialized bytes, exactly as a consumer would parse them.
    """
    for name, events, parse in (("product", loaded.products, parse_product_created),
                                ("behaviour", loaded.behaviour, parse_user_behaviour)):
        valid = []
        for event in events:
            try:
                parse(orjson.dumps(event), limits=limits)
            except InvalidEvent as exc:
                reason = f"invalid_{name}:{exc.field or 'payload'}"
                loaded.skip(reason)
                # Log the first few in full; the summary line of each loader counts the rest.
                level = logging.WARNING if loaded.skipped[reason] <= LOGGED_SKIPS else logging.DEBUG
                logger.log(level, "skipped invalid %s event_id=%s item_id=%s: %s", name,
                           event.get("event_id"), event.get("item_id"), exc)
                continue
            valid.append(event)
        events[:] = valid
