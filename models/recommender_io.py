"""Save and load :class:`models.recommender.IncrementalRecommender` as JSON + NPZ.

A saved recommender is a directory with two files:

``recommender.json``
    ``format_version``, constructor parameters, the update count, user ids, item
    ids and feature tokens in row order, and the scalar part of the random state.
``recommender.npz``
    The used rows of the twelve LightFM parameter and optimizer arrays, the
    item-feature matrix in CSR form, the seen (user row, item row) pairs and the
    Mersenne Twister key of the random state.

Restoring the random state makes training after ``load`` continue exactly as it
would have without the save.
"""

from __future__ import annotations

import json
import logging
import os
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import lightfm
import numpy as np

from models import lightfm_growth
from models.id_index import IdIndex

if TYPE_CHECKING:
    from models.recommender import IncrementalRecommender

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
METADATA_FILE = "recommender.json"
ARRAYS_FILE = "recommender.npz"


def save(recommender: IncrementalRecommender, path: str | PathLike[str]) -> None:
    """Write ``recommender`` to directory ``path``, creating it when missing.

    Each file is written to a temporary name and renamed into place.
    NOTE: the two renames are not one atomic step, so a crash between them can
    leave a new NPZ next to an old JSON; ``load`` then fails on mismatched sizes.
    """
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    model = recommender.lightfm_model
    n_rows = {"user": recommender.n_users, "item": recommender.n_features}

    arrays: dict[str, np.ndarray] = {}
    for side, count in n_rows.items():
        if lightfm_growth.capacity(model, side) == 0:
            continue
        for name in lightfm_growth.parameter_names(side):
            arrays[name] = getattr(model, name)[:count]
    features = recommender._item_rows.matrix(recommender.n_features)
    arrays["item_feature_indptr"] = features.indptr
    arrays["item_feature_indices"] = features.indices
    arrays["item_feature_data"] = features.data
    seen_pairs = [(user, item) for user, items in enumerate(recommender._seen)
                  for item in sorted(items)]
    pairs = np.asarray(seen_pairs, dtype=np.int64).reshape(-1, 2)
    arrays["seen_user_rows"] = pairs[:, 0]
    arrays["seen_item_rows"] = pairs[:, 1]
    algorithm, keys, position, has_gauss, cached_gaussian = model.random_state.get_state()
    arrays["random_state_keys"] = keys

    metadata = {
        "format_version": FORMAT_VERSION,
        "lightfm_version": lightfm.__version__,
        "params": recommender.params,
        "n_updates": recommender._n_updates,
        "user_ids": recommender._users.ids,
        "item_ids": recommender._items.ids,
        "feature_tokens": recommender._features.ids,
        "random_state": {
            "algorithm": algorithm,
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
    }
    arrays_tmp = directory / (ARRAYS_FILE + ".tmp")
    with open(arrays_tmp, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(arrays_tmp, directory / ARRAYS_FILE)
    metadata_tmp = directory / (METADATA_FILE + ".tmp")
    metadata_tmp.write_text(json.dumps(metadata, ensure_ascii=False), encoding="utf-8")
    os.replace(metadata_tmp, directory / METADATA_FILE)
    logger.info("saved recommender path=%s model_version=%s users=%d items=%d features=%d",
                directory, recommender.version, recommender.n_users, recommender.n_items,
                recommender.n_features)


def load(path: str | PathLike[str]) -> IncrementalRecommender:
    """Read a recommender written by :func:`save` from directory ``path``.

    Raises
    ------
    FileNotFoundError
        When either file is missing.
    ValueError
        For an unknown ``format_version`` or arrays whose sizes do not match the ids.
    """
    from models.recommender import IncrementalRecommender

    directory = Path(path)
    metadata = json.loads((directory / METADATA_FILE).read_text(encoding="utf-8"))
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"unsupported recommender format_version {version!r} in {directory / METADATA_FILE}; "
            f"this code reads version {FORMAT_VERSION}"
        )
    recommender = IncrementalRecommender(**metadata["params"])
    model = recommender.lightfm_model
    with np.load(directory / ARRAYS_FILE) as stored:
        arrays = {name: stored[name] for name in stored.files}

    recommender._users = IdIndex(metadata["user_ids"])
    recommender._items = IdIndex(metadata["item_ids"])
    recommender._features = IdIndex(metadata["feature_tokens"])
    n_rows = {"user": len(recommender._users), "item": len(recommender._features)}
    for side, count in n_rows.items():
        if count == 0:
            continue
        lightfm_growth.ensure_capacity(model, side, count)
        for name in lightfm_growth.parameter_names(side):
            stored_rows = arrays[name]
            if stored_rows.shape[0] != count:
                raise ValueError(
                    f"{ARRAYS_FILE} array {name} has {stored_rows.shape[0]} rows but "
                    f"{METADATA_FILE} lists {count} {side} rows; the files are from different saves"
                )
            getattr(model, name)[:count] = stored_rows
        recommender._n_initialised[side] = count

    indptr = arrays["item_feature_indptr"]
    if len(indptr) != len(recommender._items) + 1:
        raise ValueError(
            f"{ARRAYS_FILE} has {len(indptr) - 1} item-feature rows but {METADATA_FILE} "
            f"lists {len(recommender._items)} items; the files are from different saves"
        )
    indices, data = arrays["item_feature_indices"], arrays["item_feature_data"]
    for row in range(len(recommender._items)):
        start, stop = indptr[row], indptr[row + 1]
        recommender._item_rows.set_row(row, indices[start:stop], data[start:stop])

    recommender._seen = [set() for _ in range(len(recommender._users))]
    for user_row, item_row in zip(arrays["seen_user_rows"].tolist(),
                                  arrays["seen_item_rows"].tolist()):
        recommender._seen[user_row].add(item_row)
    recommender._n_updates = int(metadata["n_updates"])
    state = metadata["random_state"]
    model.random_state.set_state((state["algorithm"], arrays["random_state_keys"],
                                  state["position"], state["has_gauss"],
                                  state["cached_gaussian"]))
    logger.info("loaded recommender path=%s model_version=%s users=%d items=%d features=%d",
                directory, recommender.version, recommender.n_users, recommender.n_items,
                recommender.n_features)
    return recommender
