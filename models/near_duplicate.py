"""Near-duplicate detection of generated texts across items.

Texts are compared by the Jaccard similarity of their character shingles
(k-grams of the NFKC-normalised, case-folded text with whitespace collapsed).
Character shingles work for English and for Chinese, which has no spaces.
Candidates come from MinHash locality-sensitive hashing (LSH), and each
candidate's similarity is then computed exactly from its stored shingle
hashes, so the decision does not depend on the MinHash estimate.

With 32 bands of 4 rows, a pair with Jaccard 0.8 becomes a candidate with
probability 1 - (1 - 0.8**4)**32 > 0.999999, and a pair with Jaccard 0.5
with probability 0.87. Thresholds below about 0.4 can miss duplicates.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from models.gate_result import CheckResult
from models.text_match import normalise

logger = logging.getLogger(__name__)

_PRIME = np.uint64(4294967291)  # largest prime below 2**32, so a * x + b fits in uint64
_BANDS = 32
_ROWS = 4
_PERMUTATION_SEED = 20240607


@dataclass(frozen=True)
class _Entry:
    item_id: str
    shingles: np.ndarray  # sorted unique uint32 shingle hashes
    band_keys: tuple[bytes, ...]


class NearDuplicateIndex:
    """Bounded index of accepted texts that finds a new text too similar to another item's text.

    Parameters
    ----------
    threshold
        Jaccard similarity in (0, 1] at or above which a text of another
        item is a near duplicate.
    capacity
        Maximum number of stored texts; adding one more evicts the oldest.
    shingle_chars
        Characters per shingle.

    The index lives in the memory of one worker process and is not saved.

    NOTE: after a restart, or in another worker of the same group, the index
    starts empty, so a replay or a redelivery can accept a text that the
    first run rejected as a near duplicate. Generated text is then no longer
    identical between a run and its replay.
    """

    def __init__(self, *, threshold: float = 0.8, capacity: int = 10_000, shingle_chars: int = 5) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold!r}; "
                             f"set SHOPSYNTH_NEAR_DUPLICATE_THRESHOLD to a value such as 0.8")
        if capacity < 1:
            raise ValueError(f"near-duplicate capacity must be >= 1, got {capacity!r}; "
                             f"set SHOPSYNTH_NEAR_DUPLICATE_CAPACITY to a positive number of texts")
        if shingle_chars < 1:
            raise ValueError(f"shingle_chars must be >= 1, got {shingle_chars!r}")
        self.threshold = threshold
        self.capacity = capacity
        self.shingle_chars = shingle_chars
        rng = np.random.default_rng(_PERMUTATION_SEED)
        self._a = rng.integers(1, int(_PRIME), size=_BANDS * _ROWS, dtype=np.uint64)
        self._b = rng.integers(0, int(_PRIME), size=_BANDS * _ROWS, dtype=np.uint64)
        # (item_id, digest of the normalised text) -> entry, oldest first
        self._entries: OrderedDict[tuple[str, bytes], _Entry] = OrderedDict()
        self._buckets: dict[tuple[int, bytes], set[tuple[str, bytes]]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, text: str, *, item_id: str) -> None:
        """Store ``text`` of ``item_id``, evicting the oldest text when the index is full."""
        normalised = normalise(text)
        shingles = self._shingles(normalised)
        if shingles.size == 0:
            return
        key = (str(item_id), hashlib.blake2b(normalised.encode("utf-8"), digest_size=16).digest())
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return
            entry = _Entry(item_id=str(item_id), shingles=shingles, band_keys=self._band_keys(shingles))
            self._entries[key] = entry
            for band, band_key in enumerate(entry.band_keys):
                self._buckets.setdefault((band, band_key), set()).add(key)
            while len(self._entries) > self.capacity:
                self._evict_oldest()

    def check(self, text: str, item_id: str) -> CheckResult:
        """Fail when a stored text of another item has Jaccard similarity >= the threshold.

        Score: the highest similarity to a stored text of another item (0.0
        when there is none).
        """
        shingles = self._shingles(normalise(text))
        if shingles.size == 0:
            return CheckResult(True, 0.0, "no text to compare")
        best_similarity, best_item = 0.0, None
        with self._lock:
            candidates = set()
            for band, band_key in enumerate(self._band_keys(shingles)):
                candidates |= self._buckets.get((band, band_key), set())
            for key in candidates:
                entry = self._entries[key]
                if entry.item_id == str(item_id):
                    continue
                similarity = _jaccard(shingles, entry.shingles)
                if similarity > best_similarity:
                    best_similarity, best_item = similarity, entry.item_id
        if best_item is not None and best_similarity >= self.threshold:
            return CheckResult(False, best_similarity, f"Jaccard similarity {best_similarity:.2f} with the text "
                                                       f"of item {best_item!r}, threshold {self.threshold}")
        return CheckResult(True, best_similarity, f"max Jaccard similarity to other items "
                                                  f"{best_similarity:.2f}, threshold {self.threshold}")

    def _evict_oldest(self) -> None:
        key, entry = self._entries.popitem(last=False)
        for band, band_key in enumerate(entry.band_keys):
            bucket = self._buckets.get((band, band_key))
            if bucket is not None:
                bucket.discard(key)
                if not bucket:
                    del self._buckets[(band, band_key)]

    def _shingles(self, normalised: str) -> np.ndarray:
        if not normalised:
            return np.empty(0, dtype=np.uint32)
        k = self.shingle_chars
        grams = {normalised[i:i + k] for i in range(max(1, len(normalised) - k + 1))}
        hashes = np.fromiter((zlib.crc32(gram.encode("utf-8")) for gram in grams), dtype=np.uint64,
                             count=len(grams))
        return np.unique(hashes.astype(np.uint32))

    def _band_keys(self, shingles: np.ndarray) -> tuple[bytes, ...]:
        values = shingles.astype(np.uint64) % _PRIME
        # One row per permutation; (a * x + b) < 2**64 because a, b < 2**32 and x < 2**32.
        signature = ((self._a[:, None] * values[None, :] + self._b[:, None]) % _PRIME).min(axis=1)
        rows = signature.astype(np.uint32).reshape(_BANDS, _ROWS)
        return tuple(row.tobytes() for row in rows)


def _jaccard(left: np.ndarray, right: np.ndarray) -> float:
    shared = np.intersect1d(left, right, assume_unique=True).size
    return shared / (left.size + right.size - shared)
