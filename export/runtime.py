"""Batched text generation with an exported ONNX decoder and onnxruntime.

The decoder graphs come from :func:`export.onnx_export.export_decoder`. Prompts
are left-padded into one batch, the prompt is run once (prefill, projecting only
the last position to the vocabulary), and each following step feeds one token
per row together with the key/value cache that the previous step returned. The
cache is passed between steps as onnxruntime values through IO binding, so on
CUDA it stays on the device. The decoding loop and its settings are in
:mod:`export.decoding`.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.decoding import (
    DecodingConfig,
    SeedSetting,
    StopSequenceMatcher,
    cut_at_stop,
    decode_tokens,
    left_pad,
    resolve_config,
    row_generators,
)
from export.session import CPU_PROVIDER, CUDA_PROVIDER, create_session, cuda_driver_loadable
from models.prompts import prompt_token_ids

logger = logging.getLogger(__name__)

LEGACY_VARIANTS = {"fp32": {"file": "model.onnx", "dtype": "float32"}}


class OnnxGenerator:
    """Text generator backed by an exported ONNX decoder with a key/value cache.

    Parameters
    ----------
    model_dir : Path
        Directory written by ``export_decoder``: ``model.onnx`` and the other variants'
        graphs, ``manifest.json`` and tokenizer files.
    providers : sequence of str or None
        onnxruntime execution providers. None picks CUDA when it is usable, else CPU.
    intra_op_num_threads : int
        onnxruntime intra-op threads; 0 uses one per physical core.
    variant : str or None
        Graph variant from the manifest: ``"fp32"``, ``"int8"`` (CPU) or ``"fp16"``
        (CUDA). None picks fp16 when CUDA is requested and the export has it, else
        fp32. When an fp16 session falls back to CPU, fp32 is loaded instead, with
        a warning, unless fp16 was requested explicitly.

    Attributes
    ----------
    version : str
        ``generator_version`` from the manifest, with ``-<variant>`` appended for
        variants other than fp32 because their text differs.
    provider : str
        Execution provider that runs the graph.
    variant : str
        Graph variant that runs.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        providers: Sequence[str] | None = None,
        intra_op_num_threads: int = 0,
        variant: str | None = None,
    ):
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        manifest_path = self.model_dir / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{manifest_path} not found; export the model with "
                                    f"`shopsynth export-generator --model CHECKPOINT --output {model_dir}`")
        self.manifest = json.loads(manifest_path.read_text())
        self.num_layers: int = self.manifest["num_layers"]
        self.num_key_value_heads: int = self.manifest["num_key_value_heads"]
        self.head_dim: int = self.manifest["head_dim"]
        self.eos_token_ids = set(self.manifest["eos_token_ids"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        pad_id = self.manifest.get("pad_token_id")
        self.pad_token_id: int = pad_id if pad_id is not None else min(self.eos_token_ids)
        self._input_names = list(self.manifest["input_names"])
        self._past_names = [name for name in self._input_names if name.startswith("past_key_values.")]
        self._present_names = [name for name in self.manifest["output_names"] if name.startswith("present.")]
        # Exports before the num_logits_to_keep input always return logits for every position.
        self._has_logits_count = "num_logits_to_keep" in self._input_names
        self.variants: dict = self.manifest.get("variants") or LEGACY_VARIANTS

        # Without a CUDA driver the session falls back to CPU (create_session logs why), so
        # fp32 is chosen up front. fp16 on CPU runs through casts and is only for checks.
        cuda_requested = CUDA_PROVIDER in (providers if providers is not None else ort.get_available_providers())
        cuda_requested = cuda_requested and cuda_driver_loadable()
        if variant is None:
            variant = "fp16" if cuda_requested and "fp16" in self.variants else "fp32"
            explicit = False
        else:
            explicit = True
        self.variant = self._check_variant(variant)
        self.session = create_session(
            self._variant_path(self.variant), providers=providers, intra_op_num_threads=intra_op_num_threads
        )
        self.provider: str = self.session.get_providers()[0]
        if self.variant == "fp16" and self.provider != CUDA_PROVIDER and not explicit:
            logger.warning(
                "fp16 variant of %s needs CUDA but the session runs on %s; loading the fp32 variant instead",
                self.model_dir, self.provider,
            )
            self.variant = "fp32"
            self.session = create_session(
                self._variant_path("fp32"), providers=[CPU_PROVIDER], intra_op_num_threads=intra_op_num_threads
            )
            self.provider = self.session.get_providers()[0]
        self.cache_dtype = np.dtype(self.variants[self.variant].get("dtype", "float32"))
        generator_version = self.manifest["generator_version"]
        self.version: str = generator_version if self.variant == "fp32" else f"{generator_version}-{self.variant}"
        # NOTE: only the CPU path has been run. On CUDA the cache stays on the GPU through
        # IO binding, and that path, including zero-length past tensors, is untested.
        self._device = "cuda" if self.provider == CUDA_PROVIDER else "cpu"
        self._lock = threading.Lock()
        logger.info(
            "loaded generator %s (%s) from %s on %s (%d layers)",
            self.version, self.variant, self.model_dir, self.provider, self.num_layers,
        )

    def _check_variant(self, variant: str) -> str:
        if variant not in self.variants:
            raise ValueError(
                f"variant {variant!r} not found in {self.model_dir / 'manifest.json'}; "
                f"exported variants are {sorted(self.variants)}"
            )
        return variant

    def _variant_path(self, variant: str) -> Path:
        return self.model_dir / self.variants[variant]["file"]

    def _empty_past(self, batch: int) -> list[ort.OrtValue]:
        empty = np.zeros((batch, self.num_key_value_heads, 0, self.head_dim), dtype=self.cache_dtype)
        return [ort.OrtValue.ortvalue_from_numpy(empty, self._device, 0) for _ in self._past_names]

    def _run(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        past: list[ort.OrtValue],
        *,
        num_logits_to_keep: int,
    ) -> tuple[np.ndarray, list[ort.OrtValue]]:
        """Run one decoder call and return float32 logits (B, kept, V) and the present cache.

        The cache is bound as onnxruntime values on the execution device, so it is
        neither copied to host nor converted between steps.
        """
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", np.ascontiguousarray(input_ids, dtype=np.int64))
        binding.bind_cpu_input("attention_mask", np.ascontiguousarray(attention_mask, dtype=np.int64))
        binding.bind_cpu_input("position_ids", np.ascontiguousarray(position_ids, dtype=np.int64))
        if self._has_logits_count:
            binding.bind_cpu_input("num_logits_to_keep", np.array(num_logits_to_keep, dtype=np.int64))
        for name, value in zip(self._past_names, past):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in self._present_names:
            binding.bind_output(name, self._device)
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        logits = outputs[0].numpy()
        if not self._has_logits_count:
            logits = logits[:, -num_logits_to_keep:]
        return logits.astype(np.float32, copy=False), list(outputs[1:])

    def forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        *,
        position_ids: np.ndarray | None = None,
        past_key_values: list[np.ndarray] | None = None,
        num_logits_to_keep: int | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Run the decoder once and return ``(logits, present)`` as numpy arrays.

        ``input_ids`` and ``position_ids`` are (B, S), ``attention_mask`` is (B, P + S)
        and covers the past, and ``past_key_values`` alternates key and value arrays of
        shape (B, K, P, D) per layer. Position ids default to the count of earlier
        unmasked tokens. Logits (float32) cover the last ``num_logits_to_keep``
        positions, all S when None.
        """
        input_ids = np.asarray(input_ids, dtype=np.int64)
        attention_mask = np.asarray(attention_mask, dtype=np.int64)
        sequence = input_ids.shape[1]
        keep = sequence if num_logits_to_keep is None else num_logits_to_keep
        if not 1 <= keep <= sequence:
            raise ValueError(f"invalid num_logits_to_keep {keep}: expected 1..{sequence} (the input length)")
        if position_ids is None:
            position_ids = np.clip(np.cumsum(attention_mask, axis=-1) - 1, 0, None)[:, -sequence:]
        if past_key_values is None:
            past = self._empty_past(input_ids.shape[0])
        else:
            past = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value, dtype=self.cache_dtype),
                                                     self._device, 0)
                    for value in past_key_values]
        with self._lock:
            logits, present = self._run(input_ids, attention_mask, position_ids, past, num_logits_to_keep=keep)
        return logits, [value.numpy() for value in present]

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Return the logits (B, T, V) for a batch without a cache."""
        return self.forward(input_ids, attention_mask)[0]

    def encode_left_padded(self, prompts: list[str], *, max_prompt_tokens: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokenize ``prompts`` into left-padded ``(input_ids, attention_mask)`` (B, T).

        Tokenization is :func:`models.prompts.prompt_token_ids`, as in training. A
        prompt longer than ``max_prompt_tokens`` keeps its last tokens.
        """
        token_lists = [prompt_token_ids(self.tokenizer, prompt)[-max_prompt_tokens:] for prompt in prompts]
        return left_pad(token_lists, pad_token_id=self.pad_token_id)

    def generate_ids(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        seed: SeedSetting = None,
        min_new_tokens: int = 0,
        config: DecodingConfig | None = None,
        step_callback: Callable[[int], None] | None = None,
    ) -> list[list[int]]:
        """Generate token ids for each prompt, without the final EOS token.

        See :meth:`generate` for the shared parameters; the settings that have no
        keyword argument here, such as ``stop_sequences``, are set through ``config``.
        A row that stopped at a stop sequence keeps the tokens that completed it.

        Parameters
        ----------
        min_new_tokens : int
            EOS is suppressed until each row has this many tokens, as in
            ``transformers`` generate; benchmarks use it to fix the token count.
        step_callback : callable or None
            Called with the step index right after each decoder call (0 = prefill),
            before the next tokens are chosen. Benchmarks use it for step timings.
        """
        config = resolve_config(
            config, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, temperature=temperature,
            top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
        )
        generators = row_generators(prompts, seed=seed, config=config)
        if not prompts:
            return []
        max_positions = int(self.manifest.get("max_position_embeddings") or 1 << 30)
        input_ids, prompt_mask = self.encode_left_padded(
            prompts, max_prompt_tokens=max(1, max_positions - config.max_new_tokens)
        )
        return self._decode(input_ids, prompt_mask, generators, config=config, step_callback=step_callback)

    def generate_from_ids(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        *,
        max_new_tokens: int = 64,
        min_new_tokens: int = 0,
        step_callback: Callable[[int], None] | None = None,
    ) -> list[list[int]]:
        """Greedily generate token ids from left-padded token ids (B, T) and their mask (B, T).

        The same decoding loop as :meth:`generate_ids`, for callers that hold token
        ids already, such as benchmarks that compare with PyTorch on identical input.
        """
        input_ids = np.asarray(input_ids, dtype=np.int64)
        attention_mask = np.asarray(attention_mask, dtype=np.int64)
        if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
            raise ValueError(
                f"invalid shapes input_ids {input_ids.shape} and attention_mask {attention_mask.shape}: "
                "expected two equal (batch, length) shapes"
            )
        config = DecodingConfig(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens)
        generators = [np.random.default_rng(0) for _ in range(input_ids.shape[0])]
        return self._decode(input_ids, attention_mask, generators, config=config, step_callback=step_callback)

    def _decode(
        self,
        input_ids: np.ndarray,
        prompt_mask: np.ndarray,
        generators: list[np.random.Generator],
        *,
        config: DecodingConfig,
        step_callback: Callable[[int], None] | None,
    ) -> list[list[int]]:
        """Run :func:`export.decoding.decode_tokens` on this generator's inference session under its lock."""
        stop_matcher = None
        if config.stop_sequences:
            stop_matcher = StopSequenceMatcher(tokenizer=self.tokenizer, stop_sequences=config.stop_sequences)
        with self._lock:
            return decode_tokens(
                input_ids, prompt_mask, generators,
                config=config, run_step=functools.partial(self._run, num_logits_to_keep=1),
                past=self._empty_past(input_ids.shape[0]), eos_token_ids=self.eos_token_ids,
                pad_token_id=self.pad_token_id, stop_matcher=stop_matcher, step_callback=step_callback,
            )

    def generate(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        seed: SeedSetting = None,
        min_new_tokens: int = 0,
        no_repeat_ngram_size: int = 0,
        stop_sequences: Sequence[str] = (),
        deterministic: bool = False,
        config: DecodingConfig | None = None,
    ) -> list[str]:
        """Generate a continuation for each prompt.

        Parameters
        ----------
        prompts : list of str
            Prompt texts, tokenized without added special tokens and batched with left
            padding. A prompt longer than the model's context minus ``max_new_tokens``
            keeps its last tokens.
        max_new_tokens, min_new_tokens, temperature, top_k, top_p, repetition_penalty
            Decoding settings, described in :class:`export.decoding.DecodingConfig`.
        no_repeat_ngram_size, stop_sequences, deterministic
            Further decoding settings, described there too.
        seed : int, sequence of int or None, or None
            Seed for sampling: one int for all prompts or one entry per prompt, each mixed
            with its prompt's text as :func:`export.decoding.row_generators` describes.
            The same seed and prompt give the same text in any batch: exactly under greedy
            decoding, up to float differences when sampling (tiny test model on CPU: logits
            within 2.3e-6, 200 of 200 sampled texts identical). None draws fresh entropy.
        config : DecodingConfig or None
            All decoding settings in one object, in place of the keyword arguments;
            a keyword argument that differs from its default next to it raises ValueError.

        Returns
        -------
        list of str
            Decoded continuations without special tokens, cut before the first stop
            sequence, not yet cleaned; see ``models.prompts.clean_generation``.
        """
        started_s = time.perf_counter()
        config = resolve_config(
            config, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, temperature=temperature,
            top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size, stop_sequences=stop_sequences,
            deterministic=deterministic,
        )
        token_ids = self.generate_ids(prompts, seed=seed, config=config)
        texts = [self.tokenizer.decode(tokens, skip_special_tokens=True) for tokens in token_ids]
        if config.stop_sequences:
            texts = [cut_at_stop(text, config.stop_sequences) for text in texts]
        logger.debug(
            "generated %d tokens for %d prompts in %.2f s with generator %s",
            sum(len(tokens) for tokens in token_ids), len(prompts), time.perf_counter() - started_s, self.version,
        )
        return texts
