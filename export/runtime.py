"""Batched text generation with an exported ONNX decoder and onnxruntime.

The decoder graph comes from :func:`export.onnx_export.export_decoder`. Prompts
are left-padded into one batch, the prompt is run once (prefill), and each
following step feeds one token per row together with the key/value cache that
the previous step returned. Rows stop independently at EOS.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import logging
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

logger = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
# onnxruntime's default log severity (2 = warning). A CUDA session attempt resets the
# default logger to it, because onnxruntime offers no getter for the current value.
ORT_DEFAULT_LOG_SEVERITY = 2
ORT_ERROR_LOG_SEVERITY = 3
ORT_FATAL_LOG_SEVERITY = 4


def _cuda_driver_loadable() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def _session_options(intra_op_num_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # 0 lets onnxruntime use one thread per physical core.
    options.intra_op_num_threads = intra_op_num_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = ORT_ERROR_LOG_SEVERITY
    return options


def create_session(
    model_path: Path, *, providers: Sequence[str] | None = None, intra_op_num_threads: int = 0
) -> ort.InferenceSession:
    """Create an inference session, falling back to CPU with one warning when CUDA is unusable.

    onnxruntime-gpu on a machine without CUDA libraries or a GPU driver logs a raw
    library-load error for the CUDA provider and silently runs on CPU. That error is
    suppressed here (default logger severity raised to fatal while the session is
    created) and replaced by one warning line.
    """
    model_path = Path(model_path)
    available = ort.get_available_providers()
    if providers is None:
        requested = [CUDA_PROVIDER, CPU_PROVIDER] if CUDA_PROVIDER in available else [CPU_PROVIDER]
    else:
        requested = list(providers)
        unknown = [name for name in requested if name not in available]
        if unknown:
            raise ValueError(f"execution providers {unknown} are not available; onnxruntime lists {available}")

    options = _session_options(intra_op_num_threads)
    if CUDA_PROVIDER in requested and not _cuda_driver_loadable():
        logger.warning(
            "CUDA execution provider unusable for %s (no CUDA driver libcuda.so.1); running on CPU", model_path
        )
        requested = [name for name in requested if name != CUDA_PROVIDER] or [CPU_PROVIDER]
    if CUDA_PROVIDER not in requested:
        return ort.InferenceSession(str(model_path), options, providers=requested)

    # preload_dlls loads CUDA and cuDNN from the nvidia-* wheels when present. It
    # reports problems with print(), which is captured and logged at debug level.
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            ort.preload_dlls()
    except OSError as error:
        logger.debug("onnxruntime preload_dlls failed for %s: %s", model_path, error)
    if captured.getvalue().strip():
        logger.debug("onnxruntime preload_dlls output: %s", captured.getvalue().strip())
    ort.set_default_logger_severity(ORT_FATAL_LOG_SEVERITY)
    try:
        session = ort.InferenceSession(str(model_path), options, providers=requested)
    finally:
        ort.set_default_logger_severity(ORT_DEFAULT_LOG_SEVERITY)
    if session.get_providers()[0] != CUDA_PROVIDER:
        logger.warning(
            "CUDA execution provider unusable for %s (CUDA or cuDNN libraries failed to load); running on CPU",
            model_path,
        )
    return session


def _apply_repetition_penalty(logits: np.ndarray, seen: list[set[int]], penalty: float) -> None:
    """Penalise already seen tokens in place, as in CTRL: divide positive logits, multiply negative ones."""
    for row, tokens in enumerate(seen):
        if not tokens:
            continue
        index = np.fromiter(tokens, dtype=np.int64)
        values = logits[row, index]
        logits[row, index] = np.where(values > 0, values / penalty, values * penalty)


def _sample(
    logits: np.ndarray, *, temperature: float, top_k: int, top_p: float, generators: list[np.random.Generator]
) -> np.ndarray:
    """Sample one token per row from ``logits`` (B, V) after temperature, top-k and top-p filtering."""
    scaled = logits.astype(np.float64) / temperature
    if 0 < top_k < scaled.shape[-1]:
        kth = np.partition(scaled, -top_k, axis=-1)[:, -top_k][:, None]
        scaled = np.where(scaled < kth, -np.inf, scaled)
    scaled -= scaled.max(axis=-1, keepdims=True)
    probs = np.exp(scaled)
    probs /= probs.sum(axis=-1, keepdims=True)
    if top_p < 1.0:
        order = np.argsort(-probs, axis=-1, kind="stable")
        sorted_probs = np.take_along_axis(probs, order, axis=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        remove = np.cumsum(sorted_probs, axis=-1) - sorted_probs >= top_p
        sorted_probs[remove] = 0.0
        probs = np.zeros_like(probs)
        np.put_along_axis(probs, order, sorted_probs, axis=-1)
        probs /= probs.sum(axis=-1, keepdims=True)
    tokens = np.empty(len(probs), dtype=np.int64)
    for row, generator in enumerate(generators):
        cumulative = np.cumsum(probs[row])
        tokens[row] = min(int(np.searchsorted(cumulative, generator.random() * cumulative[-1], side="right")),
                          len(cumulative) - 1)
    return tokens


class OnnxGenerator:
    """Text generator backed by an exported ONNX decoder with a key/value cache.

    Parameters
    ----------
    model_dir : Path
        Directory written by ``export_decoder``: ``model.onnx``, ``manifest.json`` and
        tokenizer files.
    providers : sequence of str or None
        onnxruntime execution providers. None picks CUDA when it is usable, else CPU.
    intra_op_num_threads : int
        onnxruntime intra-op threads; 0 uses onnxruntime's default (one per physical core).

    Attributes
    ----------
    version : str
        ``generator_version`` from the manifest.
    provider : str
        Execution provider that runs the graph.
    """

    def __init__(
        self, model_dir: Path, *, providers: Sequence[str] | None = None, intra_op_num_threads: int = 0
    ):
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        manifest_path = self.model_dir / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{manifest_path} not found; export the model with export.onnx_export.export_decoder")
        self.manifest = json.loads(manifest_path.read_text())
        self.version: str = self.manifest["generator_version"]
        self.num_layers: int = self.manifest["num_layers"]
        self.num_key_value_heads: int = self.manifest["num_key_value_heads"]
        self.head_dim: int = self.manifest["head_dim"]
        self.eos_token_ids = set(self.manifest["eos_token_ids"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        pad_id = self.manifest.get("pad_token_id")
        self.pad_token_id: int = pad_id if pad_id is not None else min(self.eos_token_ids)

        self.session = create_session(
            self.model_dir / "model.onnx", providers=providers, intra_op_num_threads=intra_op_num_threads
        )
        self.provider: str = self.session.get_providers()[0]
        # NOTE: only the CPU path has been run. On CUDA the cache stays on the GPU through
        # IO binding, and that path, including zero-length past tensors, is untested.
        self._device = "cuda" if self.provider == CUDA_PROVIDER else "cpu"
        self._past_names = self.manifest["input_names"][3:]
        self._present_names = self.manifest["output_names"][1:]
        self._lock = threading.Lock()
        logger.info(
            "loaded generator %s from %s on %s (%d layers)", self.version, self.model_dir, self.provider, self.num_layers
        )

    def _empty_past(self, batch: int) -> list[ort.OrtValue]:
        empty = np.zeros((batch, self.num_key_value_heads, 0, self.head_dim), dtype=np.float32)
        return [ort.OrtValue.ortvalue_from_numpy(empty, self._device, 0) for _ in self._past_names]

    def _run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray, past: list[ort.OrtValue]
    ) -> tuple[np.ndarray, list[ort.OrtValue]]:
        """Run one decoder call. The cache stays on the execution device between calls."""
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", np.ascontiguousarray(input_ids, dtype=np.int64))
        binding.bind_cpu_input("attention_mask", np.ascontiguousarray(attention_mask, dtype=np.int64))
        binding.bind_cpu_input("position_ids", np.ascontiguousarray(position_ids, dtype=np.int64))
        for name, value in zip(self._past_names, past):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in self._present_names:
            binding.bind_output(name, self._device)
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        return outputs[0].numpy(), list(outputs[1:])

    def forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        *,
        position_ids: np.ndarray | None = None,
        past_key_values: list[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Run the decoder once and return ``(logits, present)`` as numpy arrays.

        ``input_ids`` and ``position_ids`` are (B, S), ``attention_mask`` is (B, P + S)
        and covers the past, and ``past_key_values`` alternates key and value arrays of
        shape (B, K, P, D) per layer. Position ids default to the count of earlier
        unmasked tokens.
        """
        input_ids = np.asarray(input_ids, dtype=np.int64)
        attention_mask = np.asarray(attention_mask, dtype=np.int64)
        if position_ids is None:
            position_ids = np.clip(np.cumsum(attention_mask, axis=-1) - 1, 0, None)[:, -input_ids.shape[1]:]
        if past_key_values is None:
            past = self._empty_past(input_ids.shape[0])
        else:
            past = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value, dtype=np.float32), self._device, 0)
                    for value in past_key_values]
        with self._lock:
            logits, present = self._run(input_ids, attention_mask, position_ids, past)
        return logits, [value.numpy() for value in present]

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Return the logits (B, T, V) for a batch without a cache."""
        return self.forward(input_ids, attention_mask)[0]

    def _encode_left_padded(self, prompts: list[str], max_prompt_tokens: int) -> tuple[np.ndarray, np.ndarray]:
        token_lists = [self.tokenizer(prompt, add_special_tokens=False)["input_ids"][-max_prompt_tokens:]
                       for prompt in prompts]
        length = max(len(tokens) for tokens in token_lists)
        if length == 0:
            raise ValueError("all prompts are empty; pass at least one non-empty prompt")
        input_ids = np.full((len(prompts), length), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(prompts), length), dtype=np.int64)
        for row, tokens in enumerate(token_lists):
            if tokens:
                input_ids[row, length - len(tokens):] = tokens
                attention_mask[row, length - len(tokens):] = 1
        return input_ids, attention_mask

    def generate_ids(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        seed: int | None = None,
    ) -> list[list[int]]:
        """Generate token ids for each prompt, without the final EOS token.

        See :meth:`generate` for the parameters.
        """
        if not prompts:
            return []
        if max_new_tokens < 1:
            raise ValueError(f"invalid max_new_tokens {max_new_tokens}: expected >= 1")
        if temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or repetition_penalty <= 0:
            raise ValueError(
                f"invalid sampling settings temperature={temperature}, top_k={top_k}, top_p={top_p}, "
                f"repetition_penalty={repetition_penalty}: expected temperature >= 0, top_k >= 0, "
                "0 < top_p <= 1 and repetition_penalty > 0"
            )
        max_positions = int(self.manifest.get("max_position_embeddings") or 1 << 30)
        input_ids, attention_mask = self._encode_left_padded(prompts, max(1, max_positions - max_new_tokens))
        batch = len(prompts)
        generators = [
            np.random.default_rng([seed % 2**64, zlib.crc32(prompt.encode("utf-8"))]) if seed is not None
            else np.random.default_rng()
            for prompt in prompts
        ]
        seen = [set(row[mask == 1].tolist()) for row, mask in zip(input_ids, attention_mask)]
        generated: list[list[int]] = [[] for _ in range(batch)]
        finished = np.zeros(batch, dtype=bool)
        position_ids = np.clip(np.cumsum(attention_mask, axis=-1) - 1, 0, None)
        step_ids = input_ids

        with self._lock:
            past = self._empty_past(batch)
            for _ in range(max_new_tokens):
                logits, past = self._run(step_ids, attention_mask, position_ids, past)
                next_logits = logits[:, -1, :].astype(np.float32, copy=True)
                if repetition_penalty != 1.0:
                    _apply_repetition_penalty(next_logits, seen, repetition_penalty)
                if temperature == 0.0:
                    next_tokens = next_logits.argmax(axis=-1)
                else:
                    next_tokens = _sample(
                        next_logits, temperature=temperature, top_k=top_k, top_p=top_p, generators=generators
                    )
                next_tokens = np.where(finished, self.pad_token_id, next_tokens)
                for row in np.flatnonzero(~finished):
                    token = int(next_tokens[row])
                    if token in self.eos_token_ids:
                        finished[row] = True
                    else:
                        generated[row].append(token)
                        seen[row].add(token)
                if finished.all():
                    break
                step_ids = next_tokens[:, None]
                position_ids = position_ids[:, -1:] + 1
                attention_mask = np.concatenate([attention_mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
        return generated

    def generate(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        seed: int | None = None,
    ) -> list[str]:
        """Generate a continuation for each prompt.

        Parameters
        ----------
        prompts : list of str
            Prompt texts, tokenized without added special tokens and batched with left
            padding. A prompt longer than the model's context minus ``max_new_tokens``
            keeps its last tokens.
        max_new_tokens : int
            Maximum generated tokens per prompt; a row stops earlier at EOS.
        temperature : float
            0 selects greedy decoding; above 0 samples from ``softmax(logits / temperature)``.
        top_k : int
            When above 0, sample only among the ``top_k`` most likely tokens.
        top_p : float
            Nucleus sampling: sample among the most likely tokens whose total probability
            reaches ``top_p``.
        repetition_penalty : float
            Penalty above 1 for tokens already in the prompt or the output (CTRL style).
        seed : int or None
            Seed for sampling. Each prompt gets its own generator seeded from ``seed`` and
            the prompt text, so the same seed and prompt give the same text in any batch,
            up to float differences between batch shapes. None draws fresh entropy.

        Returns
        -------
        list of str
            Decoded continuations without special tokens, not yet cleaned; see
            ``models.prompts.clean_generation``.
        """
        started_s = time.perf_counter()
        token_ids = self.generate_ids(
            prompts,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            seed=seed,
        )
        texts = [self.tokenizer.decode(tokens, skip_special_tokens=True) for tokens in token_ids]
        logger.debug(
            "generated %d tokens for %d prompts in %.2f s with generator %s",
            sum(len(tokens) for tokens in token_ids), len(prompts), time.perf_counter() - started_s, self.version,
        )
        return texts
