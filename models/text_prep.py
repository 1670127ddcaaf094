"""Preprocessing of real texts before fine-tuning: normalisation, language, sentiment, split.

Every training or evaluation text goes through :func:`normalise_text` (HTML
stripped, NFKC, control characters removed, whitespace collapsed). Examples whose
detected language differs from the declared one, that are too short or too long,
or that repeat another example's text are dropped by :func:`prepare_examples`.
The train/validation split is by item: all examples of an item fall on one side.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from dataclasses import dataclass, field, replace

from models.training_data import clean_text

logger = logging.getLogger(__name__)

TASKS = ("description", "review")
LANGUAGES = ("en", "zh")
SENTIMENTS = ("negative", "neutral", "positive")

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")
# Full-width punctuation (，！？：；（） and others) stays as it is: NFKC would turn
# it into ASCII, which is wrong in Chinese text.
_FULL_WIDTH_PUNCTUATION = re.compile(r"([\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff5e])")
_CONTROL = re.compile(r"[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")
# Minimum and maximum target length in characters per language; a Chinese
# character carries roughly as much content as an English word of five letters.
LENGTH_BOUNDS_CHARS = {"en": (40, 600), "zh": (20, 300)}


@dataclass(frozen=True, kw_only=True)
class TextExample:
    """One real (listing, target text) pair for a generation task.

    Attributes
    ----------
    task
        ``"description"`` or ``"review"``.
    language
        ``"en"`` or ``"zh"``.
    item_id
        Item the text belongs to; the split keeps an item on one side.
    listing
        Listing dict in the shared listing schema (title, brand, category, ...).
    target
        The real text the model learns to write.
    rating
        Star rating 1-5 of a review, when the source has one.
    sentiment
        ``"negative"``, ``"neutral"`` or ``"positive"`` for reviews.
    source
        Short name of the source dataset.
    """

    task: str
    language: str
    item_id: str
    listing: dict = field(hash=False)
    target: str
    rating: int | None = None
    sentiment: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"invalid task {self.task!r}: expected one of {TASKS}")
        if self.language not in LANGUAGES:
            raise ValueError(f"invalid language {self.language!r}: expected one of {LANGUAGES}")
        if self.sentiment is not None and self.sentiment not in SENTIMENTS:
            raise ValueError(f"invalid sentiment {self.sentiment!r}: expected one of {SENTIMENTS}")


def normalise_text(text: str | None) -> str:
    """Strip HTML, apply NFKC, drop control and zero-width characters, collapse whitespace.

    NFKC turns full-width Latin letters and digits (common in Chinese listings)
    into their ASCII forms. Full-width punctuation such as ``，`` is kept.
    """
    text = clean_text(text)
    if not text:
        return ""
    pieces = _FULL_WIDTH_PUNCTUATION.split(text)
    # Odd pieces are the punctuation captured by the split.
    text = "".join(piece if index % 2 else unicodedata.normalize("NFKC", piece) for index, piece in enumerate(pieces))
    text = _CONTROL.sub("", text)
    return re.sub(r"\s+", " ", text).strip()


def detect_language(text: str) -> str | None:
    """Return ``"zh"`` or ``"en"`` from the script of the letters, or None when unclear.

    Text is Chinese when at least 30 % of its letters are CJK ideographs, English when
    at least 70 % are Latin letters and no more than 10 % are CJK.
    """
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return None
    cjk = sum(1 for ch in letters if _CJK.match(ch)) / len(letters)
    latin = sum(1 for ch in letters if _LATIN.match(ch)) / len(letters)
    if cjk >= 0.3:
        return "zh"
    if latin >= 0.7 and cjk <= 0.1:
        return "en"
    return None


def sentiment_from_rating(rating: int) -> str:
    """Map a 1-5 star rating to a sentiment label: 1-2 negative, 3 neutral, 4-5 positive."""
    if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
        raise ValueError(f"invalid rating {rating!r}: expected an integer from 1 to 5")
    if rating <= 2:
        return "negative"
    return "neutral" if rating == 3 else "positive"


def sentiment_from_classifier(text: str, *, negative_below: float = 0.4, positive_above: float = 0.6) -> str:
    """Label Chinese text with SnowNLP's sentiment probability (a Naive Bayes model it ships).

    NOTE: SnowNLP's model was trained on product reviews; on other text its
    probabilities are less reliable.
    """
    from snownlp import SnowNLP

    probability = SnowNLP(text).sentiments
    if probability < negative_below:
        return "negative"
    return "positive" if probability > positive_above else "neutral"


def within_length(text: str, language: str) -> bool:
    """Return True when ``text`` fits the character bounds of ``language``."""
    low, high = LENGTH_BOUNDS_CHARS[language]
    return low <= len(text) <= high


def prepare_examples(examples: list[TextExample], *, source: str) -> list[TextExample]:
    """Normalise targets and drop wrong-language, out-of-bounds and duplicate examples.

    Overlong targets are cut at a sentence end inside the bound rather than
    dropped. Counts of every drop reason are logged.
    """
    kept: list[TextExample] = []
    seen: set[tuple[str, str]] = set()
    dropped = {"language": 0, "length": 0, "duplicate": 0}
    for example in examples:
        target = _cut_to_bound(normalise_text(example.target), example.language)
        if detect_language(target) != example.language:
            dropped["language"] += 1
            continue
        if not within_length(target, example.language):
            dropped["length"] += 1
            continue
        key = (example.task, target.lower())
        if key in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(key)
        kept.append(replace(example, target=target))
    logger.info("prepared %d %s examples (dropped %s)", len(kept), source, dropped)
    return kept


def split_by_item(
    examples: list[TextExample], *, validation_share: float = 0.1, seed: int = 0
) -> tuple[list[TextExample], list[TextExample]]:
    """Split examples into train and validation sets so that no item is in both.

    An item goes to validation when the hash of ``(seed, item_id)`` falls below
    ``validation_share``, so the split does not depend on example order.
    """
    if not 0.0 < validation_share < 1.0:
        raise ValueError(f"invalid validation_share {validation_share}: expected a value between 0 and 1")
    train: list[TextExample] = []
    validation: list[TextExample] = []
    for example in examples:
        digest = hashlib.sha256(f"{seed}\x1f{example.item_id}".encode("utf-8")).digest()
        position = int.from_bytes(digest[:8], "little") / 2**64
        (validation if position < validation_share else train).append(example)
    return train, validation


def _cut_to_bound(text: str, language: str) -> str:
    high = LENGTH_BOUNDS_CHARS[language][1]
    if len(text) <= high:
        return text
    head = text[:high]
    ends = "。！？!?" if language == "zh" else ".!?"
    cut = max(head.rfind(end) for end in ends)
    if cut >= high // 2:
        return head[: cut + 1]
    if language == "en":
        space = head.rfind(" ")
        if space >= high // 2:
            return head[:space].rstrip(",;:-")
    return head
