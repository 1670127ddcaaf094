"""Snapshots of a worker's recommender and counters, so a restarted worker does not start cold.

A snapshot is a directory ``snapshot-<saved_at_ms>-<model_version>/`` under the
snapshot root, with the recommender files of :mod:`models.recommender_io` and
``worker.json``::

    {"format_version": 1, "saved_at_ms": ..., "model_version": "...",
     "watermark_ms": ..., "interactions": {"<item_id>": count, ...}}

A snapshot is written into a hidden temporary directory next to the final one
and renamed into place, so a reader sees a complete snapshot or none. The newest
snapshots are kept and older ones deleted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from models import recommender_io
from models.recommender import IncrementalRecommender

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
WORKER_FILE = "worker.json"
PREFIX = "snapshot-"


@dataclass(kw_only=True)
class Snapshot:
    """A restored snapshot: the recommender and the worker counters saved with it."""

    path: Path
    recommender: IncrementalRecommender
    interactions: Counter
    watermark_ms: int
    saved_at_ms: int


def default_snapshot_dir(*, topic_prefix: str, app_id: str, cache_dir: Path | None = None) -> Path:
    """Return ``<cache dir>/snapshots/<topic_prefix><app_id>``; see ``models.base.resolve_cache_dir``."""
    from models.base import resolve_cache_dir

    name = f"{topic_prefix}{app_id}".replace(os.sep, "_") or "default"
    return resolve_cache_dir(cache_dir) / "snapshots" / name


def save_snapshot(root: Path, *, recommender: IncrementalRecommender, interactions: Counter,
                  watermark_ms: int, keep: int = 2) -> Path:
    """Write a snapshot under ``root`` atomically and delete all but the ``keep`` newest.

    Call it from the thread that updates ``recommender`` (the worker's recommender
    executor), so no update runs while the arrays are copied.

    Returns
    -------
    Path
        The snapshot directory.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    saved_at_ms = int(time.time() * 1000)
    final = root / f"{PREFIX}{saved_at_ms:015d}-{recommender.version}"
    temp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        recommender_io.save(recommender, temp)
        metadata = {
            "format_version": FORMAT_VERSION,
            "saved_at_ms": saved_at_ms,
            "model_version": recommender.version,
            "watermark_ms": int(watermark_ms),
            "interactions": dict(interactions),
        }
        (temp / WORKER_FILE).write_text(json.dumps(metadata, ensure_ascii=False), encoding="utf-8")
        if final.exists():
            # Two saves within one millisecond at the same version hold the same state.
            shutil.rmtree(temp)
        else:
            os.rename(temp, final)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    for old in list_snapshots(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    logger.info("saved snapshot path=%s model_version=%s items=%d users=%d elapsed_s=%.3f",
                final, recommender.version, recommender.n_items, recommender.n_users,
                time.perf_counter() - started)
    return final


def list_snapshots(root: Path) -> list[Path]:
    """Return the complete snapshot directories under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(path for path in root.iterdir()
                  if path.is_dir() and path.name.startswith(PREFIX) and (path / WORKER_FILE).is_file())


def load_snapshot(path: Path) -> Snapshot:
    """Read one snapshot directory written by :func:`save_snapshot`.

    Raises
    ------
    ValueError
        For an unknown ``format_version`` or inconsistent recommender files.
    FileNotFoundError
        When a file of the snapshot is missing.
    """
    path = Path(path)
    metadata = json.loads((path / WORKER_FILE).read_text(encoding="utf-8"))
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"unsupported snapshot format_version {version!r} in {path / WORKER_FILE}; "
                         f"this code reads version {FORMAT_VERSION}")
    recommender = recommender_io.load(path)
    return Snapshot(path=path, recommender=recommender,
                    interactions=Counter(metadata.get("interactions", {})),
                    watermark_ms=int(metadata.get("watermark_ms", 0)),
                    saved_at_ms=int(metadata["saved_at_ms"]))


def restore_latest(root: Path) -> Snapshot | None:
    """Load the newest readable snapshot under ``root``; None when there is none.

    A snapshot that fails to load is logged and skipped, and the next older one is tried.
    """
    for path in reversed(list_snapshots(root)):
        try:
            snapshot = load_snapshot(path)
        except (OSError, ValueError, KeyError) as exc:
            logger.error("skipping unreadable snapshot path=%s error=%s: %s", path, type(exc).__name__, exc)
            continue
        logger.info("restored snapshot path=%s model_version=%s items=%d users=%d",
                    path, snapshot.recommender.version, snapshot.recommender.n_items,
                    snapshot.recommender.n_users)
        return snapshot
    logger.info("no snapshot under %s; starting with an empty recommender", root)
    return None
