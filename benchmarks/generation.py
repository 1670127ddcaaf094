"""Benchmark greedy generation: PyTorch generate (eager mode) vs the ONNX variants, in one run.

Every backend decodes the same token ids (windows of real listing prompts, no
padding) for a fixed number of new tokens: EOS is suppressed until the last
token in all backends. Step times come from a callback after each decoder call,
so prefill and decode steps are timed apart.

* tokens/s: batch x new tokens / total time (prefill included).
* ms/step: mean decode step time (prefill excluded), plus the mean of the first
  and of the last quarter of the steps. With a working cache the last quarter
  costs about the same as the first although the sequence is longer.

Run ``python -m benchmarks.generation --quick`` for a smoke run, without
arguments for the full grid (batch 1, 8, 32 and prompt lengths 32, 256).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from export.onnx_export import EXPORT_CODE_VERSION, export_decoder, file_sha256
from export.runtime import OnnxGenerator
from export.session import CUDA_PROVIDER, cuda_driver_loadable, physical_core_count

logger = logging.getLogger(__name__)

TORCH_BACKEND = "torch"


class StepClock:
    """Timestamps of decoder calls (perf_counter seconds) after a start mark."""

    def __init__(self):
        self.started_s = 0.0
        self.step_times_s: list[float] = []

    def start(self) -> None:
        self.started_s = time.perf_counter()
        self.step_times_s = []

    def mark(self, *_args) -> None:
        self.step_times_s.append(time.perf_counter())

    def summary(self, finished_s: float, tokens: int) -> dict:
        prefill_s = self.step_times_s[0] - self.started_s
        steps_s = np.diff(self.step_times_s)
        quarter = max(1, len(steps_s) // 4)
        return {
            "prefill_ms": prefill_s * 1000,
            "step_ms": float(steps_s.mean()) * 1000,
            "first_steps_ms": float(steps_s[:quarter].mean()) * 1000,
            "last_steps_ms": float(steps_s[-quarter:].mean()) * 1000,
            "total_s": finished_s - self.started_s,
            "tokens_per_s": tokens / (finished_s - self.started_s),
        }


def _torch_timer(clock: StepClock):
    from transformers import LogitsProcessor

    class TimingProcessor(LogitsProcessor):
        """Marks the clock each time generate has new logits, that is after each forward."""

        def __call__(self, input_ids, scores):
            clock.mark()
            return scores

    return TimingProcessor()


def benchmark_prompt_ids(tokenizer, prompts: list[str], *, batch_size: int, prompt_length: int) -> np.ndarray:
    """Cut token windows (batch_size, prompt_length) from the concatenated token ids of ``prompts``."""
    stream = []
    for prompt in prompts:
        stream.extend(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    needed = batch_size * prompt_length
    repeats = -(-needed // len(stream))
    stream = (stream * repeats)[:needed]
    return np.array(stream, dtype=np.int64).reshape(batch_size, prompt_length)


def run_torch(model, input_ids: np.ndarray, *, new_tokens: int, pad_token_id: int) -> dict:
    """Time one ``generate`` call in PyTorch with greedy decoding and the cache on."""
    from transformers import LogitsProcessorList

    clock = StepClock()
    ids = torch.from_numpy(input_ids)
    with torch.inference_mode():
        clock.start()
        model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=pad_token_id,
            logits_processor=LogitsProcessorList([_torch_timer(clock)]),
        )
        finished_s = time.perf_counter()
    return clock.summary(finished_s, input_ids.size // input_ids.shape[1] * new_tokens)


def run_onnx(generator: OnnxGenerator, input_ids: np.ndarray, *, new_tokens: int) -> dict:
    """Time one greedy generation with an ``OnnxGenerator``."""
    clock = StepClock()
    clock.start()
    generator.generate_from_ids(
        input_ids, np.ones_like(input_ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
        step_callback=clock.mark,
    )
    return clock.summary(time.perf_counter(), input_ids.shape[0] * new_tokens)


def cached_export(checkpoint_dir: Path, cache_root: Path) -> Path:
    """Return an export of ``checkpoint_dir`` with all variants, exporting it on the first call."""
    digest = file_sha256(sorted(Path(checkpoint_dir).glob("*.safetensors")))[:16]
    model_dir = cache_root / "exports" / f"{digest}-e{EXPORT_CODE_VERSION}"
    if not (model_dir / "manifest.json").is_file():
        export_decoder(checkpoint_dir, model_dir)
    return model_dir


def machine_description() -> dict:
    """Describe the CPU, memory, load and library versions of this machine."""
    import onnxruntime
    import psutil

    cpu_name = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_name = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu_name,
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical_core_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
    }


def run_grid(args, model_dir: Path, checkpoint_dir: Path, prompts: list[str]) -> list[dict]:
    """Measure every backend on every (batch, prompt length) and return one row per measurement."""
    from transformers import AutoModelForCausalLM

    threads = args.threads or physical_core_count()
    torch.set_num_threads(threads)
    backends = {}
    if TORCH_BACKEND in args.backends:
        # Default attention implementation (sdpa): the fastest PyTorch eager-mode path.
        backends[TORCH_BACKEND] = AutoModelForCausalLM.from_pretrained(str(checkpoint_dir), dtype=torch.float32).eval()
    for backend in args.backends:
        if backend.startswith("onnx-"):
            variant = backend.removeprefix("onnx-")
            providers = [CUDA_PROVIDER, "CPUExecutionProvider"] if variant == "fp16" else ["CPUExecutionProvider"]
            backends[backend] = OnnxGenerator(model_dir, providers=providers, intra_op_num_threads=threads,
                                              variant=variant)
    tokenizer = next(value for value in backends.values() if isinstance(value, OnnxGenerator)).tokenizer
    pad_token_id = tokenizer.pad_token_id

    rows = []
    for batch_size in args.batch_sizes:
        for prompt_length in args.prompt_lengths:
            input_ids = benchmark_prompt_ids(tokenizer, prompts, batch_size=batch_size, prompt_length=prompt_length)
            for name, backend in backends.items():
                def measure(ids: np.ndarray, new_tokens: int) -> dict:
                    if name == TORCH_BACKEND:
                        return run_torch(backend, ids, new_tokens=new_tokens, pad_token_id=pad_token_id)
                    return run_onnx(backend, ids, new_tokens=new_tokens)

                # Warm-up on a short prompt with the same batch: first-call allocations and kernel selection.
                measure(input_ids[:, :8], 4)
                runs = [measure(input_ids, args.new_tokens) for _ in range(args.repeats)]
                row = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
                row.update(backend=name, batch=batch_size, prompt=prompt_length, new_tokens=args.new_tokens,
                           repeats=args.repeats, load_average_1m=round(os.getloadavg()[0], 2))
                if isinstance(backend, OnnxGenerator):
                    row["provider"] = backend.provider
                rows.append(row)
                logger.info("measured %s batch %d prompt %d: %.1f tok/s, %.1f ms/step",
                            name, batch_size, prompt_length, row["tokens_per_s"], row["step_ms"])
                if args.output:
                    # Rows so far, so that an interrupted run keeps its measurements.
                    args.output.write_text(json.dumps({"partial": True, "rows": rows}, indent=2))
    return rows


def add_ratios(rows: list[dict]) -> None:
    """Add ``speedup`` (tokens/s ratio) and ``step_speedup`` against the torch row of the same shape."""
    reference = {(row["batch"], row["prompt"]): row for row in rows if row["backend"] == TORCH_BACKEND}
    for row in rows:
        base = reference.get((row["batch"], row["prompt"]))
        row["speedup"] = row["tokens_per_s"] / base["tokens_per_s"] if base else None
        row["step_speedup"] = base["step_ms"] / row["step_ms"] if base else None


def format_table(rows: list[dict]) -> str:
    """Format the measurements as a Markdown table."""
    lines = [
        "| backend | batch | prompt | prefill ms | ms/step | first 1/4 | last 1/4 | tok/s | x torch tok/s | x torch step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        speedup = f"{row['speedup']:.2f}" if row["speedup"] else "-"
        step_speedup = f"{row['step_speedup']:.2f}" if row["step_speedup"] else "-"
        lines.append(
            f"| {row['backend']} | {row['batch']} | {row['prompt']} | {row['prefill_ms']:.0f} | "
            f"{row['step_ms']:.1f} | {row['first_steps_ms']:.1f} | {row['last_steps_ms']:.1f} | "
            f"{row['tokens_per_s']:.1f} | {speedup} | {step_speedup} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; ``--quick`` overrides the grid with a small one."""
    import onnxruntime

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="smollm2",
                        help="base name or checkpoint directory (models.base.resolve_base_checkpoint)")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="ONNX export of --checkpoint (default: export it once into the cache)")
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("SHOPSYNTH_DATA_DIR"),
                        help="dataset root for real prompts (default: $SHOPSYNTH_DATA_DIR)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32], help="batch sizes")
    parser.add_argument("--prompt-lengths", type=int, nargs="+", default=[32, 256], help="prompt lengths in tokens")
    parser.add_argument("--new-tokens", type=int, default=32, help="generated tokens per row")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per measurement (median reported)")
    parser.add_argument("--threads", type=int, default=0, help="threads for both frameworks; 0 = physical cores")
    default_backends = [TORCH_BACKEND, "onnx-fp32", "onnx-int8"]
    if CUDA_PROVIDER in onnxruntime.get_available_providers() and cuda_driver_loadable():
        default_backends.append("onnx-fp16")
    parser.add_argument("--backends", nargs="+", default=default_backends,
                        help="torch and onnx-<variant> backends; onnx-fp16 is a default only with a usable CUDA driver")
    parser.add_argument("--quick", action="store_true", help="batch 1 and 8, prompt length 32, 16 new tokens")
    parser.add_argument("--output", type=Path, default=None, help="write the rows and machine description as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.prompt_lengths, args.new_tokens = [1, 8], [32], 16
    if args.new_tokens < 4:
        parser.error(f"invalid --new-tokens {args.new_tokens}: expected >= 4 to time decode steps")
    if args.data_dir is None:
        parser.error("no dataset root for real prompts: pass --data-dir or set SHOPSYNTH_DATA_DIR")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print a Markdown table with speedups over PyTorch."""
    from export.parity import real_prompts
    from models.base import resolve_base_checkpoint, resolve_cache_dir

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    checkpoint_dir = resolve_base_checkpoint(args.checkpoint)
    model_dir = args.model_dir or cached_export(checkpoint_dir, resolve_cache_dir())
    prompts = real_prompts(args.data_dir, count=32)
    machine = machine_description()
    started_s = time.perf_counter()
    rows = run_grid(args, model_dir, checkpoint_dir, prompts)
    add_ratios(rows)
    machine["load_average_after"] = [round(value, 2) for value in os.getloadavg()]

    print(f"machine: {json.dumps(machine)}")
    print(f"threads: {args.threads or physical_core_count()}, new tokens: {args.new_tokens}, "
          f"repeats: {args.repeats}, wall time: {time.perf_counter() - started_s:.0f} s")
    print(format_table(rows))
    if args.output:
        args.output.write_text(json.dumps({"machine": machine, "settings": vars(args) | {"output": str(args.output),
                                           "model_dir": str(model_dir), "data_dir": str(args.data_dir)},
                                           "rows": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
