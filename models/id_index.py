"""Append-only id <-> row maps and the growing item-feature matrix of the recommender."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import scipy.sparse as sp


class IdIndex(Mapping[str, int]):
    """Append-only map from string ids to consecutive row numbers 0, 1, 2, ...

    Reads like a read-only dict (``id in index``, ``index[id]``, ``len(index)``).
    Rows are never reused, so a row number stays valid for the life of the index.
    """

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._rows: dict[str, int] = {}
        self._ids: list[str] = []
        for id_ in ids:
            self.add(id_)

    def __getitem__(self, id_: str) -> int:
        return self._rows[id_]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._rows

    def add(self, id_: str) -> int:
        """Return the row of ``id_``, appending it first when it is new."""
        row = self._rows.get(id_)
        if row is None:
            row = len(self._ids)
            self._rows[id_] = row
            self._ids.append(id_)
        return row

    def id_of(self, row: int) -> str:
        """Return the id stored at ``row``."""
        return self._ids[row]

    @property
    def ids(self) -> list[str]:
        """Ids in row order (a copy)."""
        return list(self._ids)


class ItemFeatureRows:
    """Rows of the item-feature matrix, one per item, with a cached CSR form.

    Appending items extends the cached CSR arrays (amortised O(new entries)).
    Replacing the row of an existing item rebuilds them on the next
    :meth:`matrix` call (O(all entries)).
    """

    def __init__(self) -> None:
        self._indices: list[np.ndarray] = []
        self._weights: list[np.ndarray] = []
        self._csr_indptr = np.zeros(1, dtype=np.int32)
        self._csr_indices = np.empty(0, dtype=np.int32)
        self._csr_data = np.empty(0, dtype=np.float32)
        self._n_cached_rows = 0

    def __len__(self) -> int:
        return len(self._indices)

    def set_row(self, row: int, indices: np.ndarray, weights: np.ndarray) -> None:
        """Set the feature columns and weights of item ``row``, appending when ``row == len(self)``."""
        indices = np.asarray(indices, dtype=np.int32)
        weights = np.asarray(weights, dtype=np.float32)
        if indices.shape != weights.shape:
            raise ValueError(
                f"indices and weights differ in shape: {indices.shape} vs {weights.shape}"
            )
        if row == len(self._indices):
            self._indices.append(indices)
            self._weights.append(weights)
        elif 0 <= row < len(self._indices):
            self._indices[row] = indices
            self._weights[row] = weights
            self._n_cached_rows = min(self._n_cached_rows, row)
        else:
            raise IndexError(f"item row {row} out of range for {len(self._indices)} rows")

    def row(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the (feature columns, weights) of item ``row``."""
        return self._indices[row], self._weights[row]

    def matrix(self, n_columns: int) -> sp.csr_matrix:
        """Return the float32 CSR matrix of shape ``(len(self), n_columns)``."""
        if self._n_cached_rows < len(self._indices):
            self._extend_cache()
        return sp.csr_matrix(
            (self._csr_data, self._csr_indices, self._csr_indptr),
            shape=(len(self._indices), n_columns),
            copy=False,
        )

    def _extend_cache(self) -> None:
        start = self._n_cached_rows
        keep = int(self._csr_indptr[start])
        new_indices = self._indices[start:]
        lengths = np.fromiter((len(ix) for ix in new_indices), dtype=np.int64, count=len(new_indices))
        self._csr_indptr = np.concatenate(
            [self._csr_indptr[: start + 1], keep + np.cumsum(lengths)]
        ).astype(np.int32)
        self._csr_indices = np.concatenate([self._csr_indices[:keep], *new_indices]).astype(np.int32)
        self._csr_data = np.concatenate([self._csr_data[:keep], *self._weights[start:]]).astype(
            np.float32
        )
        self._n_cached_rows = len(self._indices)
