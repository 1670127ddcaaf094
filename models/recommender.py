"""Incremental LightFM hybrid recommender that grows with new users, items and features.

Items are represented by an identity feature ``"item=<id>"`` plus their feature
tokens (brand, categories, attributes, price, text), with the weights of each item
row normalised to sum to 1. Users have an identity feature only. Micro-batches of
behaviour events train the model with ``LightFM.fit_partial``. Users, items and
tokens that the model has not seen grow its parameter arrays (see
:mod:`models.lightfm_growth`).
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Iterable, Mapping
from os import PathLike

import numpy as np
import scipy.sparse as sp
from lightfm import LightFM

from models import interaction_batch, lightfm_growth
from models.id_index import IdIndex, ItemFeatureRows

logger = logging.getLogger(__name__)

IDENTITY_PREFIX = "item="

# Losses that accept per-interaction sample weights in lightfm 1.17 and train from
# positive-only (implicit) feedback. "warp-kos" rejects sample weights, and
# "logistic" needs negative interactions, which the behaviour stream does not have.
SUPPORTED_LOSSES = ("warp", "bpr")

# Maximum number of offending ids quoted in an error message.
_MAX_IDS_IN_MESSAGE = 10

FeatureToken = str | tuple[str, float]


class NonFiniteParametersError(ValueError):
    """LightFM parameters became NaN or inf during ``fit_partial``.

    Attributes
    ----------
    user_ids : list of str
        Users whose embedding or bias is not finite.
    feature_tokens : list of str
        Item feature tokens (identity tokens included) whose embedding or bias is not finite.
    rolled_back : bool
        True when the parameters were restored to their values before the batch.
    """

    def __init__(self, message: str, *, user_ids: list[str], feature_tokens: list[str],
                 rolled_back: bool) -> None:
        super().__init__(message)
        self.user_ids = user_ids
        self.feature_tokens = feature_tokens
        self.rolled_back = rolled_back


class IncrementalRecommender:
    """Hybrid LightFM recommender trained online from (user, item, weight) micro-batches.

    Parameters
    ----------
    no_components : int, default 32
        Embedding dimension.
    loss : {"warp", "bpr"}, default "warp"
        LightFM loss. Both accept sample weights. WARP samples negatives from all
        items; BPR (lightfm 1.17) samples them from the items of the current batch
        only, which is weak for small micro-batches.
    learning_rate : float, default 0.05
        Initial learning rate of the adagrad (or adadelta) schedule.
    item_alpha, user_alpha : float, default 1e-6
        L2 penalty on item-feature and user parameters.
    random_state : int, default 0
        Seed of the initialisation and negative sampling. With ``num_threads=1``
        the same inputs give the same parameters and recommendations.
    learning_schedule : {"adagrad", "adadelta"}, default "adagrad"
    max_sampled : int, default 10
        Maximum number of negatives WARP samples per positive.
    num_threads : int, default 1
        LightFM training threads. More than 1 trains without locks (Hogwild) and
        is not deterministic.
    identity_weight : float, default 1.0
        Weight of the identity token ``"item=<id>"`` before the row is normalised.
        Plain feature tokens weigh 1.0.
    rollback_on_non_finite : bool, default True
        Copy the parameters before every batch and restore them when training makes
        them NaN or inf. The copy costs O(parameters) per batch.
    """

    def __init__(
        self,
        *,
        no_components: int = 32,
        loss: str = "warp",
        learning_rate: float = 0.05,
        item_alpha: float = 1e-6,
        user_alpha: float = 1e-6,
        random_state: int = 0,
        learning_schedule: str = "adagrad",
        max_sampled: int = 10,
        num_threads: int = 1,
        identity_weight: float = 1.0,
        rollback_on_non_finite: bool = True,
    ) -> None:
        if loss not in SUPPORTED_LOSSES:
            raise ValueError(
                f"unsupported loss {loss!r}; expected one of {SUPPORTED_LOSSES} "
                "(losses that take sample weights from positive-only feedback)"
            )
        if no_components < 1:
            raise ValueError(f"no_components must be >= 1, got {no_components!r}")
        if learning_schedule not in ("adagrad", "adadelta"):
            raise ValueError(
                f"unsupported learning_schedule {learning_schedule!r}; expected 'adagrad' or 'adadelta'"
            )
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
        if not (isinstance(identity_weight, (int, float)) and identity_weight > 0):
            raise ValueError(f"identity_weight must be > 0, got {identity_weight!r}")
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads!r}")
        self.params = {
            "no_components": no_components,
            "loss": loss,
            "learning_rate": learning_rate,
            "item_alpha": item_alpha,
            "user_alpha": user_alpha,
            "random_state": random_state,
            "learning_schedule": learning_schedule,
            "max_sampled": max_sampled,
            "num_threads": num_threads,
            "identity_weight": float(identity_weight),
            "rollback_on_non_finite": rollback_on_non_finite,
        }

        self._model = LightFM(
            no_components=no_components,
            loss=loss,
            learning_schedule=learning_schedule,
            learning_rate=learning_rate,
            item_alpha=item_alpha,
            user_alpha=user_alpha,
            max_sampled=max_sampled,
            random_state=random_state,
        )
        self._users = IdIndex()
        self._items = IdIndex()
        self._features = IdIndex()
        self._item_rows = ItemFeatureRows()
        self._seen: list[set[int]] = []
        self._n_updates = 0
        self._n_initialised = {"user": 0, "item": 0}
        self._item_cache: tuple[np.ndarray, np.ndarray] | None = None
        self._normalised_cache: np.ndarray | None = None

    # ------------------------------------------------------------------ state

    @property
    def version(self) -> str:
        """Model version: the number of ``fit_partial`` calls that trained on data."""
        return str(self._n_updates)

    @property
    def n_users(self) -> int:
        return len(self._users)

    @property
    def n_items(self) -> int:
        return len(self._items)

    @property
    def n_features(self) -> int:
        """Number of item feature tokens, identity tokens included."""
        return len(self._features)

    @property
    def user_index(self) -> Mapping[str, int]:
        """Read-only map from user id to row."""
        return self._users

    @property
    def item_index(self) -> Mapping[str, int]:
        """Read-only map from item id to row."""
        return self._items

    @property
    def lightfm_model(self) -> LightFM:
        """The wrapped model. Its arrays have spare rows past the used ones."""
        return self._model

    # ------------------------------------------------------------------ items

    def upsert_item(self, item_id: str, feature_tokens: Iterable[FeatureToken] = ()) -> None:
        """Add an item or replace its features.

        Parameters
        ----------
        item_id : str
        feature_tokens : iterable of str or (str, float)
            Tokens such as those of :func:`models.features.item_feature_tokens`,
            optionally with a weight (default 1.0) as from
            :func:`models.features.text_feature_tokens`. A repeated token adds its
            weights. The identity token is added here.
        """
        interaction_batch.check_id(item_id, "item_id")
        weights = {IDENTITY_PREFIX + item_id: self.params["identity_weight"]}
        for entry in feature_tokens:
            token, weight = (entry, 1.0) if isinstance(entry, str) else entry
            if not isinstance(token, str) or not token:
                raise ValueError(f"invalid feature token {token!r} for item_id={item_id!r}")
            if not isinstance(weight, numbers.Real) or not (math.isfinite(weight) and weight > 0):
                raise ValueError(
                    f"feature weight must be finite and > 0, got {weight!r} for "
                    f"token {token!r} of item_id={item_id!r}"
                )
            weights[token] = weights.get(token, 0.0) + float(weight)
        self._set_item_features(item_id, weights)

    def _set_item_features(self, item_id: str, weights: dict[str, float]) -> int:
        row = self._items.add(item_id)
        columns = np.fromiter((self._features.add(t) for t in weights), dtype=np.int32,
                              count=len(weights))
        values = np.fromiter(weights.values(), dtype=np.float64, count=len(weights))
        self._grow("item", len(self._features))
        self._item_rows.set_row(row, columns, (values / values.sum()).astype(np.float32))
        self._invalidate_caches()
        return row

    def _grow(self, side: str, n_rows: int) -> None:
        start = self._n_initialised[side]
        if n_rows <= start:
            return
        lightfm_growth.ensure_capacity(self._model, side, n_rows)
        lightfm_growth.initialise_rows(self._model, side, start, n_rows)
        self._n_initialised[side] = n_rows

    def _invalidate_caches(self) -> None:
        self._item_cache = None
        self._normalised_cache = None

    # --------------------------------------------------------------- training

    def fit_partial(self, interactions: Iterable[tuple[str, str, float]], *,
                    epochs: int = 1) -> None:
        """Train on a micro-batch of interactions, adding unknown users, items and features.

        Repeated (user, item) pairs in a batch are merged and their weights added.
        Items that the user interacted with in earlier batches are not sampled as
        negatives. An empty batch is a no-op and leaves :attr:`version` unchanged.

        Parameters
        ----------
        interactions : iterable of (user_id, item_id, weight)
            Weights must be finite and > 0; they become LightFM sample weights
            (WARP clips each weighted loss at 10).
        epochs : int, default 1
            Passes over the batch.

        Raises
        ------
        ValueError
            For an invalid id or weight; nothing is trained then.
        NonFiniteParametersError
            When training made parameters NaN or inf. With ``rollback_on_non_finite``
            the parameters are restored and the version stays unchanged.
        """
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs!r}")
        merged = interaction_batch.merge_interactions(interactions)
        if not merged:
            logger.debug("empty interaction batch; model version=%s unchanged", self.version)
            return
        started = time.perf_counter()
        n_users_before, n_items_before = self.n_users, self.n_items

        rows = np.empty(len(merged), dtype=np.int32)
        cols = np.empty(len(merged), dtype=np.int32)
        for position, (user_id, item_id) in enumerate(merged):
            rows[position] = self._users.add(user_id)
            item_row = self._items.get(item_id)
            if item_row is None:
                item_row = self._set_item_features(
                    item_id, {IDENTITY_PREFIX + item_id: self.params["identity_weight"]})
            cols[position] = item_row
        self._seen.extend(set() for _ in range(self.n_users - len(self._seen)))
        self._grow("user", self.n_users)
        weights = np.fromiter(merged.values(), dtype=np.float32, count=len(merged))

        history_rows, history_cols = interaction_batch.history_entries(self._seen, rows, cols)
        matrix, sample_weight = interaction_batch.training_matrices(
            rows, cols, weights, history_rows, history_cols, shape=(self.n_users, self.n_items))
        user_features = sp.eye(self.n_users, lightfm_growth.capacity(self._model, "user"),
                               dtype=np.float32, format="csr")
        item_features = self._item_rows.matrix(lightfm_growth.capacity(self._model, "item"))

        snapshot = None
        if self.params["rollback_on_non_finite"]:
            snapshot = lightfm_growth.snapshot_rows(
                self._model, {"user": self.n_users, "item": self.n_features})
        try:
            # Overflow and NaN warnings are silenced because divergence is reported below.
            with np.errstate(over="ignore", invalid="ignore"):
                self._model.fit_partial(
                    matrix,
                    user_features=user_features,
                    item_features=item_features,
                    sample_weight=sample_weight,
                    epochs=epochs,
                    num_threads=self.params["num_threads"],
                )
        except ValueError as exc:
            # lightfm raises a ValueError without ids when parameters diverge.
            self._raise_if_non_finite(snapshot, cause=exc)
            raise

        for user_row, item_row in zip(rows.tolist(), cols.tolist()):
            self._seen[user_row].add(item_row)
        self._n_updates += 1
        self._invalidate_caches()
        logger.info(
            "fit_partial first_user_id=%s pairs=%d history_pairs=%d new_users=%d new_items=%d "
            "epochs=%d model_version=%s elapsed_s=%.4f",
            next(iter(merged))[0], len(merged), len(history_rows), self.n_users - n_users_before,
            self.n_items - n_items_before, epochs, self.version,
            time.perf_counter() - started,
        )

    def _raise_if_non_finite(self, snapshot: dict[str, np.ndarray] | None, *,
                             cause: BaseException) -> None:
        bad_users = lightfm_growth.non_finite_rows(self._model, "user", self.n_users)
        bad_features = lightfm_growth.non_finite_rows(self._model, "item", self.n_features)
        if len(bad_users) == 0 and len(bad_features) == 0:
            return
        user_ids = [self._users.id_of(int(row)) for row in bad_users]
        tokens = [self._features.id_of(int(row)) for row in bad_features]
        if snapshot is not None:
            lightfm_growth.restore_rows(self._model, snapshot)
            self._invalidate_caches()
            outcome = f"the batch was rolled back and model version {self.version} is unchanged"
        else:
            outcome = "the model is unusable; load a saved copy"
        message = (
            f"LightFM parameters became NaN or inf in fit_partial: {len(user_ids)} user rows "
            f"(first: {user_ids[:_MAX_IDS_IN_MESSAGE]}) and {len(tokens)} item feature rows "
            f"(first: {tokens[:_MAX_IDS_IN_MESSAGE]}); {outcome}. "
            "Lower learning_rate or the interaction weights."
        )
        logger.error(message)
        raise NonFiniteParametersError(message, user_ids=user_ids, feature_tokens=tokens,
                                       rolled_back=snapshot is not None) from cause

    # ---------------------------------------------------------------- scoring

    def item_representations(self) -> tuple[np.ndarray, np.ndarray]:
        """Return item embeddings ``(n_items, no_components)`` and biases ``(n_items,)``.

        Each is the weighted sum of the item's feature rows, as ``LightFM.predict``
        computes it. The result is cached until the next update; do not modify it.
        """
        if self._item_cache is None:
            features = self._item_rows.matrix(lightfm_growth.capacity(self._model, "item"))
            embeddings = np.asarray(features @ self._model.item_embeddings, dtype=np.float32)
            biases = np.asarray(features @ self._model.item_biases, dtype=np.float32)
            self._item_cache = (embeddings, biases)
        return self._item_cache

    def recommend(self, user_id: str, *, k: int = 10,
                  exclude_seen: bool = True) -> list[tuple[str, float]]:
        """Rank all items for a user by the LightFM score.

        A user who has no interactions yet is scored with a zero embedding, so the
        ranking follows the item biases.

        Parameters
        ----------
        user_id : str
        k : int, default 10
            Maximum number of items returned.
        exclude_seen : bool, default True
            Leave out the items the user interacted with in any ``fit_partial``.

        Returns
        -------
        list of (item_id, score)
            Highest score first, ties broken by item row; fewer than ``k`` when
            fewer items are left.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k!r}")
        if self.n_items == 0:
            return []
        embeddings, biases = self.item_representations()
        user_row = self._users.get(user_id)
        if user_row is None:
            logger.debug("recommend for unknown user_id=%s: ranking by item bias", user_id)
            scores = biases.copy()
        else:
            user_vector = self._model.user_embeddings[user_row]
            scores = embeddings @ user_vector + biases + self._model.user_biases[user_row]
        if exclude_seen and user_row is not None and self._seen[user_row]:
            scores[np.fromiter(self._seen[user_row], dtype=np.int64)] = -np.inf
        return self._top_k(scores, k)

    def recommend_many(self, user_ids: Iterable[str], *, k: int = 10,
                       exclude_seen: bool = True) -> dict[str, list[tuple[str, float]]]:
        """Rank all items for several users with one matrix product.

        Gives the same rankings as :meth:`recommend` for each user; unknown users
        are ranked by item bias.

        Returns
        -------
        dict
            user_id to a list of (item_id, score), highest score first.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k!r}")
        user_ids = list(dict.fromkeys(user_ids))
        if self.n_items == 0:
            return {user_id: [] for user_id in user_ids}
        embeddings, biases = self.item_representations()
        rows = [self._users.get(user_id) for user_id in user_ids]
        known = np.asarray([position for position, row in enumerate(rows) if row is not None], dtype=np.int64)
        known_rows = np.asarray([row for row in rows if row is not None], dtype=np.int64)
        scores = np.empty((len(user_ids), self.n_items), dtype=np.float32)  # (n_requested, n_items)
        scores[:] = biases
        if len(known_rows):
            # (n_known, no_components) @ (no_components, n_items)
            scores[known] += (self._model.user_embeddings[known_rows] @ embeddings.T
                              + self._model.user_biases[known_rows][:, None])
        if exclude_seen:
            for position, user_row in zip(known.tolist(), known_rows.tolist()):
                if self._seen[user_row]:
                    scores[position, np.fromiter(self._seen[user_row], dtype=np.int64)] = -np.inf
        return dict(zip(user_ids, self._top_k_rows(scores, k)))

    def _top_k_rows(self, scores: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """Apply :meth:`_top_k` to every row of ``scores`` with one partition and one sort."""
        k = min(k, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else \
            np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.lexsort((top, -top_scores), axis=1)
        top = np.take_along_axis(top, order, axis=1)
        top_scores = np.take_along_axis(top_scores, order, axis=1)
        ids = self._items.ids
        return [[(ids[item], float(score)) for item, score in zip(row_items.tolist(), row_scores.tolist())
                 if score > -np.inf]
                for row_items, row_scores in zip(top, top_scores)]

    def similar_items(self, item_id: str, *, k: int = 10) -> list[tuple[str, float]]:
        """Rank other items by cosine similarity of their embeddings (biases ignored).

        Raises
        ------
        KeyError
            When ``item_id`` was never upserted or seen in ``fit_partial``.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k!r}")
        row = self._items.get(item_id)
        if row is None:
            raise KeyError(f"item_id {item_id!r} not found; add it with upsert_item or fit_partial")
        normalised = self._normalised_embeddings()
        scores = normalised @ normalised[row]
        scores[row] = -np.inf
        return self._top_k(scores, k)

    def similar_items_many(self, item_ids: Iterable[str], *,
                           k: int = 10) -> dict[str, list[tuple[str, float]]]:
        """Run :meth:`similar_items` for several items with one matrix product.

        Unknown item ids are skipped (logged at debug level), not raised.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k!r}")
        wanted = []
        for item_id in dict.fromkeys(item_ids):
            if item_id in self._items:
                wanted.append(item_id)
            else:
                logger.debug("similar items skipped for unknown item_id=%s", item_id)
        if not wanted:
            return {}
        normalised = self._normalised_embeddings()
        rows = np.asarray([self._items[item_id] for item_id in wanted], dtype=np.int64)
        scores = normalised[rows] @ normalised.T  # (n_wanted, n_items)
        scores[np.arange(len(rows)), rows] = -np.inf
        return dict(zip(wanted, self._top_k_rows(scores, k)))

    def _normalised_embeddings(self) -> np.ndarray:
        if self._normalised_cache is None:
            embeddings, _ = self.item_representations()
            norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
            self._normalised_cache = embeddings / np.maximum(norms, np.float32(1e-12))
        return self._normalised_cache

    def _top_k(self, scores: np.ndarray, k: int) -> list[tuple[str, float]]:
        n_candidates = int(np.count_nonzero(scores > -np.inf))
        k = min(k, n_candidates)
        if k == 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        order = top[np.lexsort((top, -scores[top]))][:k]
        return [(self._items.id_of(int(row)), float(scores[row])) for row in order]

    # ------------------------------------------------------------ persistence

    def save(self, path: str | PathLike[str]) -> None:
        """Write the recommender to directory ``path`` (see :mod:`models.recommender_io`)."""
        from models import recommender_io

        recommender_io.save(self, path)

    @classmethod
    def load(cls, path: str | PathLike[str]) -> IncrementalRecommender:
        """Read a recommender written by :meth:`save`."""
        from models import recommender_io

        return recommender_io.load(path)
