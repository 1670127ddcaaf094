"""onnxruntime sessions for the decoder: deliberate options and CUDA-to-CPU fallback."""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

logger = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
# onnxruntime's default log severity (2 = warning). A CUDA session attempt resets the
# default logger to it, because onnxruntime offers no getter for the current value.
ORT_DEFAULT_LOG_SEVERITY = 2
ORT_ERROR_LOG_SEVERITY = 3
ORT_FATAL_LOG_SEVERITY = 4


def cuda_driver_loadable() -> bool:
    """Return whether the CUDA driver library (libcuda.so.1) loads."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def physical_core_count() -> int:
    """Return the number of physical CPU cores (logical CPUs when psutil cannot tell)."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def session_options(*, intra_op_num_threads: int = 0) -> ort.SessionOptions:
    """Build the session options used for the decoder.

    * All graph optimisations (level 99): constant folding, MatMul+Add, SimplifiedLayerNorm
      and, for int8, MatMulIntegerToFloat fusions.
    * Sequential execution with one inter-op thread: the decoder is one chain of ops,
      so parallelism comes from the intra-op pool only.
    * ``intra_op_num_threads`` = physical cores when 0 is passed. Hyper-threads share
      the FMA units that the MatMuls saturate.
    * Memory pattern planning and the CPU arena on (their defaults, set explicitly):
      the pattern is reused while input shapes repeat, and the arena serves the
      per-step cache buffers that grow by one position each step.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_num_threads or physical_core_count()
    options.inter_op_num_threads = 1
    options.enable_mem_pattern = True
    options.enable_cpu_mem_arena = True
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

    options = session_options(intra_op_num_threads=intra_op_num_threads)
    if CUDA_PROVIDER in requested and not cuda_driver_loadable():
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
