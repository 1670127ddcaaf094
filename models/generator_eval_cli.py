"""``shopsynth evaluate-generator``: fine-tuned generator against its base model, Markdown + PNG report."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

from models.corpora import resolve_data_dir
from models.fidelity import Lexicon
from models.finetune import CorpusSpec, run_command
from models.generator_eval import DecodingSettings, evaluate_checkpoint, sample_validation
from models.generator_report import write_report

logger = logging.getLogger(__name__)


def source_counts(examples) -> list[dict]:
    """Count examples per (source, task), with the sentiment mix of reviews."""
    counts: dict[tuple[str, str], dict] = {}
    for example in examples:
        row = counts.setdefault((example.source, example.task),
                                {"source": example.source, "task": example.task, "examples": 0, "sentiments": {}})
        row["examples"] += 1
        if example.sentiment:
            row["sentiments"][example.sentiment] = row["sentiments"].get(example.sentiment, 0) + 1
    return sorted(counts.values(), key=lambda row: (row["task"], row["source"]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shopsynth evaluate-generator", description=__doc__)
    parser.add_argument("--model", type=Path, required=True,
                        help="fine-tuned model folder written by `shopsynth train-generator`")
    parser.add_argument("--base", default=None,
                        help="base checkpoint to compare with (default: the base the model was trained from)")
    parser.add_argument("--data-dir", type=Path, help="dataset root (default: $SHOPSYNTH_DATA_DIR)")
    parser.add_argument("--per-task", type=int, default=40,
                        help="held-out examples per task, one per item (default: 40)")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="max generated tokens per text (default: 96)")
    parser.add_argument("--output", type=Path, required=True,
                        help="report path without suffix, e.g. docs/generator_report_en; .md, .json and .png files are written")
    parser.add_argument("--seed", type=int, default=0, help="seed for picking the held-out examples (default: 0)")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.per_task < 1:
        raise ValueError(f"invalid --per-task {args.per_task}: expected at least 1")
    if args.max_new_tokens < 1:
        raise ValueError(f"invalid --max-new-tokens {args.max_new_tokens}: expected at least 1")
    model_dir = Path(args.model)
    spec = CorpusSpec.read(model_dir)
    summary_path = model_dir / "training_summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path} not found: the training run in {model_dir} did not finish; "
                                "rerun `shopsynth train-generator` with --resume")
    summary = json.loads(summary_path.read_text())
    base_dir = Path(args.base) if args.base else Path(summary["base_dir"])
    if not (base_dir / "config.json").is_file():
        from models.base import resolve_base_checkpoint

        base_dir = resolve_base_checkpoint(str(args.base))

    started_s = time.perf_counter()
    train_examples, validation_examples = spec.load(data_dir=resolve_data_dir(args.data_dir))
    examples = sample_validation(validation_examples, per_task=args.per_task, seed=args.seed)
    if not examples:
        raise ValueError(f"no held-out examples in {model_dir}; retrain with a larger --limit-per-source")
    for task in spec.tasks:
        available = sum(1 for example in examples if example.task == task)
        if available < args.per_task:
            logger.warning("only %d held-out %s items, fewer than --per-task %d", available, task, args.per_task)
    # Brands and categories of the whole corpus, so that a brand from another item counts as hallucinated.
    lexicon = Lexicon.from_listings(example.listing for example in train_examples + validation_examples)
    decoding = DecodingSettings(max_new_tokens=args.max_new_tokens)
    logger.info("evaluating %s and %s on %d held-out examples", model_dir, base_dir, len(examples))

    base_metrics, base_samples = evaluate_checkpoint(base_dir, examples, language=spec.language,
                                                     lexicon=lexicon, decoding=decoding)
    tuned_metrics, tuned_samples = evaluate_checkpoint(model_dir, examples, language=spec.language,
                                                       lexicon=lexicon, decoding=decoding)
    report = {
        "language": spec.language,
        "model_dir": str(model_dir),
        "base_dir": str(base_dir),
        "training": summary,
        "sources": source_counts(train_examples + validation_examples),
        "corpus": {"train_examples": len(train_examples), "validation_examples": len(validation_examples),
                   "evaluated_examples": len(examples), "tasks": list(spec.tasks),
                   "limit_per_source": spec.limit_per_source, "validation_share": spec.validation_share},
        "decoding": dataclasses.asdict(decoding),
        "metrics": {"base": base_metrics, "fine_tuned": tuned_metrics},
        "elapsed_s": round(time.perf_counter() - started_s, 1),
    }
    paths = write_report(report, examples=examples, samples={"base": base_samples, "fine_tuned": tuned_samples},
                         output=Path(args.output))
    for path in paths:
        print(f"wrote {path}")
    for task in tuned_metrics:
        base, tuned = base_metrics[task], tuned_metrics[task]
        print(f"{task}: BLEU {base['bleu']:.2f} -> {tuned['bleu']:.2f}, ROUGE-L {base['rouge_l']:.3f} -> "
              f"{tuned['rouge_l']:.3f}, fidelity {base['fidelity_rate']:.2f} -> {tuned['fidelity_rate']:.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_command(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
