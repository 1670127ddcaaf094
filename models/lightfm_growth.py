"""Grow the parameter arrays of a trained ``lightfm.LightFM`` model in place.

LightFM (1.17) sizes its arrays once, on the first ``fit_partial``, and rejects
feature matrices with more columns later. These helpers allocate the arrays
themselves with spare capacity, grow them by doubling, and initialise new rows the
way ``LightFM._initialize`` does, so that users, items and feature tokens can be
added to a model that has already been trained.

Each side (``"item"`` or ``"user"``) has six arrays of ``capacity`` rows: the
embeddings ``(capacity, no_components)``, biases ``(capacity,)`` and, for each of
them, the optimizer accumulators ``*_gradients`` and ``*_momentum``.
"""

from __future__ import annotations

import logging

import numpy as np
from lightfm import LightFM

logger = logging.getLogger(__name__)

SIDES = ("item", "user")

# LightFM keeps parameters as C-contiguous float32 arrays (its CYTHON_DTYPE).
PARAMETER_DTYPE = np.float32


def parameter_names(side: str) -> tuple[str, ...]:
    """Return the LightFM attribute names of one side's parameter and optimizer arrays."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return (
        f"{side}_embeddings",
        f"{side}_embedding_gradients",
        f"{side}_embedding_momentum",
        f"{side}_biases",
        f"{side}_bias_gradients",
        f"{side}_bias_momentum",
    )


def capacity(model: LightFM, side: str) -> int:
    """Return the number of rows allocated for one side, 0 before allocation."""
    embeddings = getattr(model, f"{side}_embeddings")
    return 0 if embeddings is None else embeddings.shape[0]


def ensure_capacity(model: LightFM, side: str, n_rows: int, *, min_capacity: int = 64) -> bool:
    """Make room for ``n_rows`` rows on one side, doubling the capacity when needed.

    Existing rows, learned values and optimizer state alike, are copied unchanged.
    Rows past the old capacity are zero until :func:`initialise_rows` sets them.

    Parameters
    ----------
    model : lightfm.LightFM
        Model whose arrays are replaced by larger ones.
    side : {"item", "user"}
    n_rows : int
        Number of rows that must fit.
    min_capacity : int, default 64
        Capacity of the first allocation at least.

    Returns
    -------
    bool
        True when the arrays were reallocated.
    """
    old_capacity = capacity(model, side)
    if n_rows <= old_capacity:
        return False
    new_capacity = max(n_rows, 2 * old_capacity, min_capacity)
    for name in parameter_names(side):
        old = getattr(model, name)
        shape = (new_capacity, model.no_components) if "embedding" in name else (new_capacity,)
        new = np.zeros(shape, dtype=PARAMETER_DTYPE)
        if old is not None:
            new[:old_capacity] = old
        setattr(model, name, new)
    logger.debug("grew lightfm %s arrays capacity=%d->%d", side, old_capacity, new_capacity)
    return True


def initialise_rows(model: LightFM, side: str, start: int, stop: int) -> None:
    """Initialise rows ``start:stop`` of one side as ``LightFM._initialize`` does.

    Embeddings are ``(uniform[0, 1) - 0.5) / no_components``, drawn from the model's
    ``random_state``. Biases and momentum start at 0. The adagrad accumulators of
    squared gradients start at 1 (0 under adadelta), as in lightfm 1.17.
    """
    if stop <= start:
        return
    if stop > capacity(model, side):
        raise ValueError(
            f"rows {start}:{stop} exceed the {side} capacity {capacity(model, side)}; "
            "call ensure_capacity first"
        )
    n_components = model.no_components
    gradient_start = 1.0 if model.learning_schedule == "adagrad" else 0.0
    embeddings = (model.random_state.rand(stop - start, n_components) - 0.5) / n_components
    getattr(model, f"{side}_embeddings")[start:stop] = embeddings.astype(PARAMETER_DTYPE)
    getattr(model, f"{side}_embedding_gradients")[start:stop] = gradient_start
    getattr(model, f"{side}_embedding_momentum")[start:stop] = 0.0
    getattr(model, f"{side}_biases")[start:stop] = 0.0
    getattr(model, f"{side}_bias_gradients")[start:stop] = gradient_start
    getattr(model, f"{side}_bias_momentum")[start:stop] = 0.0


def snapshot_rows(model: LightFM, n_rows_by_side: dict[str, int]) -> dict[str, np.ndarray]:
    """Copy the first rows of every parameter array, keyed by LightFM attribute name."""
    snapshot = {}
    for side, n_rows in n_rows_by_side.items():
        for name in parameter_names(side):
            snapshot[name] = getattr(model, name)[:n_rows].copy()
    return snapshot


def restore_rows(model: LightFM, snapshot: dict[str, np.ndarray]) -> None:
    """Write rows copied by :func:`snapshot_rows` back and zero the spare rows after them.

    Zeroing matters after a divergence: LightFM's regularisation step rescales
    every allocated row, spare ones included, and its finiteness check reads them all.
    """
    for name, rows in snapshot.items():
        array = getattr(model, name)
        array[: rows.shape[0]] = rows
        array[rows.shape[0] :] = 0.0


def non_finite_rows(model: LightFM, side: str, n_rows: int) -> np.ndarray:
    """Return the indices of rows among the first ``n_rows`` with a NaN or inf parameter."""
    embeddings = getattr(model, f"{side}_embeddings")[:n_rows]
    biases = getattr(model, f"{side}_biases")[:n_rows]
    # A sum is finite only when every term is; this avoids a boolean temporary
    # in the common case where everything is finite.
    with np.errstate(invalid="ignore", over="ignore"):
        if np.isfinite(embeddings.sum()) and np.isfinite(biases.sum()):
            return np.empty(0, dtype=np.int64)
    bad = ~np.isfinite(embeddings).all(axis=1) | ~np.isfinite(biases)
    return np.flatnonzero(bad)
