"""Export a causal LM checkpoint to one ONNX decoder graph with a key/value cache.

Graph interface (L layers, K key/value heads, D head size, B batch, S new tokens,
P past tokens):

* inputs: ``input_ids`` (B, S) int64, ``attention_mask`` (B, P + S) int64,
  ``position_ids`` (B, S) int64, ``past_key_values.{i}.key`` and
  ``past_key_values.{i}.value`` (B, K, P, D) float32 for i in 0..L-1.
* outputs: ``logits`` (B, S, vocab) float32, ``present.{i}.key`` and
  ``present.{i}.value`` (B, K, P + S, D).

One graph serves both prefill and decode. It is traced with a dummy past of
length 1, and P = 0 (prefill with empty past tensors) is checked against PyTorch
with onnxruntime right after export, so a broken empty-past path fails the export.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

# Bump when the graph interface or export settings change: it is part of generator_version.
EXPORT_CODE_VERSION = "1"
PARITY_TOLERANCE = 1e-3
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
    which ``torch.onnx.export`` cannot trace as a graph input.
    """

    def __init__(self, model: torch.nn.Module, num_layers: int):
        super().__init__()
        self.model = model
        self.num_layers = num_layers

    def forward(self, input_ids, attention_mask, position_ids, *past_flat):
        from transformers import DynamicCache

        cache = DynamicCache(
            ddp_cache_data=[(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(self.num_layers)]
        )
        output = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            return_dict=True,
        )
        present = []
        for layer in output.past_key_values.layers:
            present.extend((layer.keys, layer.values))
        return (output.logits, *present)


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
    inputs = ["input_ids", "attention_mask", "position_ids"]
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
        "logits": {0: "batch", 1: "sequence"},
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


def _check_empty_past(model_path: Path, wrapper: FlatCacheDecoder, shape: dict) -> float:
    """Run prefill with past length 0 in onnxruntime (CPU) and return max |ONNX - torch| of the logits."""
    import onnxruntime as ort

    input_ids = torch.tensor([[1, 17, 42, 7, 99], [0, 0, 5, 8, 13]], dtype=torch.long) % shape["vocab_size"]
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], dtype=torch.long)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    past = _random_past(shape["num_layers"], 2, shape["num_key_value_heads"], 0, shape["head_dim"], seed=0)
    with torch.no_grad():
        expected = wrapper(input_ids, attention_mask, position_ids, *past)[0].numpy()

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    input_names, _ = io_names(shape["num_layers"])
    feed = dict(zip(input_names, [input_ids.numpy(), attention_mask.numpy(), position_ids.numpy()]))
    feed.update({name: tensor.numpy() for name, tensor in zip(input_names[3:], past)})
    actual = session.run(["logits"], feed)[0]
    # Left-padded positions attend to nothing real, so only compare real tokens.
    real = attention_mask.numpy().astype(bool)
    return float(np.abs(actual[real] - expected[real]).max())


def export_decoder(
    checkpoint_dir: Path, output_dir: Path, *, opset: int = 17, check_tolerance: float = PARITY_TOLERANCE
) -> Path:
    """Export a causal LM checkpoint to ``model.onnx`` with tokenizer files and a manifest.

    Parameters
    ----------
    checkpoint_dir : Path
        HF checkpoint directory with ``*.safetensors`` weights and tokenizer files.
    output_dir : Path
        Directory for ``model.onnx``, the tokenizer files and ``manifest.json``.
    opset : int
        ONNX opset version.
    check_tolerance : float
        Maximum allowed absolute logits difference between onnxruntime (CPU) and
        PyTorch on a prefill with past length 0.

    Returns
    -------
    Path
        ``output_dir``.

    Raises
    ------
    FileNotFoundError
        If ``checkpoint_dir`` has no safetensors weights.
    RuntimeError
        If the exported graph does not match PyTorch within ``check_tolerance``.
    """
    from transformers import AutoModelForCausalLM

    checkpoint_dir, output_dir = Path(checkpoint_dir), Path(output_dir)
    weight_files = sorted(checkpoint_dir.glob("*.safetensors"))
    if not weight_files:
        raise FileNotFoundError(f"no *.safetensors weights in {checkpoint_dir}; save the checkpoint with safetensors")
    started_s = time.perf_counter()

    # Eager attention traces to plain MatMul/Softmax ops that work for every past length.
    model = AutoModelForCausalLM.from_pretrained(
        str(checkpoint_dir), dtype=torch.float32, attn_implementation="eager"
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
        *_random_past(shape["num_layers"], batch, shape["num_key_value_heads"], past_length, shape["head_dim"], seed=0),
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    model_path = output_dir / "model.onnx"
    logger.info("exporting %s to %s (opset %d, %d layers)", checkpoint_dir, model_path, opset, shape["num_layers"])
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing warns about Python bools and constants in the cache and mask code.
        # The branches they fix hold for every input that the runtime feeds (full-length
        # attention mask, no negative indices), and the empty-past check below runs
        # the graph on a shape other than the traced one.
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

    max_abs_diff = _check_empty_past(model_path, wrapper, shape)
    if not max_abs_diff <= check_tolerance:
        raise RuntimeError(
            f"exported {model_path} differs from PyTorch by {max_abs_diff:.3g} at past length 0 "
            f"(tolerance {check_tolerance}); the graph is not usable for prefill"
        )

    for name in TOKENIZER_FILES:
        if (checkpoint_dir / name).is_file():
            shutil.copy2(checkpoint_dir / name, output_dir / name)

    checkpoint_sha256 = file_sha256(weight_files)
    version_key = f"{checkpoint_sha256}:{opset}:{EXPORT_CODE_VERSION}"
    eos_ids = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    manifest = {
        "generator_version": hashlib.sha256(version_key.encode()).hexdigest()[:12],
        "source_checkpoint_sha256": checkpoint_sha256,
        "opset": opset,
        "export_code_version": EXPORT_CODE_VERSION,
        "model_type": config.model_type,
        **shape,
        "eos_token_ids": [int(token_id) for token_id in eos_ids if token_id is not None],
        "pad_token_id": config.pad_token_id,
        "bos_token_id": config.bos_token_id,
        "dtype": "float32",
        "input_names": input_names,
        "output_names": output_names,
        "empty_past_max_abs_diff": max_abs_diff,
    }
    (output_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    logger.info(
        "exported %s in %.1f s (generator_version %s, empty-past max abs diff %.2g)",
        model_path, time.perf_counter() - started_s, manifest["generator_version"], max_abs_diff,
    )
    return output_dir
