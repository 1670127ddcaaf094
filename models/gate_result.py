"""The outcome of one quality or safety check, as stored in enriched records."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check on one generated text.

    Attributes
    ----------
    passed
        Whether the text passed this check.
    score
        The measured value behind the decision; its meaning is given by the
        check (a count, a share or a similarity).
    reason
        A sentence a person can read, naming what was measured or found.
    """

    passed: bool
    score: float
    reason: str
