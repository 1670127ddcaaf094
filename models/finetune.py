"""Fine-tune the generator for descriptions and reviews on real data: shopsynth train-generator.

The command reads the real corpora of one language (models/corpora.py),
splits them by item, turns every example into a (task prompt, target) pair and
fine-tunes a base causal LM on both tasks at once. The output folder contains the
fine-tuned checkpoint, ``training_summary.json`` and ``split.json``. The split
file records how to rebuild the held-out split for ``shopsynth evaluate-generator``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from models.corpora import load_corpus, resolve_data_dir
from models.prompts import description_prompt, review_prompt
from models.text_prep import TextExample, split_by_item

logger = logging.getLogger(__name__)

SPLIT_FILE = "split.json"


@dataclass(frozen=True, kw_only=True)
class CorpusSpec:
    """Corpus options and split seed, saved so that an evaluation rebuilds the same split."""

    language: str
    tasks: tuple[str, ...] = ("description", "review")
    limit_per_source: int | None = 2000
    validation_share: float = 0.1
    split_seed: int = 0

    def load(self, *, data_dir: Path | str | None = None) -> tuple[list[TextExample], list[TextExample]]:
        """Read the corpus and return (train, validation) examples."""
        examples = load_corpus(self.language, data_dir=data_dir, tasks=self.tasks,
                               limit_per_source=self.limit_per_source)
        return split_by_item(examples, validation_share=self.validation_share, seed=self.split_seed)

    def save(self, folder: Path, *, validation_item_ids: list[str]) -> None:
        record = asdict(self) | {"validation_item_ids": sorted(set(validation_item_ids))}
        (Path(folder) / SPLIT_FILE).write_text(json.dumps(record, ensure_ascii=False, indent=2))

    @classmethod
    def read(cls, folder: Path) -> "CorpusSpec":
        path = Path(folder) / SPLIT_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; pass a --model folder written by `shopsynth train-generator`")
        record = json.loads(path.read_text())
        record.pop("validation_item_ids", None)
        record["tasks"] = tuple(record["tasks"])
        return cls(**record)


def example_prompt(example: TextExample) -> str:
    """Return the task prompt for ``example``: a description prompt or a rating/sentiment review prompt."""
    if example.task == "description":
        return description_prompt(example.listing)
    return review_prompt(example.listing, example.rating, sentiment=None if example.rating else example.sentiment)


def training_pairs(examples: list[TextExample], *, seed: int = 0) -> list[tuple[str, str]]:
    """Turn examples into shuffled (prompt, target) pairs."""
    pairs = [(example_prompt(example), example.target) for example in examples]
    random.Random(seed).shuffle(pairs)
    return pairs


def train_generator(
    *,
    base: str,
    output_dir: Path,
    spec: CorpusSpec,
    data_dir: Path | str | None = None,
    max_steps: int = 200,
    batch_size: int = 8,
    learning_rate: float = 1e-4,
    max_length: int = 256,
    max_eval_pairs: int = 64,
    save_steps: int = 50,
    resume: bool = False,
    seed: int = 0,
    cache_dir: Path | None = None,
) -> Path:
    """Fine-tune ``base`` on the corpus of ``spec`` and save checkpoint, summary and split.

    Parameters
    ----------
    base : str
        ``"smollm2"``, ``"gemma3"`` or a local Hugging Face causal-LM directory.
    output_dir : Path
        Folder for the fine-tuned model; checkpoints go to ``output_dir/checkpoints``.
    spec : CorpusSpec
        Language, tasks, source limits and split.
    max_eval_pairs : int
        Validation pairs used for the validation loss during training.
    resume : bool
        Continue from the newest checkpoint in ``output_dir/checkpoints``.

    Other parameters are those of :func:`models.train.fine_tune`.
    """
    from models.base import resolve_base_checkpoint
    from models.train import fine_tune, latest_checkpoint

    output_dir = Path(output_dir)
    check_training_options(max_steps=max_steps, batch_size=batch_size, learning_rate=learning_rate,
                           max_length=max_length, save_steps=save_steps, spec=spec)
    previous = latest_checkpoint(output_dir / "checkpoints")
    if resume and previous is None:
        raise ValueError(f"--resume: no checkpoint in {output_dir / 'checkpoints'}; run without --resume to start")
    if resume and previous is not None and int(previous.name.split("-")[-1]) > max_steps:
        raise ValueError(f"--resume: {previous.name} is past --steps {max_steps}; pass --steps above that step")
    if not resume and previous is not None:
        raise ValueError(f"{output_dir} already contains checkpoints of another run; pass --resume to continue "
                         "it or choose an empty --output folder")
    if resume and (output_dir / SPLIT_FILE).is_file() and CorpusSpec.read(output_dir) != spec:
        raise ValueError(f"--resume: the corpus options differ from those in {output_dir / SPLIT_FILE}; "
                         "pass the same --language, --tasks, --limit-per-source, --validation-share and --seed")

    base_dir = resolve_base_checkpoint(base, cache_dir=cache_dir)
    train_examples, validation_examples = spec.load(data_dir=data_dir)
    if not train_examples:
        raise ValueError(f"no training examples for language {spec.language!r} and tasks {list(spec.tasks)}; "
                         "check the dataset root (--data-dir or SHOPSYNTH_DATA_DIR)")
    if not validation_examples:
        raise ValueError("no held-out examples: raise --limit-per-source or --validation-share")
    output_dir.mkdir(parents=True, exist_ok=True)
    spec.save(output_dir, validation_item_ids=[example.item_id for example in validation_examples])
    logger.info("corpus %s: %d train and %d validation examples", spec.language,
                len(train_examples), len(validation_examples))

    return fine_tune(
        base_dir,
        training_pairs(train_examples, seed=seed),
        output_dir,
        max_steps=max_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        max_length=max_length,
        seed=seed,
        eval_pairs=training_pairs(validation_examples, seed=seed)[:max_eval_pairs],
        checkpoint_dir=output_dir / "checkpoints",
        save_steps=save_steps,
        resume=resume,
    )


def check_training_options(*, max_steps: int, batch_size: int, learning_rate: float, max_length: int,
                           save_steps: int, spec: CorpusSpec) -> None:
    """Raise ValueError, naming the command-line option, for a value that cannot train."""
    from models.text_prep import TASKS
    from models.train import MIN_TARGET_TOKENS

    for option, value in (("--steps", max_steps), ("--batch-size", batch_size), ("--save-steps", save_steps)):
        if value < 1:
            raise ValueError(f"invalid {option} {value}: expected 1 or more")
    if not learning_rate > 0:
        raise ValueError(f"invalid --learning-rate {learning_rate}: expected a value above 0, such as 1e-4")
    if max_length <= MIN_TARGET_TOKENS + 1:
        raise ValueError(f"invalid --max-length {max_length}: expected more than {MIN_TARGET_TOKENS + 1}")
    if spec.limit_per_source is not None and spec.limit_per_source < 1:
        raise ValueError(f"invalid --limit-per-source {spec.limit_per_source}: expected 1 or more")
    if not 0.0 < spec.validation_share < 1.0:
        raise ValueError(f"invalid --validation-share {spec.validation_share}: expected a value above 0 and below 1")
    unknown = [task for task in spec.tasks if task not in TASKS]
    if unknown or not spec.tasks:
        raise ValueError(f"invalid --tasks {','.join(spec.tasks)!r}: expected a comma-separated subset of {list(TASKS)}")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="shopsynth train-generator", description=__doc__)
    parser.add_argument("--base", default="smollm2",
                        help="'smollm2', 'gemma3' (writes Chinese) or a local Hugging Face directory (default: smollm2)")
    parser.add_argument("--language", choices=["en", "zh"], default="en", help="corpus language (default: en)")
    parser.add_argument("--tasks", default="description,review",
                        help="comma-separated tasks: description, review (default: both)")
    parser.add_argument("--output", type=Path, required=True, help="folder for the fine-tuned model")
    parser.add_argument("--data-dir", type=Path, help="dataset root (default: $SHOPSYNTH_DATA_DIR)")
    parser.add_argument("--limit-per-source", type=int, default=2000,
                        help="max raw examples per source file (default: 2000)")
    parser.add_argument("--validation-share", type=float, default=0.1,
                        help="share of items held out for validation (default: 0.1)")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps (default: 200)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step (default: 8)")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="peak AdamW learning rate (default: 1e-4)")
    parser.add_argument("--max-length", type=int, default=256, help="max tokens per pair (default: 256)")
    parser.add_argument("--save-steps", type=int, default=50,
                        help="steps between checkpoints and validation losses (default: 50)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    parser.add_argument("--seed", type=int, default=0, help="seed for split, shuffling and weights (default: 0)")
    return parser


def run(args: argparse.Namespace) -> int:
    tasks = tuple(task.strip() for task in args.tasks.split(",") if task.strip())
    spec = CorpusSpec(language=args.language, tasks=tasks, limit_per_source=args.limit_per_source,
                      validation_share=args.validation_share, split_seed=args.seed)
    output_dir = train_generator(
        base=args.base, output_dir=args.output, spec=spec, data_dir=resolve_data_dir(args.data_dir),
        max_steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
        max_length=args.max_length, save_steps=args.save_steps, resume=args.resume, seed=args.seed,
    )
    summary = json.loads((output_dir / "training_summary.json").read_text())
    print(f"fine-tuned model      : {output_dir}")
    print(f"train loss            : {summary['train_loss']:.3f}")
    if summary.get("eval_loss") is not None:
        print(f"validation loss       : {summary['eval_loss']:.3f} on {summary['num_eval_pairs']} pairs")
    per_step = summary["seconds_per_step"]
    print(f"time                  : {summary['train_time_s']:.0f} s for {summary['steps_run']} steps"
          + (f" ({per_step:.2f} s/step)" if per_step is not None else ""))
    return 0


# Errors a user can fix from the command line; each is printed as one "error:" line with exit status 2.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)


def run_command(run_args, args: argparse.Namespace) -> int:
    """Run ``run_args(args)``, printing a user error as one line instead of a traceback."""
    try:
        return run_args(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return run_command(run, args)
    except KeyboardInterrupt:
        print(f"interrupted; rerun the same command with --resume to continue from the newest checkpoint "
              f"in {args.output / 'checkpoints'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
