"""Precision variants of the exported decoder: fp32 (reference), blockwise int8 (CPU) and fp16 (GPU).

All variants share the graph interface of ``model.onnx`` and differ in weights
and, for fp16, in the dtype of the cache and logits:

* ``int8``: MatMul weights quantized to int8 in blocks of 32 input rows with one
  scale each (ONNX Runtime's ``MatMulNBits`` op, 8 bits, symmetric), run with
  ``accuracy_level=4`` so that activations are quantized per block and the
  products use int8 kernels. The cache and logits stay float32. It is meant for
  CPU. Per-tensor dynamic quantization (``quantize_dynamic``, available as
  ``method="dynamic"``) is the classic alternative. Its single activation scale
  is dominated by outlier channels in Llama activations. On SmolLM2-135M its
  top-1 agreement with fp32 was 0.43 (0.59 per channel), against 0.98 for the
  blockwise form, on one 61-token listing prompt.
* ``fp16``: every float tensor, cache and logits included, is converted to
  float16 with ``onnxruntime.transformers.float16``. It is meant for CUDA. ONNX
  Runtime also runs it on CPU by casting to float32 around ops without fp16
  kernels. This project runs it on CPU only for checks.

Tolerances compare a variant's logits with PyTorch fp32 (eager attention) on the
same inputs. int8 weights move logits far more than fp32 rounding does, so
int8 is judged by top-1 (argmax) agreement, which is what greedy decoding uses.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

VARIANT_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
# dtype of the cache inputs/outputs and of the logits.
VARIANT_DTYPES = {"fp32": "float32", "int8": "float32", "fp16": "float16"}
# Logits tolerances against PyTorch fp32. None means not asserted. The export check
# runs a handful of synthetic token ids; the parity command (export.parity) runs
# real prompts with the same limits. fp32 differences come from kernel order only.
# fp16 keeps about 3 significant digits, on logits of magnitude up to about 30.
# int8 agreement is the fraction of positions whose argmax equals PyTorch's.
VARIANT_TOLERANCES = {
    "fp32": {"max_abs_diff": 1e-3, "min_top1_agreement": 1.0},
    "int8": {"max_abs_diff": None, "min_top1_agreement": 0.9},
    "fp16": {"max_abs_diff": 1.0, "min_top1_agreement": 0.95},
}

# Looser limits for the post-export check in export.onnx_export, which compares
# about 20 positions with a random past (one flipped argmax costs 5 % agreement). It
# catches broken graphs, and the real-prompt parity applies VARIANT_TOLERANCES.
EXPORT_CHECK_TOLERANCES = {
    "fp32": {"max_abs_diff": 5e-3, "min_top1_agreement": 0.95},
    "int8": {"max_abs_diff": None, "min_top1_agreement": 0.7},
    "fp16": {"max_abs_diff": 2.0, "min_top1_agreement": 0.9},
}


def check_variant_name(variant: str) -> str:
    """Return ``variant`` if it is a known variant name, else raise ValueError."""
    if variant not in VARIANT_FILES:
        raise ValueError(f"invalid variant {variant!r}: expected one of {list(VARIANT_FILES)}")
    return variant


def numpy_dtype(variant: str) -> np.dtype:
    """Return the numpy dtype of the cache and logits of ``variant``."""
    return np.dtype(VARIANT_DTYPES[check_variant_name(variant)])


INT8_BLOCK_SIZE = 32
INT8_METHODS = ("blockwise", "dynamic")


@contextlib.contextmanager
def _quiet_quantizer():
    """Raise the root logger (used by quantize_dynamic) and the MatMulNBits logger to WARNING.

    At INFO both log one line per graph node.
    """
    loggers = [logging.getLogger(), logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")]
    levels = [item.level for item in loggers]
    for item in loggers:
        item.setLevel(max(item.level, logging.WARNING))
    try:
        yield
    finally:
        for item, level in zip(loggers, levels):
            item.setLevel(level)


def quantize_int8(
    fp32_path: Path, output_path: Path, *, method: str = "blockwise", block_size: int = INT8_BLOCK_SIZE
) -> Path:
    """Write a copy of ``fp32_path`` with int8 MatMul weights.

    Only MatMul nodes with a constant weight are quantized. The embedding Gather
    stays float32, so a tied output projection keeps an int8 copy of the
    transposed embedding and the input side keeps the float32 table.

    Parameters
    ----------
    fp32_path : Path
        The float32 graph.
    output_path : Path
        Where the quantized graph is written.
    method : str
        ``"blockwise"``: ``MatMulNBits`` with 8 bits, one symmetric scale per
        ``block_size`` input rows and int8 compute (``accuracy_level=4``).
        ``"dynamic"``: ``quantize_dynamic`` with per-tensor weight and activation scales.
    block_size : int
        Rows per scale for ``"blockwise"``; a power of two >= 16.

    Returns
    -------
    Path
        ``output_path``.
    """
    import onnx

    if method not in INT8_METHODS:
        raise ValueError(f"invalid int8 method {method!r}: expected one of {list(INT8_METHODS)}")
    started_s = time.perf_counter()
    with _quiet_quantizer():
        if method == "dynamic":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(
                str(fp32_path),
                str(output_path),
                op_types_to_quantize=["MatMul"],
                weight_type=QuantType.QInt8,
                extra_options={"MatMulConstBOnly": True},
            )
        else:
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            quantizer = MatMulNBitsQuantizer(
                onnx.load(str(fp32_path)),
                bits=8,
                block_size=block_size,
                is_symmetric=True,
                accuracy_level=4,
                op_types_to_quantize=("MatMul",),
            )
            quantizer.process()
            onnx.save(quantizer.model.model, str(output_path))
    logger.info(
        "quantized %s to int8 in %.1f s (%s, method %s)",
        fp32_path.name, time.perf_counter() - started_s, output_path, method,
    )
    return output_path


def convert_fp16(fp32_path: Path, output_path: Path) -> Path:
    """Write a float16 copy of ``fp32_path``, inputs and outputs included.

    Float constants beyond the float16 range (the attention mask's minimum float)
    are clamped to +-65504 by the converter, which keeps masked scores finite.

    Returns
    -------
    Path
        ``output_path``.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    started_s = time.perf_counter()
    model = onnx.load(str(fp32_path))
    converted = convert_float_to_float16(model, keep_io_types=False, disable_shape_infer=True)
    onnx.save(converted, str(output_path))
    logger.info("converted %s to fp16 in %.1f s (%s)", fp32_path.name, time.perf_counter() - started_s, output_path)
    return output_path


def write_variant(output_dir: Path, variant: str, *, int8_method: str = "blockwise") -> Path:
    """Derive ``variant`` from ``output_dir/model.onnx`` and return the path of its graph."""
    fp32_path = Path(output_dir) / VARIANT_FILES["fp32"]
    target = Path(output_dir) / VARIANT_FILES[check_variant_name(variant)]
    if variant == "fp32":
        return fp32_path
    if variant == "int8":
        return quantize_int8(fp32_path, target, method=int8_method)
    return convert_fp16(fp32_path, target)


def logits_agreement(actual: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """Compare logits (N, V) of a variant with reference logits (N, V).

    Returns
    -------
    dict
        ``max_abs_diff``, ``mean_abs_diff`` and ``top1_agreement`` (fraction of rows
        with the same argmax), all as floats, and ``positions`` (N).
    """
    actual = np.asarray(actual, dtype=np.float32)
    expected = np.asarray(expected, dtype=np.float32)
    if actual.shape != expected.shape:
        raise ValueError(f"logits shapes differ: {actual.shape} vs reference {expected.shape}")
    diff = np.abs(actual - expected)
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "top1_agreement": float((actual.argmax(-1) == expected.argmax(-1)).mean()),
        "positions": int(actual.shape[0]),
    }


def within_tolerance(result: dict, variant: str, *, tolerances: dict | None = None) -> bool:
    """Return whether a :func:`logits_agreement` result meets ``tolerances[variant]``.

    ``tolerances`` defaults to :data:`VARIANT_TOLERANCES`.
    """
    tolerance = (tolerances or VARIANT_TOLERANCES)[check_variant_name(variant)]
    if tolerance["max_abs_diff"] is not None and not result["max_abs_diff"] <= tolerance["max_abs_diff"]:
        return False
    return result["top1_agreement"] >= tolerance["min_top1_agreement"]
