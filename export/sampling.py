"""Token selection for generation: repetition penalty, n-gram blocking and temperature/top-k/top-p sampling."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def apply_repetition_penalty(logits: np.ndarray, seen: list[set[int]], penalty: float) -> None:
    """Penalise already seen tokens in place, as in CTRL: divide positive logits, multiply negative ones."""
    for row, tokens in enumerate(seen):
        if not tokens:
            continue
        index = np.fromiter(tokens, dtype=np.int64)
        values = logits[row, index]
        logits[row, index] = np.where(values > 0, values / penalty, values * penalty)


def sample_tokens(
    logits: np.ndarray, *, temperature: float, top_k: int, top_p: float, generators: list[np.random.Generator]
) -> np.ndarray:
    """Sample one token per row from ``logits`` (B, V) after temperature, top-k and top-p filtering."""
    scaled = logits.astype(np.float64) / temperature
    if 0 < top_k < scaled.shape[-1]:
        kth = np.partition(scaled, -top_k, axis=-1)[:, -top_k][:, None]
        scaled = np.where(scaled < kth, -np.inf, scaled)
    scaled -= scaled.max(axis=-1, keepdims=True)
    probs = np.exp(scaled)
    probs /= probs.sum(axis=-1, keepdims=True)
    if top_p < 1.0:
        order = np.argsort(-probs, axis=-1, kind="stable")
        sorted_probs = np.take_along_axis(probs, order, axis=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        remove = np.cumsum(sorted_probs, axis=-1) - sorted_probs >= top_p
        sorted_probs[remove] = 0.0
        probs = np.zeros_like(probs)
        np.put_along_axis(probs, order, sorted_probs, axis=-1)
        probs /= probs.sum(axis=-1, keepdims=True)
    tokens = np.empty(len(probs), dtype=np.int64)
    for row, generator in enumerate(generators):
        cumulative = np.cumsum(probs[row])
        tokens[row] = min(int(np.searchsorted(cumulative, generator.random() * cumulative[-1], side="right")),
                          len(cumulative) - 1)
    return tokens


class NoRepeatNGramIndex:
    """Per-row index of n-grams that bans any token completing an n-gram already in the row.

    The rule is that of ``transformers``' ``NoRepeatNGramLogitsProcessor``: the last
    ``size - 1`` tokens of a row are looked up among the row's n-gram prefixes, and
    every token that followed that prefix before gets a logit of ``-inf``. Rows hold
    the real tokens only (prompt without padding, then the output), so a row bans the
    same tokens alone or in a left-padded batch.

    Parameters
    ----------
    size : int
        n-gram length, at least 1. A size of 1 bans every token already in the row.
    sequences : list of list of int
        Initial tokens of each row, usually the prompt without padding.
    """

    def __init__(self, *, size: int, sequences: list[list[int]]):
        if size < 1:
            raise ValueError(f"invalid n-gram size {size}: expected >= 1")
        self.size = size
        self.sequences = [list(tokens) for tokens in sequences]
        self.next_tokens: list[dict[tuple[int, ...], set[int]]] = [{} for _ in self.sequences]
        for row, tokens in enumerate(self.sequences):
            for end in range(size, len(tokens) + 1):
                self._add_ngram(row, end)

    def _add_ngram(self, row: int, end: int) -> None:
        tokens = self.sequences[row]
        prefix = tuple(tokens[end - self.size:end - 1])
        self.next_tokens[row].setdefault(prefix, set()).add(tokens[end - 1])

    def append(self, row: int, token: int) -> None:
        """Append ``token`` to ``row`` and index the n-gram that it completes."""
        self.sequences[row].append(token)
        if len(self.sequences[row]) >= self.size:
            self._add_ngram(row, len(self.sequences[row]))

    def ban_repeats(self, logits: np.ndarray, rows: Sequence[int]) -> None:
        """Set to ``-inf``, in place, the logits (B, V) of tokens that would repeat an n-gram in ``rows``."""
        for row in rows:
            tokens = self.sequences[row]
            if len(tokens) < self.size - 1:
                continue
            banned = self.next_tokens[row].get(tuple(tokens[len(tokens) - self.size + 1:]))
            if banned:
                logits[row, np.fromiter(banned, dtype=np.int64)] = -np.inf
