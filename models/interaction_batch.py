"""Turn a micro-batch of (user_id, item_id, weight) triples into LightFM training input."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import numpy as np
import scipy.sparse as sp


def check_id(value: object, name: str) -> None:
    """Raise ValueError unless ``value`` is a non-empty str."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty str, got {value!r}")


def merge_interactions(
    interactions: Iterable[tuple[str, str, float]],
) -> dict[tuple[str, str], float]:
    """Validate (user_id, item_id, weight) triples and add up the weights of repeated pairs.

    Returns
    -------
    dict
        (user_id, item_id) to total weight, in order of first occurrence.

    Raises
    ------
    ValueError
        For a malformed triple, an empty or non-str id, or a weight that is not a
        finite number > 0. The message names the offending triple.
    """
    merged: dict[tuple[str, str], float] = {}
    for position, entry in enumerate(interactions):
        try:
            user_id, item_id, weight = entry
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"interaction {position} must be (user_id, item_id, weight), got {entry!r}"
            ) from exc
        check_id(user_id, "user_id")
        check_id(item_id, "item_id")
        if not isinstance(weight, numbers.Real) or not (math.isfinite(weight) and weight > 0):
            raise ValueError(
                f"interaction weight must be finite and > 0, got {weight!r} for "
                f"user_id={user_id!r} item_id={item_id!r}; drop or re-weight the event"
            )
        key = (user_id, item_id)
        merged[key] = merged.get(key, 0.0) + float(weight)
    return merged


def history_entries(
    seen: Sequence[set[int]], rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """List the earlier items of every user in the batch that are not in the batch.

    Parameters
    ----------
    seen : sequence of set of int
        Item rows each user row interacted with before this batch.
    rows, cols : ndarray of int32
        User and item rows of the batch.

    Returns
    -------
    (ndarray, ndarray)
        User rows and item rows (int32), item rows sorted per user.
    """
    batch_items: dict[int, set[int]] = {}
    for user_row, item_row in zip(rows.tolist(), cols.tolist()):
        batch_items.setdefault(user_row, set()).add(item_row)
    history_rows: list[int] = []
    history_cols: list[int] = []
    # NOTE: the whole history of each user in the batch is listed, so a batch costs
    # O(history length) for users with very long histories.
    for user_row, items in batch_items.items():
        earlier = seen[user_row] - items
        history_rows.extend([user_row] * len(earlier))
        history_cols.extend(sorted(earlier))
    return np.asarray(history_rows, dtype=np.int32), np.asarray(history_cols, dtype=np.int32)


def training_matrices(
    rows: np.ndarray,
    cols: np.ndarray,
    weights: np.ndarray,
    history_rows: np.ndarray,
    history_cols: np.ndarray,
    *,
    shape: tuple[int, int],
) -> tuple[sp.coo_matrix, sp.coo_matrix]:
    """Build the interactions and sample-weight COO matrices for ``LightFM.fit_partial``.

    Batch pairs get interaction value 1 and their weight as sample weight. History
    pairs get value 0: lightfm 1.17 (WARP and BPR) trains only on entries > 0 but
    looks up every stored entry when it rejects a sampled negative, so items a user
    interacted with before are not pushed down as negatives.

    Returns
    -------
    (coo_matrix, coo_matrix)
        Float32 matrices of ``shape`` with identical ``row`` and ``col`` arrays, as
        LightFM requires for sample weights.
    """
    all_rows = np.concatenate([rows, history_rows])
    all_cols = np.concatenate([cols, history_cols])
    zeros = np.zeros(len(history_rows), dtype=np.float32)
    values = np.concatenate([np.ones(len(rows), dtype=np.float32), zeros])
    sample_weights = np.concatenate([weights.astype(np.float32), zeros])
    interactions = sp.coo_matrix((values, (all_rows, all_cols)), shape=shape)
    sample_weight = sp.coo_matrix((sample_weights, (all_rows, all_cols)), shape=shape)
    return interactions, sample_weight


def decay_weights(
    weights: Sequence[float] | np.ndarray,
    timestamps_ms: Sequence[int] | np.ndarray,
    *,
    reference_ms: int,
    half_life_s: float,
    min_weight: float = 1e-6,
) -> np.ndarray:
    """Halve event weights per ``half_life_s`` of age before ``reference_ms``.

    ``weight * 0.5 ** (age_s / half_life_s)`` with ``age_s = max(0, reference_ms -
    timestamp_ms) / 1000``, so events at or after the reference keep their weight.

    Parameters
    ----------
    weights : sequence of float
        Event weights, each > 0.
    timestamps_ms : sequence of int
        Event times, epoch milliseconds.
    reference_ms : int
        The time at which an event has its full weight, usually the newest event time seen.
    half_life_s : float
        Half-life in seconds; 0 returns the weights unchanged.
    min_weight : float, default 1e-6
        Floor of a decayed weight, because LightFM sample weights must stay > 0.

    Returns
    -------
    ndarray of float64
    """
    if half_life_s < 0:
        raise ValueError(f"half_life_s must be >= 0 (0 turns decay off), got {half_life_s!r}")
    weights = np.asarray(weights, dtype=np.float64)
    timestamps = np.asarray(timestamps_ms, dtype=np.float64)
    if weights.shape != timestamps.shape:
        raise ValueError(f"weights and timestamps_ms differ in shape: {weights.shape} vs {timestamps.shape}")
    if half_life_s == 0:
        return weights.copy()
    age_s = np.maximum(0.0, float(reference_ms) - timestamps) / 1000.0
    return np.maximum(weights * np.exp2(-age_s / half_life_s), min_weight)
