"""Parity of the exported variants with PyTorch on real listing prompts.

For each variant, the logits of every real (unpadded) prompt position are
compared with the PyTorch fp32 checkpoint (eager attention): max and mean
absolute difference and top-1 agreement, judged with
``export.variants.VARIANT_TOLERANCES``. Greedy continuations are compared token
by token with ``transformers`` generate on the same left-padded batches; fp32
must produce identical tokens. Results can be written into the export manifest
under ``variants.<name>.parity``.

Run as ``python -m export.parity --model-dir DIR`` with ``SHOPSYNTH_DATA_DIR`` set.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from export.runtime import OnnxGenerator
from export.session import physical_core_count
from export.variants import VARIANT_TOLERANCES, within_tolerance

logger = logging.getLogger(__name__)

MYNTRA_CSV = Path("myntra_fashion_catalog/myntra_products_catalog.csv.gz")
AMAZON_GIFT_CARDS_META = Path("amazon2018_gift_cards_5core/meta_Gift_Cards.json.gz")
# fp16 on CPU runs through casts and is slow, so its greedy text is not compared there.
GREEDY_VARIANTS_CPU = ("fp32", "int8")


def real_prompts(data_dir: Path, *, count: int = 100) -> list[str]:
    """Build ``count`` description prompts from real listings, half Myntra and half Amazon 2018 gift cards.

    Raises
    ------
    FileNotFoundError
        If a dataset file is missing under ``data_dir``.
    ValueError
        If the datasets hold fewer than ``count`` usable listings.
    """
    from models.prompts import description_prompt
    from models.training_data import load_amazon2018_pairs, load_myntra_pairs

    data_dir = Path(data_dir)
    for relative in (MYNTRA_CSV, AMAZON_GIFT_CARDS_META):
        if not (data_dir / relative).is_file():
            raise FileNotFoundError(f"{data_dir / relative} not found; set SHOPSYNTH_DATA_DIR to the dataset root")
    amazon = load_amazon2018_pairs(data_dir / AMAZON_GIFT_CARDS_META, limit=count // 2)
    myntra = load_myntra_pairs(data_dir / MYNTRA_CSV, limit=count - len(amazon))
    prompts = [description_prompt(listing) for listing, _ in amazon + myntra]
    if len(prompts) < count:
        raise ValueError(f"only {len(prompts)} usable listings in {data_dir}, expected {count}")
    return prompts


class _LogitsStats:
    """Running max/mean absolute difference and top-1 agreement over logits rows."""

    def __init__(self):
        self.max_abs_diff = 0.0
        self.abs_diff_sum = 0.0
        self.values = 0
        self.agree = 0
        self.positions = 0

    def update(self, actual: np.ndarray, expected: np.ndarray) -> None:
        diff = np.abs(actual - expected)
        self.max_abs_diff = max(self.max_abs_diff, float(diff.max()))
        self.abs_diff_sum += float(diff.sum(dtype=np.float64))
        self.values += diff.size
        self.agree += int((actual.argmax(-1) == expected.argmax(-1)).sum())
        self.positions += actual.shape[0]

    def result(self) -> dict:
        return {
            "max_abs_diff": self.max_abs_diff,
            "mean_abs_diff": self.abs_diff_sum / max(self.values, 1),
            "top1_agreement": self.agree / max(self.positions, 1),
            "positions": self.positions,
        }


def _strip_eos(tokens: list[int], eos_token_ids: set[int]) -> list[int]:
    for index, token in enumerate(tokens):
        if token in eos_token_ids:
            return tokens[:index]
    return tokens


def variant_parity(
    model_dir: Path,
    checkpoint_dir: Path,
    prompts: list[str],
    *,
    variants: tuple[str, ...] | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 24,
    intra_op_num_threads: int = 0,
) -> dict[str, dict]:
    """Compare each variant in ``model_dir`` with the PyTorch checkpoint on ``prompts``.

    Parameters
    ----------
    model_dir : Path
        Export directory written by ``export.onnx_export.export_decoder``.
    checkpoint_dir : Path
        The checkpoint that was exported.
    prompts : list of str
        Prompts, batched ``batch_size`` at a time with left padding.
    variants : tuple of str or None
        Variants to check; None checks all in the manifest.
    max_new_tokens : int
        Greedy tokens per prompt for the text comparison.
    intra_op_num_threads : int
        Threads for PyTorch and onnxruntime; 0 uses one per physical core.

    Returns
    -------
    dict
        Per variant: ``logits`` (max/mean abs diff, top-1 agreement, positions),
        ``greedy`` (identical prompts, first differing prompt index) when compared,
        ``tolerance`` and ``passed``.
    """
    from transformers import AutoModelForCausalLM

    threads = intra_op_num_threads or physical_core_count()
    torch.set_num_threads(threads)
    manifest = json.loads((Path(model_dir) / "manifest.json").read_text())
    variants = tuple(variants or manifest["variants"])
    model = AutoModelForCausalLM.from_pretrained(
        str(checkpoint_dir), dtype=torch.float32, attn_implementation="eager"
    ).eval()
    generators = {
        name: OnnxGenerator(model_dir, providers=["CPUExecutionProvider"], intra_op_num_threads=threads, variant=name)
        for name in variants
    }
    reference = generators[variants[0]]
    eos_token_ids = reference.eos_token_ids
    stats = {name: _LogitsStats() for name in variants}
    greedy = {name: {"identical": 0, "compared": 0, "first_different_prompt": None}
              for name in variants if name in GREEDY_VARIANTS_CPU}

    batches = [prompts[start:start + batch_size] for start in range(0, len(prompts), batch_size)]
    for batch_index, batch in enumerate(tqdm(batches, desc="parity batches", unit="batch")):
        input_ids, attention_mask = reference.encode_left_padded(batch, max_prompt_tokens=1 << 30)
        position_ids = np.clip(np.cumsum(attention_mask, axis=-1) - 1, 0, None)
        real = attention_mask.astype(bool)
        with torch.inference_mode():
            expected = model(
                input_ids=torch.from_numpy(input_ids),
                attention_mask=torch.from_numpy(attention_mask),
                position_ids=torch.from_numpy(position_ids),
            ).logits.numpy()[real]
            generated = model.generate(
                input_ids=torch.from_numpy(input_ids),
                attention_mask=torch.from_numpy(attention_mask),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=reference.pad_token_id,
            )[:, input_ids.shape[1]:].tolist()
        expected_tokens = [_strip_eos(tokens, eos_token_ids) for tokens in generated]
        for name, generator in generators.items():
            stats[name].update(generator.logits(input_ids, attention_mask)[real], expected)
            if name not in greedy:
                continue
            actual_tokens = generator.generate_ids(batch, max_new_tokens=max_new_tokens)
            for row, (actual, wanted) in enumerate(zip(actual_tokens, expected_tokens)):
                greedy[name]["compared"] += 1
                if actual == wanted:
                    greedy[name]["identical"] += 1
                elif greedy[name]["first_different_prompt"] is None:
                    greedy[name]["first_different_prompt"] = batch_index * batch_size + row

    results = {}
    for name in variants:
        logits = stats[name].result()
        passed = within_tolerance(logits, name)
        record = {"logits": logits, "tolerance": VARIANT_TOLERANCES[name], "prompts": len(prompts)}
        if name in greedy:
            record["greedy"] = {**greedy[name], "max_new_tokens": max_new_tokens}
            if name == "fp32":
                passed = passed and greedy[name]["identical"] == greedy[name]["compared"]
        record["passed"] = passed
        results[name] = record
    return results


def write_parity(model_dir: Path, results: dict[str, dict], *, prompt_source: str) -> None:
    """Store ``results`` in ``model_dir/manifest.json`` under ``variants.<name>.parity``."""
    manifest_path = Path(model_dir) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for name, record in results.items():
        manifest["variants"][name]["parity"] = {**record, "prompt_source": prompt_source}
    manifest_path.write_text(json.dumps(manifest, indent=2))


def main(argv: list[str] | None = None) -> int:
    """Check the variants of an export against PyTorch on real prompts and print the results."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model-dir", type=Path, required=True, help="export directory with manifest.json")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="exported checkpoint directory (default: source_checkpoint from the manifest)")
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("SHOPSYNTH_DATA_DIR"),
                        help="dataset root (default: $SHOPSYNTH_DATA_DIR)")
    parser.add_argument("--count", type=int, default=100, help="number of real prompts")
    parser.add_argument("--max-new-tokens", type=int, default=24, help="greedy tokens per prompt")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per batch")
    parser.add_argument("--variants", nargs="*", default=None, help="variants to check (default: all exported)")
    parser.add_argument("--write-manifest", action="store_true", help="store the results in manifest.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.data_dir is None:
        parser.error("no dataset root: pass --data-dir or set SHOPSYNTH_DATA_DIR")

    manifest = json.loads((args.model_dir / "manifest.json").read_text())
    checkpoint = args.checkpoint or Path(manifest["source_checkpoint"])
    started_s = time.perf_counter()
    prompts = real_prompts(args.data_dir, count=args.count)
    results = variant_parity(args.model_dir, checkpoint, prompts, variants=tuple(args.variants or ()) or None,
                             batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    print(f"{'variant':8} {'max|diff|':>10} {'mean|diff|':>11} {'top-1':>7} {'positions':>9} {'greedy same':>12} passed")
    for name, record in results.items():
        logits = record["logits"]
        same = f"{record['greedy']['identical']}/{record['greedy']['compared']}" if "greedy" in record else "-"
        print(f"{name:8} {logits['max_abs_diff']:10.4f} {logits['mean_abs_diff']:11.5f} "
              f"{logits['top1_agreement']:7.4f} {logits['positions']:9d} {same:>12} {record['passed']}")
    print(f"{len(prompts)} prompts in {time.perf_counter() - started_s:.0f} s")
    if args.write_manifest:
        write_parity(args.model_dir, results, prompt_source="Myntra catalogue + Amazon 2018 gift cards metadata")
    return 0 if all(record["passed"] for record in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
