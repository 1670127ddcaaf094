"""Decoding options of the ONNX generator: seeds, batching, n-gram blocking, stop sequences, settings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from tests.generator_fixtures import (  # noqa: F401
    LISTINGS,
    smollm2_tokenizer_dir,
    tiny_checkpoint_dir,
    tiny_generator,
    tiny_onnx_dir,
    tiny_torch_model,
)

from export.decoding import DecodingConfig, StopSequenceMatcher, cut_at_stop
from export.sampling import NoRepeatNGramIndex
from models.prompts import description_prompt

PROMPTS = [description_prompt(listing) for listing in LISTINGS] + ["Hello", "A pair of running shoes"]
SAMPLING = {"max_new_tokens": 12, "temperature": 1.0, "top_k": 200, "top_p": 0.95}


def _prompt_tokens(generator, prompt):
    return generator.tokenizer(prompt, add_special_tokens=False)["input_ids"]


def _repeated_ngrams(tokens, size):
    """Return the n-grams that occur more than once in ``tokens``."""
    counts = {}
    for start in range(len(tokens) - size + 1):
        ngram = tuple(tokens[start:start + size])
        counts[ngram] = counts.get(ngram, 0) + 1
    return [ngram for ngram, count in counts.items() if count > 1]


def _ngrams_repeated_by_output(prompt, output, size):
    """Return the n-grams ending in ``output`` that occurred earlier in ``prompt + output``."""
    sequence = list(prompt) + list(output)
    earlier = set()
    repeated = []
    for end in range(size, len(sequence) + 1):
        ngram = tuple(sequence[end - size:end])
        if end > len(prompt) and ngram in earlier:
            repeated.append(ngram)
        earlier.add(ngram)
    return repeated


def test_sampling_same_seed_same_text(tiny_generator):
    first = tiny_generator.generate(PROMPTS, seed=11, **SAMPLING)
    second = tiny_generator.generate(PROMPTS, seed=11, **SAMPLING)
    other = tiny_generator.generate(PROMPTS, seed=12, **SAMPLING)
    assert first == second
    assert any(text_11 != text_12 for text_11, text_12 in zip(first, other))


def test_seed_list_equals_single_calls(tiny_generator):
    seeds = [5, 6, 7, 8, 9]
    batched = tiny_generator.generate(PROMPTS, seed=seeds, **SAMPLING)
    singles = [tiny_generator.generate([prompt], seed=seed, **SAMPLING)[0] for prompt, seed in zip(PROMPTS, seeds)]
    assert batched == singles
    assert len(set(batched)) > 1


def test_int_seed_equals_repeated_seed_list(tiny_generator):
    from_int = tiny_generator.generate(PROMPTS, seed=5, **SAMPLING)
    from_list = tiny_generator.generate(PROMPTS, seed=[5] * len(PROMPTS), **SAMPLING)
    assert from_int == from_list


def test_seed_list_invalid(tiny_generator):
    with pytest.raises(ValueError, match="seed list of length 2 for 5 prompts"):
        tiny_generator.generate(PROMPTS, seed=[1, 2], **SAMPLING)
    with pytest.raises(ValueError, match=r"seed\[1\]"):
        tiny_generator.generate(PROMPTS[:2], seed=[1, "2"], **SAMPLING)
    with pytest.raises(ValueError, match="invalid seed 'abc'"):
        tiny_generator.generate(PROMPTS[:2], seed="abc", **SAMPLING)
    with pytest.raises(ValueError, match="invalid seed True"):
        tiny_generator.generate(PROMPTS[:2], seed=True, **SAMPLING)


def test_deterministic_requires_seed_for_sampling(tiny_generator):
    with pytest.raises(ValueError, match="deterministic sampling needs a seed"):
        tiny_generator.generate(PROMPTS, deterministic=True, **SAMPLING)
    with pytest.raises(ValueError, match=r"prompts \[1\] have none"):
        tiny_generator.generate(PROMPTS[:2], seed=[3, None], deterministic=True, **SAMPLING)

    seeded = tiny_generator.generate(PROMPTS[:2], seed=[3, 4], deterministic=True, **SAMPLING)
    assert seeded == tiny_generator.generate(PROMPTS[:2], seed=[3, 4], **SAMPLING)
    greedy = tiny_generator.generate(PROMPTS[:2], max_new_tokens=6, deterministic=True)
    assert greedy == tiny_generator.generate(PROMPTS[:2], max_new_tokens=6)


@pytest.mark.parametrize(
    "settings",
    [{}, {"no_repeat_ngram_size": 2}, {"repetition_penalty": 1.3}, {"stop_sequences": ("ing",)}],
    ids=["plain", "no-repeat-2", "penalty", "stop"],
)
def test_batch_greedy_equals_single_left_padded(tiny_generator, settings):
    lengths = [len(_prompt_tokens(tiny_generator, prompt)) for prompt in PROMPTS]
    assert len(set(lengths)) > 1, "prompts need different lengths to exercise left padding"

    batched = tiny_generator.generate(PROMPTS, max_new_tokens=20, **settings)
    singles = [tiny_generator.generate([prompt], max_new_tokens=20, **settings)[0] for prompt in PROMPTS]
    assert batched == singles
    assert any(batched)


def test_batch_logits_close_to_single(tiny_generator):
    # Sampled texts match across batch shapes only while the logits barely differ.
    # Measured on this tiny model (onnxruntime 1.31.1, CPU provider, one intra-op thread,
    # AMD EPYC): at most 2.3e-6. Comparing generate(PROMPTS, seed=s) with one call per
    # prompt for seeds 0..39 (24 tokens, temperature 1, top_p 0.95) gave 200 of 200
    # identical texts.
    input_ids, attention_mask = tiny_generator.encode_left_padded(PROMPTS, max_prompt_tokens=512)
    batched = tiny_generator.logits(input_ids, attention_mask)
    for row, prompt in enumerate(PROMPTS):
        single_ids, single_mask = tiny_generator.encode_left_padded([prompt], max_prompt_tokens=512)
        single = tiny_generator.logits(single_ids, single_mask)[0]
        length = single.shape[0]
        assert np.abs(batched[row, -length:] - single).max() < 1e-4, f"prompt {row}"


def test_no_repeat_ngram_blocks_repeats(tiny_generator):
    size = 3
    baseline = tiny_generator.generate_ids(PROMPTS, max_new_tokens=32)
    assert any(_repeated_ngrams(tokens, size) for tokens in baseline), "the baseline must repeat to test blocking"

    blocked = tiny_generator.generate_ids(
        PROMPTS, config=DecodingConfig(max_new_tokens=32, no_repeat_ngram_size=size)
    )
    for prompt, tokens in zip(PROMPTS, blocked):
        assert _repeated_ngrams(tokens, size) == []
        assert _ngrams_repeated_by_output(_prompt_tokens(tiny_generator, prompt), tokens, size) == []
    assert any(len(tokens) >= 16 for tokens in blocked)


def test_no_repeat_ngram_size_one_blocks_prompt_tokens(tiny_generator):
    blocked = tiny_generator.generate_ids(
        PROMPTS, config=DecodingConfig(max_new_tokens=16, no_repeat_ngram_size=1)
    )
    for prompt, tokens in zip(PROMPTS, blocked):
        assert len(set(tokens)) == len(tokens)
        assert not set(tokens) & set(_prompt_tokens(tiny_generator, prompt))


def test_no_repeat_ngram_matches_torch_generate(tiny_generator, tiny_torch_model):
    tokenizer = tiny_generator.tokenizer
    config = DecodingConfig(max_new_tokens=24, no_repeat_ngram_size=3)
    for prompt in PROMPTS:
        encoded = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            output = tiny_torch_model.generate(
                **encoded, max_new_tokens=24, do_sample=False, no_repeat_ngram_size=3,
                pad_token_id=tokenizer.pad_token_id,
            )
        expected = output[0, encoded["input_ids"].shape[1]:].tolist()
        if expected and expected[-1] == tokenizer.eos_token_id:
            expected = expected[:-1]
        actual = tiny_generator.generate_ids([prompt], config=config)[0]
        assert actual == expected, f"tokens differ for prompt {prompt[:40]!r}"


@pytest.mark.parametrize("size", [1, 2, 4])
def test_ngram_index_matches_transformers_processor(size):
    from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

    rng = np.random.default_rng(size)
    vocab = 6
    sequences = [rng.integers(0, vocab, length).tolist() for length in (0, 1, 3, 9, 17)]
    index = NoRepeatNGramIndex(size=size, sequences=[tokens[:2] for tokens in sequences])
    for row, tokens in enumerate(sequences):
        for token in tokens[2:]:
            index.append(row, token)

    processor = NoRepeatNGramLogitsProcessor(size)
    for row, tokens in enumerate(sequences):
        logits = np.zeros((len(sequences), vocab), dtype=np.float32)
        index.ban_repeats(logits, [row])
        expected = processor(torch.tensor([tokens], dtype=torch.long), torch.zeros((1, vocab)))[0].numpy()
        assert np.array_equal(np.isinf(logits[row]), np.isinf(expected)), f"row {row}: {tokens}"


def _first_new_piece(tokenizer, tokens, *, start, span):
    """Return ``(index, piece)``: the first text of tokens[index:index + span] that its last token completes."""
    for index in range(start, len(tokens) - span + 1):
        piece = tokenizer.decode(tokens[index:index + span], skip_special_tokens=True)
        before_last = tokenizer.decode(tokens[:index + span - 1], skip_special_tokens=True)
        if piece.strip() and piece not in before_last:
            return index, piece
    raise AssertionError(f"no new text of {span} tokens after token {start} in {tokens}")


@pytest.mark.parametrize("span", [1, 2])
def test_stop_sequence_cuts_and_stops_early(tiny_generator, span):
    tokenizer = tiny_generator.tokenizer
    prompt = PROMPTS[3]
    max_new_tokens = 24
    baseline = tiny_generator.generate_ids([prompt], max_new_tokens=max_new_tokens)[0]
    assert len(baseline) == max_new_tokens, "the baseline must run to the limit to show an early stop"
    index, stop = _first_new_piece(tokenizer, baseline, start=3, span=span)
    stop_token = index + span - 1

    steps = []
    config = DecodingConfig(max_new_tokens=max_new_tokens, stop_sequences=(stop,))
    stopped = tiny_generator.generate_ids([prompt], config=config, step_callback=steps.append)[0]
    assert stopped == baseline[:stop_token + 1]
    assert len(steps) == stop_token + 1
    assert len(steps) < max_new_tokens

    text = tiny_generator.generate([prompt], max_new_tokens=max_new_tokens, stop_sequences=[stop])[0]
    untrimmed = tokenizer.decode(baseline[:stop_token + 1], skip_special_tokens=True)
    assert text == untrimmed[:untrimmed.index(stop)]
    assert stop not in text


def test_stop_sequences_in_batch_cut_each_row(tiny_generator):
    tokenizer = tiny_generator.tokenizer
    baseline_ids = tiny_generator.generate_ids(PROMPTS, max_new_tokens=24)
    baseline_texts = tiny_generator.generate(PROMPTS, max_new_tokens=24)
    _, first_stop = _first_new_piece(tokenizer, baseline_ids[0], start=2, span=1)
    _, second_stop = _first_new_piece(tokenizer, baseline_ids[4], start=2, span=1)
    stops = (first_stop, second_stop)

    texts = tiny_generator.generate(PROMPTS, max_new_tokens=24, stop_sequences=stops)
    assert texts == [cut_at_stop(text, stops) for text in baseline_texts]
    assert texts[0] != baseline_texts[0]
    assert texts[4] != baseline_texts[4]


def test_stop_matcher_tail_equals_full_decode(tiny_generator):
    tokenizer = tiny_generator.tokenizer
    text = "Price: 10 € only.\nShips fast — 日本 delivery, naïve café ok"
    tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
    special = tokenizer.all_special_ids[0]
    tokens = tokens[:5] + [special, special] + tokens[5:]
    # The decoding loop checks after every token, so the tail must agree with the
    # full text up to and including the token that completes the first stop sequence.
    for stops in [("€ only",), ("\n",), (" 日本",), ("café", "fast —"), ("ok",)]:
        matcher = StopSequenceMatcher(tokenizer=tokenizer, stop_sequences=stops)
        found = False
        for end in range(1, len(tokens) + 1):
            full = tokenizer.decode(tokens[:end], skip_special_tokens=True)
            found = any(stop in full for stop in stops)
            assert matcher.tail_contains_stop(tokens[:end]) == found, f"{stops} after {end} tokens: {full!r}"
            if found:
                break
        assert found, f"{stops} not in {text!r}"


def test_cut_at_stop_uses_first_occurrence():
    assert cut_at_stop("abc. def\nghi", ("\n", ".")) == "abc"
    assert cut_at_stop("abc def", ("\n",)) == "abc def"
    assert cut_at_stop("\nabc", ("\n",)) == ""


def test_config_equals_keyword_arguments(tiny_generator):
    settings = {**SAMPLING, "no_repeat_ngram_size": 2, "stop_sequences": ("e",)}
    from_config = tiny_generator.generate(PROMPTS, seed=4, config=DecodingConfig(**settings))
    from_keywords = tiny_generator.generate(PROMPTS, seed=4, **settings)
    assert from_config == from_keywords

    ids_from_config = tiny_generator.generate_ids(PROMPTS, seed=4, config=DecodingConfig(**SAMPLING))
    ids_from_keywords = tiny_generator.generate_ids(PROMPTS, seed=4, **SAMPLING)
    assert ids_from_config == ids_from_keywords


def test_config_conflicts_with_keywords(tiny_generator):
    config = DecodingConfig(**SAMPLING)
    with pytest.raises(ValueError, match=r"\['max_new_tokens', 'top_p'\] were passed together with config"):
        tiny_generator.generate(PROMPTS, max_new_tokens=5, top_p=0.5, config=config)
    with pytest.raises(ValueError, match=r"\['min_new_tokens'\] were passed together with config"):
        tiny_generator.generate_ids(PROMPTS, min_new_tokens=2, config=config)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_new_tokens": 0}, r"invalid max_new_tokens 0: expected >= 1"),
        ({"min_new_tokens": -1}, r"invalid min_new_tokens -1"),
        ({"max_new_tokens": 4, "min_new_tokens": 5}, r"invalid min_new_tokens 5: expected 0\.\.max_new_tokens \(4\)"),
        ({"temperature": -0.5}, r"invalid temperature -0\.5"),
        ({"temperature": float("nan")}, r"invalid temperature nan"),
        ({"top_k": -1}, r"invalid top_k -1"),
        ({"top_p": 0.0}, r"invalid top_p 0\.0: expected 0 < top_p <= 1"),
        ({"top_p": 1.5}, r"invalid top_p 1\.5"),
        ({"repetition_penalty": 0.0}, r"invalid repetition_penalty 0\.0: expected > 0"),
        ({"no_repeat_ngram_size": -2}, r"invalid no_repeat_ngram_size -2: expected >= 0"),
        ({"stop_sequences": "\n"}, r"invalid stop_sequences '\\n': expected a tuple of strings"),
        ({"stop_sequences": ("ok", "")}, r"invalid stop_sequences entries \[''\]"),
        ({"stop_sequences": None}, r"invalid stop_sequences None"),
        ({"stop_sequences": (".", 3)}, r"invalid stop_sequences entries \[3\]"),
        ({"deterministic": "yes"}, r"invalid deterministic 'yes'"),
    ],
)
def test_config_rejects_invalid_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        DecodingConfig(**settings)


def test_config_is_frozen_and_keyword_only():
    config = DecodingConfig(stop_sequences=["a", "b"])
    assert config.stop_sequences == ("a", "b")
    assert config.max_new_tokens == 64
    assert not config.sampling
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.temperature = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        DecodingConfig(32)  # type: ignore[misc]


def test_generate_validates_before_empty_prompts(tiny_generator):
    assert tiny_generator.generate([]) == []
    with pytest.raises(ValueError, match="no_repeat_ngram_size"):
        tiny_generator.generate([], no_repeat_ngram_size=-1)
