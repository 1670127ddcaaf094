"""BLEU, ROUGE-L, distinct-n and embedding distances for generated text."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.text_metrics import (
    corpus_bleu,
    distinct_n,
    embedding_distances,
    metric_tokens,
    rouge_l,
)


def test_metric_tokens_chinese_characters():
    assert metric_tokens("白色T恤 size 42", "zh") == ["白", "色", "t", "恤", "size", "42"]
    assert metric_tokens("A white, cotton T-shirt", "en") == ["a", "white", "cotton", "t", "shirt"]


@pytest.mark.parametrize("language,text", [("en", "a white cotton shirt with long sleeves"), ("zh", "白色的棉质长袖衬衫")])
def test_bleu_identical_is_100(language, text):
    assert corpus_bleu([text], [text], language=language) == pytest.approx(100.0)


def test_bleu_orders_closer_hypothesis_higher():
    reference = ["a white cotton shirt with long sleeves and a spread collar"]
    close = corpus_bleu(["a white cotton shirt with long sleeves and a round collar"], reference, language="en")
    far = corpus_bleu(["a red leather wallet"], reference, language="en")
    assert close > far


def test_bleu_rejects_length_mismatch():
    with pytest.raises(ValueError, match="2 hypotheses and 1 references"):
        corpus_bleu(["a", "b"], ["a"], language="en")


def test_rouge_l_values():
    assert rouge_l("the cat sat", "the cat sat", language="en") == pytest.approx(1.0)
    # LCS "the sat" (2 of 3 and 2 of 4 tokens): F1 = 2 * (2/3) * (1/2) / (2/3 + 1/2).
    assert rouge_l("the dog sat", "the cat has sat", language="en") == pytest.approx(4 / 7)
    assert rouge_l("", "the cat", language="en") == 0.0
    assert rouge_l("简约外套", "简约的牛仔外套", language="zh") == pytest.approx(2 * 1.0 * (4 / 7) / (1 + 4 / 7))


def test_distinct_n():
    assert distinct_n(["a b a b"], 1, language="en") == pytest.approx(0.5)
    assert distinct_n(["a b a b"], 2, language="en") == pytest.approx(2 / 3)
    assert distinct_n(["好好好"], 1, language="zh") == pytest.approx(1 / 3)
    assert distinct_n([], 2, language="en") == 0.0


def test_embedding_distances_identical_sets():
    rows = np.eye(3, dtype=np.float32)
    distances = embedding_distances(rows, rows)
    assert distances["centroid_cosine_distance"] == pytest.approx(0.0, abs=1e-6)
    assert distances["paired_cosine_similarity"] == pytest.approx(1.0)


def test_embedding_distances_orthogonal_sets():
    first = np.array([[1.0, 0.0]], dtype=np.float32)
    second = np.array([[0.0, 1.0]], dtype=np.float32)
    distances = embedding_distances(first, second)
    assert distances["centroid_cosine_distance"] == pytest.approx(1.0)
    assert distances["paired_cosine_similarity"] == pytest.approx(0.0)
    assert math.isnan(embedding_distances(first, np.zeros((0, 2)))["paired_cosine_similarity"])


def test_embed_texts_puts_paraphrases_closer():
    from models.text_metrics import embed_texts

    vectors = embed_texts(["白色牛仔外套", "白色的牛仔夹克", "不锈钢保温杯",
                           "white denim jacket", "a white jean jacket", "stainless steel thermos"])
    assert vectors.shape == (6, 384)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert vectors[3] @ vectors[4] > vectors[3] @ vectors[5]
