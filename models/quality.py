"""Quality and safety gates for generated text.

Each check returns a :class:`CheckResult` with a score and a reason, so a
rejected text can be explained in the enriched record. The gate passes only
when every check passes.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

_CJK = re.compile(r"[\u4e00-\u9fff]")
_WORD = re.compile(r"\w+", re.UNICODE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_PII_PATTERNS = {
    "email": re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),
    "url": re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE),
    "cn_mobile": re.compile(r"(?<!\d)(?:\+?86[- ]?)?1[3-9]\d{9}(?!\d)"),
    "phone": re.compile(r"(?<!\d)(?:\+?\d{1,3}[ .-]?)?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\d)"),
    "cn_id_card": re.compile(r"(?<!\d)\d{17}[\dXx](?!\d)"),
    "card_number": re.compile(r"(?<!\d)(?:\d[ -]?){13,19}(?!\d)"),
}


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    score: float
    reason: str


@dataclass(frozen=True, kw_only=True)
class QualityGate:
    """Thresholds of the quality and safety checks.

    Parameters
    ----------
    min_words, max_words
        Length bounds in words; two CJK characters count as one word.
    max_repeated_ngram_share
        Maximum share of word trigrams (CJK: character 4-grams) that repeat.
    blocklist
        Lower-case phrases that must not appear (claims the shop forbids).
    """

    min_words: int = 5
    max_words: int = 200
    max_repeated_ngram_share: float = 0.2
    blocklist: tuple[str, ...] = (
        "cures", "cure cancer", "fda approved", "guaranteed weight loss", "治愈", "根治", "包治百病",
    )

    def check(self, text: str, listing: dict) -> dict[str, CheckResult]:
        """Run every check on ``text`` generated for ``listing``."""
        return {
            "length": self._length(text),
            "repetition": self._repetition(text),
            "language": self._language(text, listing.get("language") or "en"),
            "numbers": self._numbers(text, listing),
            "pii": self._pii(text),
            "blocklist": self._blocklist(text),
        }

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
        share = 1.0 - len(set(grams)) / len(grams)
        passed = share <= self.max_repeated_ngram_share
        return CheckResult(passed, share, f"repeated n-gram share {share:.2f}, max {self.max_repeated_ngram_share}")

    def _language(self, text: str, language: str) -> CheckResult:
        letters = [ch for ch in text if ch.isalpha()]
        cjk_share = len(_CJK.findall(text)) / max(1, len(letters))
        passed = cjk_share >= 0.3 if language == "zh" else cjk_share < 0.1
        return CheckResult(passed, cjk_share, f"CJK share {cjk_share:.2f} for language {language!r}")

    def _numbers(self, text: str, listing: dict) -> CheckResult:
        source = " ".join(
            [str(listing.get("title") or ""), str(listing.get("brand") or ""), str(listing.get("price") or "")]
            + [f"{k} {v}" for k, v in (listing.get("attributes") or {}).items()]
            + list(listing.get("category") or [])
        )
        known = {_normalise_number(n) for n in _NUMBER.findall(source)}
        invented = sorted({n for n in _NUMBER.findall(text) if _normalise_number(n) not in known})
        passed = not invented
        reason = "every number appears in the input" if passed else f"numbers absent from the input: {invented[:5]}"
        return CheckResult(passed, float(len(invented)), reason)

    def _pii(self, text: str) -> CheckResult:
        found = [name for name, pattern in _PII_PATTERNS.items() if pattern.search(text)]
        reason = "no personal data patterns" if not found else f"matched {found}"
        return CheckResult(not found, float(len(found)), reason)

    def _blocklist(self, text: str) -> CheckResult:
        lowered = text.lower()
        found = [phrase for phrase in self.blocklist if phrase in lowered]
        reason = "no blocked phrase" if not found else f"blocked phrases {found}"
        return CheckResult(not found, float(len(found)), reason)


def passed(results: dict[str, CheckResult]) -> bool:
    return all(result.passed for result in results.values())


def as_dict(results: dict[str, CheckResult]) -> dict[str, dict]:
    return {name: asdict(result) for name, result in results.items()}


def _normalise_number(text: str) -> str:
    value = text.replace(",", ".")
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value
