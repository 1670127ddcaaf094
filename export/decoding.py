"""Decoding settings and the token-by-token decoding loop of the ONNX generator.

:class:`DecodingConfig` stores and validates the settings of one ``generate`` call.
:func:`decode_tokens` runs the prefill and the following decode steps through a
step function that :class:`export.runtime.OnnxGenerator` provides, so this module
does not depend on onnxruntime. Rows stop independently at EOS, at a stop
sequence or at ``max_new_tokens``.
"""

from __future__ import annotations

import dataclasses
import numbers
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from export.sampling import NoRepeatNGramIndex, apply_repetition_penalty, sample_tokens

SeedSetting = int | Sequence[int | None] | None
# Runs one decoder call on (step ids, attention mask, position ids, past) and
# returns float32 logits (B, 1, V) with the present cache.
StepFunction = Callable[[np.ndarray, np.ndarray, np.ndarray, list[Any]], tuple[np.ndarray, list[Any]]]


@dataclass(frozen=True, kw_only=True)
class DecodingConfig:
    """Settings of one generation request; invalid values raise ValueError on construction.

    Parameters
    ----------
    max_new_tokens : int
        Maximum generated tokens per prompt, at least 1; a row stops earlier at EOS.
    min_new_tokens : int
        EOS is suppressed until a row has this many tokens (0..max_new_tokens), as in
        ``transformers`` generate. Stop sequences still end a row earlier.
    temperature : float
        0 selects greedy decoding; above 0 samples from ``softmax(logits / temperature)``.
    top_k : int
        When above 0, sample only among the ``top_k`` most likely tokens.
    top_p : float
        Nucleus sampling, in (0, 1]: sample among the most likely tokens whose total
        probability reaches ``top_p``.
    repetition_penalty : float
        Penalty above 0 for tokens already in the prompt or the output (CTRL style);
        1 is off.
    no_repeat_ngram_size : int
        When above 0, a token that would repeat an n-gram of this size already in the
        row's prompt or output is blocked, as ``transformers``' ``no_repeat_ngram_size``.
    stop_sequences : tuple of str
        A row stops as soon as its decoded output contains one of these strings, and
        ``generate`` cuts the text before the first one. A list is stored as a tuple.
    deterministic : bool
        When True, sampling (temperature above 0) requires a seed for every prompt.
        NOTE: onnxruntime's ``SessionOptions.use_deterministic_compute`` is not set,
        because ``export.session.create_session`` has no option for it yet, so CUDA
        kernels may still vary between runs. The CPU provider gave identical logits
        with and without it on the tiny test model.
    """

    max_new_tokens: int = 64
    min_new_tokens: int = 0
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    stop_sequences: tuple[str, ...] = ()
    deterministic: bool = False

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"invalid max_new_tokens {self.max_new_tokens}: expected >= 1")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(
                f"invalid min_new_tokens {self.min_new_tokens}: "
                f"expected 0..max_new_tokens ({self.max_new_tokens})"
            )

        if not self.temperature >= 0:
            raise ValueError(f"invalid temperature {self.temperature}: expected >= 0 (0 selects greedy decoding)")
        if self.top_k < 0:
            raise ValueError(f"invalid top_k {self.top_k}: expected >= 0 (0 turns top-k filtering off)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"invalid top_p {self.top_p}: expected 0 < top_p <= 1 (1 turns nucleus sampling off)")
        if not self.repetition_penalty > 0:
            raise ValueError(
                f"invalid repetition_penalty {self.repetition_penalty}: expected > 0 (1 turns the penalty off)"
            )
        if self.no_repeat_ngram_size < 0:
            raise ValueError(
                f"invalid no_repeat_ngram_size {self.no_repeat_ngram_size}: expected >= 0 (0 turns blocking off)"
            )

        # A bare string would otherwise be split into one stop sequence per character.
        if isinstance(self.stop_sequences, str) or not isinstance(self.stop_sequences, Sequence):
            raise ValueError(
                f"invalid stop_sequences {self.stop_sequences!r}: expected a tuple of strings, such as ('\\n',)"
            )
        stop_sequences = tuple(self.stop_sequences)
        invalid = [stop for stop in stop_sequences if not isinstance(stop, str) or not stop]
        if invalid:
            raise ValueError(f"invalid stop_sequences entries {invalid!r}: expected non-empty strings")
        object.__setattr__(self, "stop_sequences", stop_sequences)

        if not isinstance(self.deterministic, bool):
            raise ValueError(f"invalid deterministic {self.deterministic!r}: expected True or False")

    @property
    def sampling(self) -> bool:
        """Whether tokens are sampled (temperature above 0) rather than chosen greedily."""
        return self.temperature > 0


def resolve_config(config: DecodingConfig | None, **settings: Any) -> DecodingConfig:
    """Return ``config``, or a new config from ``settings`` when ``config`` is None.

    ``settings`` are the keyword arguments of ``generate``, named like the fields, and
    are validated in both cases. A setting that differs from the field default next
    to a ``config`` raises ValueError, because one of the two would be ignored.
    """
    requested = DecodingConfig(**settings)
    if config is None:
        return requested
    default = DecodingConfig()
    conflicting = [name for name in settings if getattr(requested, name) != getattr(default, name)]
    if conflicting:
        raise ValueError(
            f"settings {conflicting} were passed together with config; "
            "set them in the DecodingConfig or pass them without config"
        )
    return config


def _check_seed_value(value: Any, *, name: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"invalid {name} {value!r}: expected an int or None")


def row_generators(prompts: Sequence[str], *, seed: SeedSetting, config: DecodingConfig) -> list[np.random.Generator]:
    """Create one random generator per prompt from ``seed``.

    An int seed is mixed with each prompt's text (CRC-32 of its UTF-8 bytes), so a
    prompt draws the same numbers alone or in a batch and equal seeds still give
    different prompts different streams. A sequence gives one entry per prompt and
    each int entry is mixed the same way, so ``seed=[a, b]`` for ``[p, q]`` matches
    ``seed=a`` for ``[p]`` and ``seed=b`` for ``[q]``. None, alone or as an entry,
    draws fresh entropy.

    Raises
    ------
    ValueError
        When the sequence length differs from the prompt count, an entry is not an
        int or None, or ``config.deterministic`` is set for sampling without a seed.
    """
    if seed is None or isinstance(seed, numbers.Integral):
        _check_seed_value(seed, name="seed")
        seeds: list[int | None] = [seed] * len(prompts)
    elif isinstance(seed, Sequence) and not isinstance(seed, (str, bytes)):
        seeds = list(seed)
        if len(seeds) != len(prompts):
            raise ValueError(
                f"invalid seed list of length {len(seeds)} for {len(prompts)} prompts: "
                "pass one seed (or None) per prompt, or a single int"
            )
        for index, value in enumerate(seeds):
            _check_seed_value(value, name=f"seed[{index}]")
    else:
        raise ValueError(f"invalid seed {seed!r}: expected an int, None or a sequence of ints/None per prompt")

    if config.deterministic and config.sampling:
        missing = [index for index, value in enumerate(seeds) if value is None]
        if missing:
            raise ValueError(
                f"deterministic sampling needs a seed for every prompt, but prompts {missing} have none: "
                "pass seed=<int> or one int per prompt, or set temperature=0 for greedy decoding"
            )
    return [
        np.random.default_rng([int(value) % 2**64, zlib.crc32(prompt.encode("utf-8"))]) if value is not None
        else np.random.default_rng()
        for prompt, value in zip(prompts, seeds)
    ]


def left_pad(token_lists: Sequence[Sequence[int]], *, pad_token_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad token lists into ``(input_ids, attention_mask)`` (B, T), T being the longest list."""
    length = max(len(tokens) for tokens in token_lists)
    if length == 0:
        raise ValueError("all prompts are empty; pass at least one non-empty prompt")
    input_ids = np.full((len(token_lists), length), pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((len(token_lists), length), dtype=np.int64)
    for row, tokens in enumerate(token_lists):
        if tokens:
            input_ids[row, length - len(tokens):] = tokens
            attention_mask[row, length - len(tokens):] = 1
    return input_ids, attention_mask


class Detokenizer(Protocol):
    """Tokenizer interface that :class:`StopSequenceMatcher` uses, as ``transformers`` tokenizers provide."""

    all_special_ids: list[int]

    def decode(self, token_ids: list[int], *, skip_special_tokens: bool) -> str: ...


class StopSequenceMatcher:
    """Stop-sequence check on the decoded output of a row that decodes only its last tokens.

    In a byte-level BPE vocabulary such as SmolLM2's, every token that is not special
    decodes to at least one byte. So when a token completes a stop string of B UTF-8
    bytes, the string lies within the last B such tokens. The window keeps one token
    more because some tokenizers drop the leading space of the first token of a
    decode. Special tokens decode to nothing and do not count. A missed match only
    delays the stop, because ``generate`` cuts the full text as well.
    """

    def __init__(self, *, tokenizer: Detokenizer, stop_sequences: Sequence[str]):
        if not stop_sequences:
            raise ValueError("stop_sequences is empty; pass at least one non-empty string")
        self.tokenizer = tokenizer
        self.stop_sequences = tuple(stop_sequences)
        self.special_ids = set(tokenizer.all_special_ids)
        self.window = max(len(stop.encode("utf-8")) for stop in self.stop_sequences) + 1

    def tail_contains_stop(self, tokens: Sequence[int]) -> bool:
        """Return whether the decoded last tokens of ``tokens`` contain a stop sequence."""
        tail: list[int] = []
        counted = 0
        for token in reversed(tokens):
            tail.append(token)
            if token not in self.special_ids:
                counted += 1
                if counted == self.window:
                    break
        text = self.tokenizer.decode(tail[::-1], skip_special_tokens=True)
        return any(stop in text for stop in self.stop_sequences)


def cut_at_stop(text: str, stop_sequences: Sequence[str]) -> str:
    """Return ``text`` up to the first occurrence of any stop sequence, or unchanged without one."""
    positions = [position for position in (text.find(stop) for stop in stop_sequences) if position >= 0]
    return text[:min(positions)] if positions else text


def decode_tokens(
    input_ids: np.ndarray,
    prompt_mask: np.ndarray,
    generators: list[np.random.Generator],
    *,
    config: DecodingConfig,
    run_step: StepFunction,
    past: list[Any],
    eos_token_ids: set[int],
    pad_token_id: int,
    stop_matcher: StopSequenceMatcher | None = None,
    step_callback: Callable[[int], None] | None = None,
) -> list[list[int]]:
    """Run prefill and decode steps on left-padded ids (B, T) until every row has EOS, a stop sequence or the limit.

    ``past`` is the empty cache for the batch. Returned rows leave out the final EOS
    but keep the tokens that completed a stop sequence. The caller serialises calls
    to ``run_step`` when the session is shared.
    """
    max_new_tokens = config.max_new_tokens
    batch, prompt_length = input_ids.shape
    prompt_tokens = [row[mask == 1].tolist() for row, mask in zip(input_ids, prompt_mask)]
    seen = [set(tokens) for tokens in prompt_tokens]
    ngrams = None
    if config.no_repeat_ngram_size:
        ngrams = NoRepeatNGramIndex(size=config.no_repeat_ngram_size, sequences=prompt_tokens)
    eos_index = np.fromiter(eos_token_ids, dtype=np.int64)
    generated: list[list[int]] = [[] for _ in range(batch)]
    finished = np.zeros(batch, dtype=bool)
    # The mask for every step is allocated once: the prompt mask, then ones for new tokens.
    full_mask = np.ones((batch, prompt_length + max_new_tokens), dtype=np.int64)
    full_mask[:, :prompt_length] = prompt_mask
    position_ids = np.clip(np.cumsum(prompt_mask, axis=-1) - 1, 0, None)
    step_ids = input_ids

    for step in range(max_new_tokens):
        total_length = prompt_length + step
        logits, past = run_step(step_ids, full_mask[:, :total_length], position_ids, past)
        if step_callback is not None:
            step_callback(step)
        next_logits = np.array(logits[:, -1, :], dtype=np.float32)
        if step < config.min_new_tokens:
            next_logits[:, eos_index] = -np.inf
        if config.repetition_penalty != 1.0:
            apply_repetition_penalty(next_logits, seen, config.repetition_penalty)
        if ngrams is not None:
            ngrams.ban_repeats(next_logits, np.flatnonzero(~finished))
        if not config.sampling:
            next_tokens = next_logits.argmax(axis=-1)
        else:
            next_tokens = sample_tokens(
                next_logits, temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
                generators=generators,
            )
        next_tokens = np.where(finished, pad_token_id, next_tokens)
        for row in np.flatnonzero(~finished):
            token = int(next_tokens[row])
            if token in eos_token_ids:
                finished[row] = True
                continue
            generated[row].append(token)
            seen[row].add(token)
            if ngrams is not None:
                ngrams.append(row, token)
            if stop_matcher is not None and stop_matcher.tail_contains_stop(generated[row]):
                finished[row] = True
        if finished.all():
            break
        step_ids = next_tokens[:, None]
        position_ids = position_ids[:, -1:] + 1
    return generated
