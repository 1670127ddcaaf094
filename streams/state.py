"""Process-local state shared by the agents of one worker."""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from models.recommender import IncrementalRecommender
from streams import snapshots
from streams.enrichment import Enricher

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class WorkerState:
    """Models and executors of one worker process.

    Each model has a single-thread executor: generation and recommender
    updates run off the event loop, and calls on one model never overlap.
    Snapshots run on the recommender executor for the same reason.

    NOTE: interaction counts and the recommender live in this process only.
    With several workers each one learns from the partitions it owns and
    snapshots its own model; nothing merges the models of several workers.
    """

    enricher: Enricher
    recommender: IncrementalRecommender
    interactions: Counter = field(default_factory=Counter)
    # Newest behaviour event time seen (epoch ms); the reference of time decay.
    watermark_ms: int = 0
    snapshot_dir: Path | None = None
    snapshots_kept: int = 2
    generation_executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="generator"))
    recommender_executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="recommender"))
    # record_version of the newest product-created event per item, so that a
    # retry does not overwrite a newer listing. NOTE: memory only; after a
    # restart a late retry can still publish over a newer listing.
    listing_versions: dict[str, str] = field(default_factory=dict)
    # A generation call that timed out and still occupies the generator thread.
    stuck_generation: Future | None = None
    _saved_marker: tuple | None = field(default=None, repr=False)

    def restore(self, snapshot: snapshots.Snapshot) -> None:
        """Replace the recommender and counters with those of a restored snapshot."""
        self.recommender = snapshot.recommender
        self.interactions = snapshot.interactions
        self.watermark_ms = snapshot.watermark_ms
        self._saved_marker = self._marker()

    def _marker(self) -> tuple:
        return (self.recommender.version, self.recommender.n_items, self.recommender.n_users,
                self.recommender.n_features)

    def save_snapshot(self, *, force: bool = False) -> Path | None:
        """Write a snapshot when the model changed since the last one; run it on the recommender executor.

        Returns the snapshot directory, or None when snapshots are off or nothing changed.
        """
        if self.snapshot_dir is None:
            return None
        marker = self._marker()
        if not force and marker == self._saved_marker:
            logger.debug("snapshot skipped: model_version=%s unchanged", self.recommender.version)
            return None
        path = snapshots.save_snapshot(self.snapshot_dir, recommender=self.recommender,
                                       interactions=self.interactions, watermark_ms=self.watermark_ms,
                                       keep=self.snapshots_kept)
        self._saved_marker = marker
        return path

    def close(self, *, snapshot_timeout_s: float = 60.0) -> None:
        """Save a last snapshot (after any update still queued), then stop the executors."""
        self.generation_executor.shutdown(wait=False, cancel_futures=True)
        if self.snapshot_dir is not None:
            try:
                self.recommender_executor.submit(self.save_snapshot).result(timeout=snapshot_timeout_s)
            except Exception as exc:  # shutdown goes on without the snapshot
                logger.error("final snapshot failed dir=%s error=%s: %s", self.snapshot_dir,
                             type(exc).__name__, exc)
        self.recommender_executor.shutdown(wait=False, cancel_futures=True)
