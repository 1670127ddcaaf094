"""Token selection for generation: repetition penalty and temperature/top-k/top-p sampling."""

from __future__ import annotations

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
