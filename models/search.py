"""BM25 search over listings, and the retrieval of held-out items by text-derived queries.

The index is ``bm25s`` (Lucene BM25 variant, k1=1.5, b=0.75) over lowercase word
tokens with English stop words removed. :func:`search_lift` measures how often
the query of a held-out item finds that item, for listings indexed raw and
enriched.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

import bm25s
import numpy as np

from models.features import ENGLISH_STOP_WORDS, normalise_text

logger = logging.getLogger(__name__)

_WORD = re.compile(r"[^\W_]{2,}")


def words(text: str) -> list[str]:
    """Split text into normalised words of two or more characters, stop words and numbers removed."""
    return [word for word in _WORD.findall(normalise_text(text))
            if word not in ENGLISH_STOP_WORDS and not word.isdigit()]


def listing_document(listing: Mapping[str, object], text: str | None = None) -> str:
    """Join a listing's title, brand, categories and an optional text into one search document."""
    parts = [str(listing.get("title") or ""), str(listing.get("brand") or "")]
    parts.extend(str(level) for level in listing.get("category") or ())
    if text:
        parts.append(text)
    return " ".join(part for part in parts if part)


def keyword_queries(texts: Mapping[str, str], *, query_items: Sequence[str], n_words: int = 5,
                    exclude: Mapping[str, str] | None = None) -> dict[str, str]:
    """Build one query per item from the most distinctive words of its text (TF-IDF).

    Document frequencies come from all of ``texts``. Such a query models a shopper
    who searches for what the item's real description or reviews talk about.

    Parameters
    ----------
    texts : mapping
        item_id to real text (description or reviews).
    query_items : sequence of str
        Items that get a query; items without text get none.
    n_words : int, default 5
        Words per query.
    exclude : mapping or None
        item_id to text whose words may not appear in that item's query, e.g.
        the title, so that the title alone cannot match the query.

    Returns
    -------
    dict
        item_id to query string; items with no usable word are left out.
    """
    document_frequency: Counter = Counter()
    tokenised = {}
    for item_id, text in texts.items():
        tokens = words(text)
        tokenised[item_id] = tokens
        document_frequency.update(set(tokens))
    n_documents = max(len(texts), 1)
    queries = {}
    for item_id in query_items:
        tokens = tokenised.get(item_id)
        if not tokens:
            continue
        banned = set(words(exclude.get(item_id, ""))) if exclude else set()
        counts = Counter(token for token in tokens if token not in banned)
        scored = sorted(counts, key=lambda word: (-counts[word] * math.log(n_documents / document_frequency[word]),
                                                  word))
        if scored:
            queries[item_id] = " ".join(scored[:n_words])
    return queries


class ListingIndex:
    """A BM25 index over item documents.

    Parameters
    ----------
    documents : mapping
        item_id to document text.
    """

    def __init__(self, documents: Mapping[str, str]) -> None:
        if not documents:
            raise ValueError("cannot index an empty set of documents")
        self.item_ids = list(documents)
        corpus_tokens = [words(documents[item_id]) or ["<empty>"] for item_id in self.item_ids]
        self._index = bm25s.BM25()
        self._index.index(corpus_tokens, show_progress=False)

    def search(self, queries: Sequence[str], *, k: int = 10) -> list[list[str]]:
        """Return the top-``k`` item ids per query, best first; items scoring 0 (no shared word) are left out."""
        k = min(k, len(self.item_ids))
        query_tokens = [words(query) or ["<empty>"] for query in queries]
        results, scores = self._index.retrieve(query_tokens, k=k, show_progress=False, n_threads=1)
        return [[self.item_ids[int(position)] for position, score in zip(row, row_scores) if score > 0]
                for row, row_scores in zip(np.asarray(results), np.asarray(scores))]


def retrieval_metrics(index: ListingIndex, queries: Mapping[str, str], *, k: int = 10,
                      mrr_depth: int = 100) -> dict[str, float]:
    """Score how well each query retrieves its own item.

    Returns
    -------
    dict
        ``recall@k`` (share of queries whose item is in the top ``k``) and
        ``mrr`` (mean reciprocal rank, 0 when the item is below ``mrr_depth``),
        plus ``n_queries``.
    """
    targets = list(queries)
    if not targets:
        raise ValueError("no queries to evaluate")
    ranked = index.search([queries[item_id] for item_id in targets], k=max(k, mrr_depth))
    hits, reciprocal = 0, 0.0
    for item_id, results in zip(targets, ranked):
        if item_id in results[:k]:
            hits += 1
        if item_id in results:
            reciprocal += 1.0 / (results.index(item_id) + 1)
    return {f"recall@{k}": hits / len(targets), "mrr": reciprocal / len(targets),
            "n_queries": float(len(targets))}


def search_lift(listings: Mapping[str, Mapping], *, cold_items: Sequence[str], real_texts: Mapping[str, str],
                queries: Mapping[str, str], enriched_texts: Mapping[str, Mapping[str, str]],
                k: int = 10) -> dict[str, dict[str, float]]:
    """Compare retrieval of cold items across index variants.

    Every variant indexes all items. Warm items carry their real text; cold items
    carry no text (``"raw"``) or the text of a variant in ``enriched_texts``.

    Parameters
    ----------
    listings : mapping
        item_id to listing dict (title, brand, category).
    cold_items : sequence of str
        Items whose real text is withheld.
    real_texts : mapping
        item_id to real text, used for warm items.
    queries : mapping
        Cold item_id to its query (see :func:`keyword_queries`).
    enriched_texts : mapping
        Variant name to (cold item_id to text), e.g. ``{"synthetic": ..., "real": ...}``.
    k : int, default 10

    Returns
    -------
    dict
        Variant name (``"raw"`` first) to :func:`retrieval_metrics`.
    """
    cold = set(cold_items)
    warm_documents = {item_id: listing_document(listing, None if item_id in cold else real_texts.get(item_id))
                      for item_id, listing in listings.items()}
    variants = {"raw": {}} | dict(enriched_texts)
    results = {}
    for name, texts in variants.items():
        documents = dict(warm_documents)
        for item_id in cold:
            documents[item_id] = listing_document(listings[item_id], texts.get(item_id))
        results[name] = retrieval_metrics(ListingIndex(documents), queries, k=k)
        logger.info("search variant=%s %s", name, results[name])
    return results
