"""Export a causal LM checkpoint to ONNX decoder graphs with a key/value cache.

Graph interface (L layers, K key/value heads, D head size, B batch, S new tokens,
P past tokens):

* inputs: ``input_ids`` (B, S) int64, ``attention_mask`` (B, P + S) int64,
  ``position_ids`` (B, S) int64, ``num_logits_to_keep`` () int64 in 1..S,
  ``past_key_values.{i}.key`` and ``past_key_values.{i}.value`` (B, K, P, D)
  for i in 0..L-1.
* outputs: ``logits`` (B, num_logits_to_keep, vocab) for the last positions,
  ``present.{i}.key`` and ``present.{i}.value`` (B, K, P + S, D).

One graph serves both prefill and decode. ``num_logits_to_keep`` = 1 skips the
vocabulary projection of all but the last prompt token during prefill, which is
what ``transformers`` generate does too. The graph is traced with a dummy past
of length 1, and past lengths 0 and 1 are checked against PyTorch with
onnxruntime right after export, so a broken prefill or decode path fails the
export. The int8 and fp16 variants (see :mod:`export.variants`) are derived
from the fp32 graph and checked the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

# Bump when the graph interface or export settings change: it is part of generator_version.
EXPORT_CODE_VERSION = "3"
# Max abs logits difference of the fp32 post-export check, whose random past gives
# larger logits than real prompts: a fine-tuned SmolLM2 measured 1.1e-3 there and
# 4e-4 on 100 real prompts. A broken graph differs by orders of magnitude more.
PARITY_TOLERANCE = 5e-3
DEFAULT_VARIANTS = ("fp32", "int8", "fp16")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
    "config.json",
)


class FlatCacheDecoder(torch.nn.Module):
    """Wrap a causal LM so that its cache goes in and out as flat tensors.

    transformers 5 models take ``past_key_values`` as a ``DynamicCache`` object,
    which ``torch.onnx.export`` cannot trace as a graph input. The decoder stack and
    the output projection are called separately, so that only the last
    ``num_logits_to_keep`` positions are projected to the vocabulary.
    """

    def __init__(self, model: torch.nn.Module, num_layers: int):
        super().__init__()
        self.decoder = model.get_decoder()
        self.lm_head = model.get_output_embeddings()
        self.num_layers = num_layers

    def forward(self, input_ids, attention_mask, position_ids, num_logits_to_keep, *past_flat):
        from transformers import DynamicCache

        cache = DynamicCache(
            ddp_cache_data=[(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(self.num_layers)]
        )
        output = self.decoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            return_dict=True,
        )
        hidden = output.last_hidden_state  # (B, S, C)
        # A tensor start traces to a Slice with a dynamic start, so the count stays a graph input.
        logits = self.lm_head(hidden[:, hidden.shape[1] - num_logits_to_keep:, :])
        present = []
        for layer in output.past_key_values.layers:
            present.extend((layer.keys, layer.values))
        return (logits, *present)


def file_sha256(paths: list[Path]) -> str:
    """Return the SHA-256 hex digest of the concatenated contents of ``paths``, in order."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def io_names(num_layers: int) -> tuple[list[str], list[str]]:
    """Return the graph input names and output names for ``num_layers`` layers."""
    inputs = ["input_ids", "attention_mask", "position_ids", "num_logits_to_keep"]
    outputs = ["logits"]
    for i in range(num_layers):
        inputs += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        outputs += [f"present.{i}.key", f"present.{i}.value"]
    return inputs, outputs


def _dynamic_axes(num_layers: int) -> dict[str, dict[int, str]]:
    axes = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "total_sequence"},
        "position_ids": {0: "batch", 1: "sequence"},
        "logits": {0: "batch", 1: "kept_sequence"},
    }
    for i in range(num_layers):
        for kind in ("key", "value"):
            axes[f"past_key_values.{i}.{kind}"] = {0: "batch", 2: "past_sequence"}
            axes[f"present.{i}.{kind}"] = {0: "batch", 2: "total_sequence"}
    return axes


