"""Rebuild a SentencePiece-BPE tokenizer (Gemma 3) from the vocabulary stored in a GGUF file.

transformers 5.17 turns the GGUF vocabulary of Gemma into a Unigram model that
uses the GGUF scores as log-probabilities. For Gemma 3 those scores are negative
merge ranks (``-rank``), not log-probabilities, so the Unigram model prefers
single characters: "This simple denim jacket" becomes about 25 tokens and the
model's perplexity on plain English rises into the tens of thousands. This
module builds the BPE model instead, with merges derived from the vocabulary
as transformers does for SentencePiece BPE files: a piece that splits into two
known pieces gives a merge, ranked by the score of the merged piece.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# GGUF token types (llama.cpp): 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte.
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4
SPACE_PIECE = "\u2581"


def _read_string_array(field) -> list[str]:
    return [bytes(field.parts[index]).decode("utf-8") for index in field.data]


def _read_scalar_array(field) -> list:
    return [field.parts[index][0] for index in field.data]


def _read_int(fields, key: str) -> int | None:
    field = fields.get(key)
    return int(field.parts[field.data[0]][0]) if field is not None and field.data else None


def bpe_merges(pieces: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """Derive BPE merges from a SentencePiece vocabulary: higher-scored merged pieces merge first."""
    index = {piece: position for position, piece in enumerate(pieces)}
    ranked: list[tuple[float, int, int, str, str]] = []
    for piece, score in zip(pieces, scores):
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in index and right in index:
                ranked.append((-float(score), index[left], index[right], left, right))
    ranked.sort()
    return [(left, right) for _, _, _, left, right in ranked]


def load_gemma_gguf_tokenizer(gguf_path: Path):
    """Build a ``PreTrainedTokenizerFast`` with a byte-fallback BPE model from a Gemma GGUF file.

    Control tokens (``<bos>``, ``<start_of_turn>``, ...) become special added
    tokens and user-defined pieces (``\\n``, HTML tags) become plain added
    tokens, so neither is split, as in SentencePiece.
    """
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    fields = gguf.GGUFReader(str(gguf_path)).fields
    pieces = _read_string_array(fields["tokenizer.ggml.tokens"])
    scores = _read_scalar_array(fields["tokenizer.ggml.scores"])
    token_types = [int(value) for value in _read_scalar_array(fields["tokenizer.ggml.token_type"])]
    # llama.cpp stores whitespace-only pieces with spaces; the SentencePiece model uses U+2581.
    pieces = [piece.replace(" ", SPACE_PIECE) if piece.strip(" ") == "" and " " in piece else piece
              for piece in pieces]

    # Control tokens are never the result of a merge.
    merge_scores = [-1e30 if kind == TOKEN_TYPE_CONTROL else score for score, kind in zip(scores, token_types)]
    merges = bpe_merges(pieces, merge_scores)
    vocab = {piece: position for position, piece in enumerate(pieces)}
    unk_id = _read_int(fields, "tokenizer.ggml.unknown_token_id")
    model = BPE(vocab=vocab, merges=merges, unk_token=pieces[unk_id] if unk_id is not None else None,
                byte_fallback=True, fuse_unk=True)
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Replace(" ", SPACE_PIECE)
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace(SPACE_PIECE, " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tokenizer.add_special_tokens([
        AddedToken(piece, special=True, normalized=False)
        for piece, kind in zip(pieces, token_types) if kind == TOKEN_TYPE_CONTROL
    ])
    # Whitespace-only pieces stay with the BPE model, which represents spaces as U+2581.
    tokenizer.add_tokens([
        AddedToken(piece, special=False, normalized=False)
        for piece, kind in zip(pieces, token_types)
        if kind == TOKEN_TYPE_USER_DEFINED and piece.strip(SPACE_PIECE)
    ])

    def special(key: str) -> str | None:
        token_id = _read_int(fields, key)
        return pieces[token_id] if token_id is not None else None

    bos_id = _read_int(fields, "tokenizer.ggml.bos_token_id")
    add_bos = fields.get("tokenizer.ggml.add_bos_token")
    if bos_id is not None and add_bos is not None and bool(add_bos.parts[add_bos.data[0]][0]):
        bos = pieces[bos_id]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=special("tokenizer.ggml.bos_token_id"),
        eos_token=special("tokenizer.ggml.eos_token_id"),
        unk_token=special("tokenizer.ggml.unknown_token_id"),
        pad_token=special("tokenizer.ggml.padding_token_id"),
        clean_up_tokenization_spaces=False,
    )
    logger.info("built BPE tokenizer from %s: %d pieces, %d merges", gguf_path.name, len(pieces), len(merges))
    return wrapped
