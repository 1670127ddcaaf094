"""Process-local state shared by the agents of one worker."""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from models.recommender import IncrementalRecommender
from streams.enrichment import Enricher

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class WorkerState:
    """Models and executors of one worker process.

    Each model has a single-thread executor: generation and recommender
    updates run off the event loop, and calls on one model never overlap.

    NOTE: interaction counts and the recommender live in this process only.
    With several workers each one learns from the partitions it owns; a shared
    model needs snapshots or a table, which this state does not have yet.
    """

    enricher: Enricher
    recommender: IncrementalRecommender
    interactions: Counter = field(default_factory=Counter)
    generation_executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="generator"))
    recommender_executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="recommender"))

    def close(self) -> None:
        self.generation_executor.shutdown(wait=False, cancel_futures=True)
        self.recommender_executor.shutdown(wait=False, cancel_futures=True)
