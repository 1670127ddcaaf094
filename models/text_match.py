"""Normalisation and term matching shared by the fidelity and safety checks.

Text and terms are compared after NFKC normalisation and case folding, so
full-width letters and digits (``ＦＤＡ``, ``１３８``) match their ASCII forms.

A term that contains a CJK character is matched as a plain substring, because
Chinese and Japanese text has no spaces between words. Any other term is
matched on whole tokens: a token is a run of letters or digits outside the CJK
ranges, so "Nike" matches "Nike's", "NIKE" and "Nike运动鞋" but not "Nikes",
and "fda approved" matches "FDA-approved". Punctuation and spacing between
the words of a term are ignored.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable

logger = logging.getLogger(__name__)

# CJK ideographs, CJK symbols and punctuation, kana, Hangul and compatibility ideographs.
_CJK_RANGES = "\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
CJK_CHAR = re.compile(f"[{_CJK_RANGES}]")
_TOKEN = re.compile(f"[^\\W_{_CJK_RANGES}]+")


def normalise(text: str) -> str:
    """Return ``text`` NFKC-normalised and case-folded, with runs of whitespace as one space."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(folded.split())


def tokens(normalised_text: str) -> list[str]:
    """Split normalised text into letter and digit tokens, leaving CJK characters out."""
    return _TOKEN.findall(normalised_text)


def has_cjk(text: str) -> bool:
    return CJK_CHAR.search(text) is not None


class TermMatcher:
    """Find which of a fixed set of terms occur in a text.

    Parameters
    ----------
    terms
        Terms in their display form; the form is what :meth:`find` returns.
        Empty terms are ignored.
    plurals
        Also match the English singular and plural of a Latin term's last
        word ("Jackets" matches "jacket", "Dress" matches "dresses").
    min_latin_chars
        Latin terms with fewer letters and digits than this are ignored,
        because very short names ("On", "HP") collide with ordinary words.
    case_sensitive
        Match Latin terms only with the letter case they were given in, or in
        capitals, after NFKC. Brand names are proper nouns, so "WITH" (a
        fashion brand) and "Sharp" must not match the words "with" and
        "sharp", while "NIKE" still matches "Nike".
    skip_words
        Lower-case one-word terms to ignore, such as English stop words that
        are also brand names ("even").
    """

    def __init__(self, terms: Iterable[str], *, plurals: bool = False, min_latin_chars: int = 1,
                 case_sensitive: bool = False, skip_words: frozenset[str] = frozenset()) -> None:
        if min_latin_chars < 1:
            raise ValueError(f"min_latin_chars must be >= 1, got {min_latin_chars!r}")
        self._case_sensitive = case_sensitive
        self._skip_words = skip_words
        self._substrings: dict[str, str] = {}
        # first token -> list of (token tuple, display form); variants share the display form
        self._by_first_token: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for term in terms:
            self._add(term, plurals=plurals, min_latin_chars=min_latin_chars)

    def _add(self, term: str, *, plurals: bool, min_latin_chars: int) -> None:
        key = normalise(term)
        if not key:
            return
        if has_cjk(key):
            self._substrings.setdefault(key, term)
            return
        term_tokens = tuple(tokens(key))
        if sum(len(token) for token in term_tokens) < min_latin_chars:
            return
        if len(term_tokens) == 1 and term_tokens[0] in self._skip_words:
            return
        if self._case_sensitive:
            term_tokens = tuple(_TOKEN.findall(_nfkc(term)))
        variants = {term_tokens}
        if self._case_sensitive:
            variants.add(tuple(token.upper() for token in term_tokens))
        if plurals:
            variants |= {term_tokens[:-1] + (last,) for last in _number_forms(term_tokens[-1])}
        for variant in variants:
            self._by_first_token.setdefault(variant[0], []).append((variant, term))

    def __bool__(self) -> bool:
        return bool(self._substrings or self._by_first_token)

    def find(self, text: str) -> list[str]:
        """Return the display forms of the terms found in ``text``, sorted, without repeats."""
        key = normalise(text)
        found = {display for substring, display in self._substrings.items() if substring in key}
        text_tokens = _TOKEN.findall(_nfkc(text)) if self._case_sensitive else tokens(key)
        for index, token in enumerate(text_tokens):
            for variant, display in self._by_first_token.get(token, ()):
                if tuple(text_tokens[index:index + len(variant)]) == variant:
                    found.add(display)
        return sorted(found)


def _nfkc(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _number_forms(word: str) -> set[str]:
    """Return ``word`` with its likely English singular and plural forms."""
    forms = {word, word + "s", word + "es"}
    if len(word) > 3 and word.endswith("s"):
        forms.add(word[:-1])
        if word.endswith("es"):
            forms.add(word[:-2])
    if len(word) > 3 and word.endswith("ies"):
        forms.add(word[:-3] + "y")
    if len(word) > 2 and word.endswith("y"):
        forms.add(word[:-1] + "ies")
    return forms