def _random_past(num_layers: int, batch: int, kv_heads: int, past_length: int, head_dim: int, *, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, kv_heads, past_length, head_dim, generator=generator)
        for _ in range(2 * num_layers)
    ]


# (batch, new tokens, past length, left padding of row 0) of the post-export checks.
CHECK_CASES = ((2, 5, 0, 2), (1, 4, 0, 0), (1, 1, 1, 0), (3, 1, 1, 0), (2, 3, 4, 1))


# Listing-like text for the checks. Random token ids give flat, near-tied logits,
# on which int8 rounding flips the argmax far more often than on text.
CHECK_TEXT = (
    "Title: Slim fit cotton shirt. Brand: Northfold. Category: Men > Shirts. Colour: navy blue. "
    "Price: 24.99 USD. Description: A breathable cotton shirt with a button-down collar, "
    "a chest pocket and a tailored cut that works for the office and for weekends."
)


def _check_token_ids(checkpoint_dir: Path, vocab_size: int) -> torch.Tensor:
    """Token ids of :data:`CHECK_TEXT`, or random ids when the checkpoint has no tokenizer."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    except (OSError, ValueError) as error:
        logger.warning("no tokenizer in %s (%s); export checks use random token ids", checkpoint_dir, error)
        return torch.randint(3, vocab_size, (64,), generator=torch.Generator().manual_seed(0))
    return torch.tensor(tokenizer(CHECK_TEXT, add_special_tokens=False)["input_ids"], dtype=torch.long)


def _check_inputs(case: tuple[int, int, int, int], shape: dict, token_ids: torch.Tensor, *, seed: int):
    batch, sequence, past_length, padding = case
    # Row r reads the text from token 5 * r + seed on, wrapping around.
    starts = torch.arange(batch)[:, None] * 5 + seed
    input_ids = token_ids[(starts + torch.arange(sequence)[None, :]) % len(token_ids)]
    attention_mask = torch.ones(batch, past_length + sequence, dtype=torch.long)
    attention_mask[0, :padding] = 0
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, past_length:]
    past = _random_past(shape["num_layers"], batch, shape["num_key_value_heads"], past_length, shape["head_dim"],
                        seed=seed)
    return input_ids, attention_mask, position_ids, past


def check_graph(
    model_path: Path, wrapper: FlatCacheDecoder, shape: dict, token_ids: torch.Tensor, *, variant: str = "fp32"
) -> dict:
    """Run ``model_path`` in onnxruntime (CPU) on :data:`CHECK_CASES` and compare its logits with PyTorch.

    The cases cover past lengths 0 and 1 and more, batch 1 and several rows, and a
    left-padded row. Inputs are windows of ``token_ids``, and the past is random. Logits of every position are kept, and padded positions
    (which attend to nothing real) are left out of the comparison.

    Returns
    -------
    dict
        :func:`export.variants.logits_agreement` over all cases plus ``cases``.
    """
    import onnxruntime as ort

    from export.variants import logits_agreement, numpy_dtype

    dtype = numpy_dtype(variant)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    input_names, _ = io_names(shape["num_layers"])
    actual_rows, expected_rows = [], []
    for index, case in enumerate(CHECK_CASES):
        input_ids, attention_mask, position_ids, past = _check_inputs(case, shape, token_ids, seed=index)
        keep = torch.tensor(input_ids.shape[1], dtype=torch.long)
        with torch.no_grad():
            expected = wrapper(input_ids, attention_mask, position_ids, keep, *past)[0].numpy()
        feed = dict(zip(input_names, [input_ids.numpy(), attention_mask.numpy(), position_ids.numpy(), keep.numpy()]))
        feed.update({name: tensor.numpy().astype(dtype) for name, tensor in zip(input_names[4:], past)})
        actual = session.run(["logits"], feed)[0].astype(np.float32)
        real = attention_mask.numpy()[:, -input_ids.shape[1]:].astype(bool)
        actual_rows.append(actual[real])
        expected_rows.append(expected[real])
    result = logits_agreement(np.concatenate(actual_rows), np.concatenate(expected_rows))
    result["cases"] = [list(case) for case in CHECK_CASES]
    return result


def _tokenizer_record(output_dir: Path) -> dict:
    files = [name for name in TOKENIZER_FILES if (output_dir / name).is_file()]
    return {"files": files, "sha256": file_sha256([output_dir / name for name in files]) if files else None}


def export_decoder(
    checkpoint_dir: Path,
    output_dir: Path,
    *,
    opset: int = 17,
    check_tolerance: float = PARITY_TOLERANCE,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    int8_method: str = "blockwise",
) -> Path:
    """Export a causal LM checkpoint to ONNX decoder graphs with tokenizer files and a manifest.

    Parameters
    ----------
    checkpoint_dir : Path
        HF checkpoint directory with ``*.safetensors`` weights and tokenizer files.
    output_dir : Path
        Directory for ``model.onnx`` (fp32), the other variants' graphs, the
        tokenizer files and ``manifest.json``.
    opset : int
        ONNX opset version.
    check_tolerance : float
        Maximum allowed absolute logits difference between onnxruntime (CPU) and
        PyTorch for the fp32 graph on the post-export checks (past lengths 0 and 1,
        batch 1 and several rows).
    variants : sequence of str
        Variants to write, from ``export.variants.VARIANT_FILES``; fp32 is always
        written because the others derive from it.
    int8_method : str
        ``"blockwise"`` or ``"dynamic"``; see ``export.variants.quantize_int8``.

    Returns
    -------
    Path
        ``output_dir``.

    Raises
    ------
    FileNotFoundError
        If ``checkpoint_dir`` has no safetensors weights.
    RuntimeError
        If a graph does not match PyTorch within its tolerance (``check_tolerance``
        for fp32, ``export.variants.EXPORT_CHECK_TOLERANCES`` for the others). These
        are loose limits that catch broken graphs; ``export.parity`` applies the
        documented tolerances on real prompts.
    """
    from transformers import AutoModelForCausalLM

    from export.attention import GROUPED_ATTENTION
    from export.variants import (
        EXPORT_CHECK_TOLERANCES,
        VARIANT_DTYPES,
        VARIANT_FILES,
        check_variant_name,
        within_tolerance,
        write_variant,
    )

    checkpoint_dir, output_dir = Path(checkpoint_dir), Path(output_dir)
    variants = ["fp32"] + [check_variant_name(name) for name in variants if name != "fp32"]
    weight_files = sorted(checkpoint_dir.glob("*.safetensors"))
    if not weight_files:
        raise FileNotFoundError(f"no *.safetensors weights in {checkpoint_dir}; save the checkpoint with safetensors")
    started_s = time.perf_counter()

    # Grouped attention traces to plain MatMul/Softmax ops that work for every past length,
    # like eager attention, but without copying key/value heads for each query head.
    model = AutoModelForCausalLM.from_pretrained(
        str(checkpoint_dir), dtype=torch.float32, attn_implementation=GROUPED_ATTENTION
    ).eval()
    config = model.config
    shape = {
        "num_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        "head_dim": getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_position_embeddings,
    }
    wrapper = FlatCacheDecoder(model, shape["num_layers"]).eval()
    input_names, output_names = io_names(shape["num_layers"])

    batch, sequence, past_length = 2, 3, 1
    dummy = (
        torch.ones(batch, sequence, dtype=torch.long),
        torch.ones(batch, past_length + sequence, dtype=torch.long),
        torch.arange(past_length, past_length + sequence).repeat(batch, 1),
        torch.tensor(2, dtype=torch.long),
        *_random_past(shape["num_layers"], batch, shape["num_key_value_heads"], past_length, shape["head_dim"], seed=0),
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    model_path = output_dir / VARIANT_FILES["fp32"]
    logger.info("exporting %s to %s (opset %d, %d layers)", checkpoint_dir, model_path, opset, shape["num_layers"])
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing warns about Python bools and constants in the cache and mask code.
        # The branches they fix hold for every input that the runtime feeds (full-length
        # attention mask, no negative indices), and the post-export checks run the
        # graph on shapes other than the traced one.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        # The TorchScript exporter is chosen on purpose (dynamo=False): it traces the
        # DynamicCache wrapper, and the graph interface above depends on it.
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        torch.onnx.export(
            wrapper,
            dummy,
            str(model_path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=_dynamic_axes(shape["num_layers"]),
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )

    token_ids = _check_token_ids(checkpoint_dir, shape["vocab_size"])
    variant_records = {}
    for variant in variants:
        path = write_variant(output_dir, variant, int8_method=int8_method)
        check = check_graph(path, wrapper, shape, token_ids, variant=variant)
        tolerance = dict(EXPORT_CHECK_TOLERANCES[variant])
        if variant == "fp32":
            tolerance["max_abs_diff"] = check_tolerance
        if not within_tolerance(check, variant, tolerances={variant: tolerance}):
            raise RuntimeError(
                f"exported {path} ({variant}) differs from PyTorch: max abs diff {check['max_abs_diff']:.3g}, "
                f"top-1 agreement {check['top1_agreement']:.3f}, tolerance {tolerance}; "
                "the graph is not usable for generation"
            )
        variant_records[variant] = {
            "file": path.name,
            "dtype": VARIANT_DTYPES[variant],
            "size_bytes": path.stat().st_size,
            "int8_method": int8_method if variant == "int8" else None,
            "export_check": check,
            "tolerance": tolerance,
        }
        logger.info(
            "checked %s variant %s: max abs diff %.3g, top-1 agreement %.3f over %d positions",
            output_dir, variant, check["max_abs_diff"], check["top1_agreement"], check["positions"],
        )

    for name in TOKENIZER_FILES:
        if (checkpoint_dir / name).is_file():
            shutil.copy2(checkpoint_dir / name, output_dir / name)

    checkpoint_sha256 = file_sha256(weight_files)
    version_key = f"{checkpoint_sha256}:{opset}:{EXPORT_CODE_VERSION}"
    eos_ids = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    manifest = {
        "generator_version": hashlib.sha256(version_key.encode()).hexdigest()[:12],
        "source_checkpoint": str(checkpoint_dir.resolve()),
        "source_checkpoint_sha256": checkpoint_sha256,
        "tokenizer": _tokenizer_record(output_dir),
        "opset": opset,
        "export_code_version": EXPORT_CODE_VERSION,
        "exported_with": {"torch": torch.__version__, "transformers": _package_version("transformers"),
                          "onnx": _package_version("onnx"), "onnxruntime": _package_version("onnxruntime")},
        "model_type": config.model_type,
        **shape,
        "eos_token_ids": [int(token_id) for token_id in eos_ids if token_id is not None],
        "pad_token_id": config.pad_token_id,
        "bos_token_id": config.bos_token_id,
        "dtype": "float32",
        "input_names": input_names,
        "output_names": output_names,
        "empty_past_max_abs_diff": variant_records["fp32"]["export_check"]["max_abs_diff"],
        "variants": variant_records,
    }
    (output_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    logger.info(
        "exported %s in %.1f s (generator_version %s, variants %s)",
        output_dir, time.perf_counter() - started_s, manifest["generator_version"], ", ".join(variants),
    )
    return output_dir


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    for candidate in (name, f"{name}-gpu"):
        try:
            return version(candidate)
        except PackageNotFoundError:
            continue
    return None
