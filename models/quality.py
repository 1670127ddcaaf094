"""Quality and safety gates for generated text.

Each check returns a :class:`CheckResult` with a score and a reason, so a
rejected text can be explained in the enriched record. The gate passes only
when every check passes. Check names are stable and grouped:

- :data:`QUALITY_CHECKS`: length, repetition, language, the attribute
  fidelity checks brand, category and numbers (:mod:`models.fidelity`), and
  near_duplicate (:mod:`models.near_duplicate`);
- :data:`SAFETY_CHECKS`: pii and blocklist (:mod:`models.safety`).

:func:`gate_rates` turns a set of check results into the fidelity,
hallucinated-brand and safety-flag rates of an evaluation.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from models import fidelity, safety
from models.fidelity import Lexicon
from models.gate_result import CheckResult
from models.near_duplicate import NearDuplicateIndex

__all__ = ["CheckResult", "FIDELITY_CHECKS", "Lexicon", "NearDuplicateIndex", "QUALITY_CHECKS", "QualityGate",
           "SAFETY_CHECKS", "as_dict", "gate_rates", "passed"]

logger = logging.getLogger(__name__)

QUALITY_CHECKS = ("length", "repetition", "language", "brand", "category", "numbers", "near_duplicate")
SAFETY_CHECKS = ("pii", "blocklist")
FIDELITY_CHECKS = ("brand", "category", "numbers")

_CJK = re.compile(r"[\u4e00-\u9fff]")
_CJK_RUN = re.compile(r"[\u4e00-\u9fff]+")
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True, kw_only=True)
class QualityGate:
    """Thresholds of the quality and safety checks.

    Parameters
    ----------
    min_words, max_words
        Length bounds in words; two CJK characters count as one word.
    max_repeated_ngram_share
        Maximum share of word trigrams (CJK: character 4-grams) that repeat.
    max_repeated_cjk_bigram_share
        Maximum share of character bigrams inside runs of CJK characters that
        repeat. It catches word loops such as 收褶的收褶的收褶 that slip past
        the 4-gram check when decoding forbids repeated 4-grams. At 0.3 it
        passes about 99% of real AdvertiseGen copy and Chinese shop reviews.
    blocklist
        Phrases that must not appear (claims the shop forbids), matched as
        described in :func:`models.safety.check_blocklist`. Load a file with
        :func:`models.safety.load_blocklist`.
    """

    min_words: int = 5
    max_words: int = 200
    max_repeated_ngram_share: float = 0.2
    max_repeated_cjk_bigram_share: float = 0.3
    blocklist: tuple[str, ...] = safety.DEFAULT_BLOCKLIST

    def __post_init__(self) -> None:
        if not 0 <= self.min_words <= self.max_words:
            raise ValueError(f"word bounds must satisfy 0 <= min_words <= max_words, "
                             f"got [{self.min_words}, {self.max_words}]")
        for name in ("max_repeated_ngram_share", "max_repeated_cjk_bigram_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if isinstance(self.blocklist, str):
            raise ValueError(f"blocklist must be a tuple of phrases, got the string {self.blocklist!r}; "
                             f"wrap it as ({self.blocklist!r},)")

    def check(self, text: str, listing: Mapping, *, task: str = "description", lexicon: Lexicon | None = None,
              near_duplicates: NearDuplicateIndex | None = None) -> dict[str, CheckResult]:
        """Run every check on ``text`` generated for ``listing``.

        Parameters
        ----------
        task
            ``"description"`` or ``"review"``; a review may state numbers
            about its writer's use (see :func:`models.fidelity.check_numbers`).
        lexicon
            Known brands and categories. Without it, the brand and category
            checks only look for the listing's own terms and always pass.
        near_duplicates
            Accepted texts of other items. Without it, near_duplicate passes.

        Returns
        -------
        dict
            Check name -> result, with every name of :data:`QUALITY_CHECKS`
            then :data:`SAFETY_CHECKS`, in that order.
        """
        results = {
            "length": self._length(text),
            "repetition": self._repetition(text),
            "language": self._language(text, listing.get("language") or "en"),
            "brand": fidelity.check_brand(text, listing, lexicon=lexicon),
            "category": fidelity.check_category(text, listing, lexicon=lexicon),
            "numbers": fidelity.check_numbers(text, listing, task=task),
            "near_duplicate": self._near_duplicate(text, listing, near_duplicates),
            "pii": safety.check_pii(text),
            "blocklist": safety.check_blocklist(text, phrases=self.blocklist),
        }
        return results

    def _length(self, text: str) -> CheckResult:
        words = len(text.split()) + len(_CJK.findall(text)) // 2
        passed = self.min_words <= words <= self.max_words
        return CheckResult(passed, float(words), f"{words} words, bounds [{self.min_words}, {self.max_words}]")

    def _repetition(self, text: str) -> CheckResult:
        if _CJK.search(text):
            chars = [ch for ch in text if not ch.isspace()]
            grams = [tuple(chars[i:i + 4]) for i in range(len(chars) - 3)]
        else:
            words = [w.lower() for w in _WORD.findall(text)]
            grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
        if not grams:
            return CheckResult(True, 0.0, "too short for n-gram repetition")
        share = _repeated_share(grams)
        passed = share <= self.max_repeated_ngram_share
        reason = f"repeated n-gram share {share:.2f}, max {self.max_repeated_ngram_share}"
        bigrams = [run[i:i + 2] for run in _CJK_RUN.findall(text) for i in range(len(run) - 1)]
        if len(bigrams) >= 4:
            bigram_share = _repeated_share(bigrams)
            reason += f"; repeated CJK bigram share {bigram_share:.2f}, max {self.max_repeated_cjk_bigram_share}"
            if bigram_share > self.max_repeated_cjk_bigram_share:
                passed = False
            share = max(share, bigram_share)
        return CheckResult(passed, share, reason)

    def _language(self, text: str, language: str) -> CheckResult:
        letters = [ch for ch in text if ch.isalpha()]
        cjk_share = len(_CJK.findall(text)) / max(1, len(letters))
        passed = cjk_share >= 0.3 if language == "zh" else cjk_share < 0.1
        return CheckResult(passed, cjk_share, f"CJK share {cjk_share:.2f} for language {language!r}")

    @staticmethod
    def _near_duplicate(text: str, listing: Mapping, index: NearDuplicateIndex | None) -> CheckResult:
        if index is None:
            return CheckResult(True, 0.0, "no near-duplicate index; not checked")
        return index.check(text, str(listing.get("item_id") or ""))


def _repeated_share(grams: list) -> float:
    """Return the share of ``grams`` that repeat an earlier one."""
    return 1.0 - len(set(grams)) / len(grams)


def passed(results: Mapping[str, CheckResult]) -> bool:
    """Return whether every check in ``results`` passed."""
    return all(result.passed for result in results.values())


def as_dict(results: Mapping[str, CheckResult]) -> dict[str, dict]:
    """Convert results to plain dicts ``{passed, score, reason}`` for an enriched record."""
    return {name: asdict(result) for name, result in results.items()}


def gate_rates(texts: Iterable[Mapping[str, CheckResult | Mapping]]) -> dict[str, float | int]:
    """Compute the fidelity, hallucinated-brand and safety-flag rates of gated texts.

    Parameters
    ----------
    texts
        One mapping of check name -> result per text, either
        :class:`CheckResult` objects or their :func:`as_dict` form (as stored in
        an enriched record's ``quality``).

    Returns
    -------
    dict
        - ``texts``: the number of texts.
        - ``fidelity_rate``: share whose brand, category and numbers checks
          all passed.
        - ``hallucinated_brand_rate``: share whose brand check failed. The
          brand check fails only when another known brand is named.
        - ``safety_flag_rate``: share with a failed pii or blocklist check.

        A text that lacks a check that a rate needs (a record written before
        the check existed) is left out of that rate's denominator. A rate
        with an empty denominator is NaN.
    """
    counts = {"texts": 0, "fidelity": [0, 0], "brand": [0, 0], "safety": [0, 0]}
    for results in texts:
        counts["texts"] += 1
        outcome = {name: _passed_flag(result) for name, result in results.items()}
        if all(name in outcome for name in FIDELITY_CHECKS):
            counts["fidelity"][0] += all(outcome[name] for name in FIDELITY_CHECKS)
            counts["fidelity"][1] += 1
        if "brand" in outcome:
            counts["brand"][0] += not outcome["brand"]
            counts["brand"][1] += 1
        if all(name in outcome for name in SAFETY_CHECKS):
            counts["safety"][0] += not all(outcome[name] for name in SAFETY_CHECKS)
            counts["safety"][1] += 1
    return {
        "texts": counts["texts"],
        "fidelity_rate": _share(*counts["fidelity"]),
        "hallucinated_brand_rate": _share(*counts["brand"]),
        "safety_flag_rate": _share(*counts["safety"]),
    }


def _passed_flag(result: CheckResult | Mapping) -> bool:
    return bool(result.passed if isinstance(result, CheckResult) else result["passed"])


def _share(hits: int, total: int) -> float:
    return hits / total if total else float("nan")
