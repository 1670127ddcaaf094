"""Cold-start policy: decide which new listings need generated text."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ColdStartPolicy:
    """A listing is cold when any of its signals is below its threshold.

    Parameters
    ----------
    min_description_words
        A description shorter than this (in whitespace words, or in characters
        divided by two for Chinese text) counts as thin.
    min_reviews
        Fewer real reviews than this adds synthetic reviews.
    min_interactions
        Fewer behaviour events on the item than this counts as cold.
    """

    min_description_words: int = 12
    min_reviews: int = 3
    min_interactions: int = 5

    def reasons(self, listing: dict, *, interactions: int = 0) -> list[str]:
        """Return why ``listing`` is cold, or an empty list when it is warm."""
        reasons: list[str] = []
        if description_words(listing.get("description")) < self.min_description_words:
            reasons.append("thin_description")
        if int(listing.get("review_count") or 0) < self.min_reviews:
            reasons.append("few_reviews")
        if interactions < self.min_interactions:
            reasons.append("few_interactions")
        return reasons

    def needs_description(self, reasons: list[str]) -> bool:
        return "thin_description" in reasons

    def needs_reviews(self, reasons: list[str]) -> bool:
        return "few_reviews" in reasons


def description_words(text: str | None) -> int:
    """Count words, treating two CJK characters as one word."""
    if not text:
        return 0
    cjk = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")
    return len(text.split()) + cjk // 2
