"""Enrichment of a batch of new listings: cold-start decision, generation, gates.

This module is synchronous on purpose: the product agent runs
:meth:`Enricher.enrich_batch` in an executor thread so that generation never
blocks the event loop.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from models import quality
from models.fidelity import Lexicon
from models.near_duplicate import NearDuplicateIndex
from models.prompts import clean_generation, description_prompt, review_prompt
from models.safety import load_blocklist
from streams.cold_start import ColdStartPolicy
from streams.settings import Settings

logger = logging.getLogger(__name__)


class TextGenerator(Protocol):
    version: str

    def generate(self, prompts: list[str], *, max_new_tokens: int = 64, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0,
                 seed: int | None = None) -> list[str]: ...


@dataclass(kw_only=True)
class SourceRef:
    """Where an input event came from; it makes output keys and versions deterministic."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None
    # 0 for the first enrichment of the event, n for its n-th retry.
    attempt: int = 0

    @property
    def record_version(self) -> str:
        """``<topic>/<partition>/<offset>``, with ``/retry-<n>`` for the n-th retry."""
        version = f"{self.topic}/{self.partition}/{self.offset}"
        return f"{version}/retry-{self.attempt}" if self.attempt else version


@dataclass(kw_only=True)
class Enricher:
    """Generate missing descriptions and reviews for cold listings.

    Parameters
    ----------
    generator
        Any object with the :class:`TextGenerator` interface, or ``None`` to
        publish listings without generated text (flagged as not enriched).
    language_generators
        Generators for listings of one language (``{"zh": ...}``); a listing whose
        language has no entry goes to ``generator``.
    policy
        Decides which listings are cold and why.
    gate
        Quality and safety checks applied to every generated text.
    lexicon
        Known brands and categories for the fidelity checks. Every listing
        passed to :meth:`enrich_batch` is added before its texts are gated.
    near_duplicates
        Accepted texts, against which a new text of another item is checked.
        ``None`` turns the near-duplicate check off. It is in-process memory
        only (see :class:`~models.near_duplicate.NearDuplicateIndex`).
    max_regenerations
        How many extra sampled attempts a rejected text gets before the
        listing is published without it.
    """

    generator: TextGenerator | None
    language_generators: dict[str, TextGenerator] = field(default_factory=dict)
    policy: ColdStartPolicy = field(default_factory=ColdStartPolicy)
    gate: quality.QualityGate = field(default_factory=quality.QualityGate)
    lexicon: Lexicon = field(default_factory=Lexicon)
    near_duplicates: NearDuplicateIndex | None = field(default_factory=NearDuplicateIndex)
    max_new_tokens: int = 64
    review_max_new_tokens: int = 40
    review_ratings: tuple[int, ...] = (5,)
    max_regenerations: int = 1
    seed: int = 0
    repetition_penalty: float = 1.15

    def enrich_batch(self, listings: Sequence[dict], sources: Sequence[SourceRef], *,
                     interactions: Sequence[int] | None = None) -> list[dict]:
        """Return one enriched record per listing, in input order."""
        interactions = interactions or [0] * len(listings)
        for listing in listings:
            self.lexicon.add_listing(listing)
        records = [
            self._base_record(listing, source, self.policy.reasons(listing, interactions=count))
            for listing, source, count in zip(listings, sources, interactions)
        ]
        for record in records:
            if record["cold"] and self.generator_for(record["_listing"]) is None:
                record["enrichment_error"] = "generator unavailable"
        records_to_generate = [r for r in records if r["enrichment_error"] is None]

        want_description = [r for r in records_to_generate if self.policy.needs_description(r["cold_reasons"])]
        texts = self._generate_gated(
            [(r["_listing"], description_prompt(r["_listing"])) for r in want_description],
            max_new_tokens=self.max_new_tokens, task="description",
        )
        for record, (text, checks) in zip(want_description, texts):
            record["quality"]["description"] = quality.as_dict(checks)
            if text is not None:
                record["description"] = text
                record["description_synthetic"] = True
            else:
                record["gate_rejected"].append("description")

        want_reviews = [r for r in records_to_generate if self.policy.needs_reviews(r["cold_reasons"])]
        requests = [(r, rating) for r in want_reviews for rating in self.review_ratings]
        texts = self._generate_gated(
            [(r["_listing"], review_prompt(r["_listing"], rating)) for r, rating in requests],
            max_new_tokens=self.review_max_new_tokens, task="review",
        )
        for (record, rating), (text, checks) in zip(requests, texts):
            record["quality"][f"review_{rating}"] = quality.as_dict(checks)
            if text is not None:
                record["reviews"].append({"rating": rating, "text": text, "synthetic": True})
            else:
                record["gate_rejected"].append(f"review_{rating}")

        for record in records:
            generated = record["description_synthetic"] or any(r["synthetic"] for r in record["reviews"])
            record["enriched"] = generated
            # str(): a plugged-in generator may give any object as its version.
            record["generator_version"] = str(self.generator_for(record["_listing"]).version) if generated else None
        return records

    def generator_for(self, listing: dict) -> TextGenerator | None:
        """Return the generator for the listing's language, else the default generator."""
        return self.language_generators.get(listing.get("language") or "en", self.generator)

    def _generate_gated(self, requests: list[tuple[dict, str]], *,
                        max_new_tokens: int, task: str) -> list[tuple[str | None, dict]]:
        """Generate greedily, then resample each rejected text with a seed of its own."""
        if not requests:
            return []
        started = time.perf_counter()
        # One batched greedy call per generator; the outputs go back into request order.
        outputs: list[str] = [""] * len(requests)
        by_generator: dict[int, list[int]] = {}
        for index, (listing, _) in enumerate(requests):
            by_generator.setdefault(id(self.generator_for(listing)), []).append(index)
        for indices in by_generator.values():
            generator = self.generator_for(requests[indices[0]][0])
            batch = generator.generate([requests[i][1] for i in indices], max_new_tokens=max_new_tokens,
                                       repetition_penalty=self.repetition_penalty)
            for index, raw in zip(indices, batch):
                outputs[index] = raw
        results: list[tuple[str | None, dict]] = []
        for (listing, prompt), raw in zip(requests, outputs):
            generator = self.generator_for(listing)
            text = clean_generation(raw)
            checks = self._check(text, listing, task=task)
            attempt = 0
            while not quality.passed(checks) and attempt < self.max_regenerations:
                attempt += 1
                # A seed derived from the item and attempt keeps replays identical.
                seed = _stable_seed(listing.get("item_id", ""), prompt, attempt, self.seed)
                raw = generator.generate([prompt], max_new_tokens=max_new_tokens, temperature=0.8,
                                         top_p=0.95, repetition_penalty=self.repetition_penalty,
                                         seed=seed)[0]
                text = clean_generation(raw)
                checks = self._check(text, listing, task=task)
            if not quality.passed(checks):
                failed = [name for name, c in checks.items() if not c.passed]
                logger.info("gate rejected item_id=%s attempts=%d failed=%s",
                            listing.get("item_id"), attempt + 1, failed)
                results.append((None, checks))
            else:
                if self.near_duplicates is not None:
                    self.near_duplicates.add(text, item_id=str(listing.get("item_id") or ""))
                results.append((text, checks))
        logger.info("generated texts=%d elapsed_s=%.2f", len(requests), time.perf_counter() - started)
        return results

    def _check(self, text: str, listing: dict, *, task: str) -> dict[str, quality.CheckResult]:
        return self.gate.check(text, listing, task=task, lexicon=self.lexicon,
                               near_duplicates=self.near_duplicates)

    @staticmethod
    def _base_record(listing: dict, source: SourceRef, reasons: list[str]) -> dict[str, Any]:
        return {
            "_listing": listing,
            "item_id": listing["item_id"],
            "event_id": listing["event_id"],
            "source_topic": source.topic,
            "source_partition": source.partition,
            "source_offset": source.offset,
            "source_timestamp_ms": source.timestamp_ms,
            "record_version": source.record_version,
            "title": listing["title"],
            "brand": listing.get("brand"),
            "category": list(listing.get("category") or []),
            "attributes": dict(listing.get("attributes") or {}),
            "price": listing.get("price"),
            "currency": listing.get("currency"),
            "language": listing.get("language") or "en",
            "description": listing.get("description"),
            "description_synthetic": False,
            "reviews": [],
            "cold": bool(reasons),
            "cold_reasons": reasons,
            "enriched": False,
            "gate_rejected": [],
            "enrichment_error": None,
            "enrichment_attempt": source.attempt,
            "retry_scheduled": False,
            "generator_version": None,
            "quality": {},
        }


def gate_from_settings(settings: Settings) -> quality.QualityGate:
    """Build the quality gate, with the blocklist file of ``settings.blocklist_path`` when it is set.

    Raises
    ------
    ValueError
        If the blocklist file is missing, not UTF-8 or empty. The message names the path.
    """
    if not settings.blocklist_path:
        return quality.QualityGate()
    return quality.QualityGate(blocklist=load_blocklist(settings.blocklist_path))


def near_duplicates_from_settings(settings: Settings) -> NearDuplicateIndex:
    """Build an empty near-duplicate index with the threshold and capacity of ``settings``."""
    return NearDuplicateIndex(threshold=settings.near_duplicate_threshold,
                              capacity=settings.near_duplicate_capacity)


def finish_record(record: dict, *, produced_at_ms: int | None = None) -> dict:
    """Drop internal fields and stamp the production time."""
    out = {k: v for k, v in record.items() if not k.startswith("_")}
    out["produced_at_ms"] = produced_at_ms if produced_at_ms is not None else int(time.time() * 1000)
    return out


def _stable_seed(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little")
