"""Supervised fine-tuning of the generator on (prompt, target) pairs, and a tiny test model.

Fine-tuning uses ``transformers.Trainer``: the loss covers the target tokens only
(prompt labels are -100) and every target ends with EOS, so the model learns
where a description stops.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path

import torch

from models.prompts import prompt_token_ids

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
# A prompt keeps at most max_length - MIN_TARGET_TOKENS tokens, so every example
# has some target tokens to learn from.
MIN_TARGET_TOKENS = 16


def available_cpu_count() -> int:
    """Return the number of CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def encode_pair(tokenizer, prompt: str, target: str, *, max_length: int) -> dict[str, list[int]]:
    """Tokenize one (prompt, target) pair into ``input_ids`` and ``labels``.

    The target is followed by the EOS token. When the pair is longer than
    ``max_length`` tokens, the prompt loses tokens from its start (its end contains
    the section header that cues the answer) and then the target loses tokens
    from its end, keeping EOS.
    """
    if max_length <= MIN_TARGET_TOKENS + 1:
        raise ValueError(f"invalid max_length {max_length}: expected more than {MIN_TARGET_TOKENS + 1}")
    prompt_ids = prompt_token_ids(tokenizer, prompt)
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    max_prompt_tokens = max_length - MIN_TARGET_TOKENS
    if len(prompt_ids) > max_prompt_tokens:
        prompt_ids = prompt_ids[-max_prompt_tokens:]
    max_target_tokens = max_length - len(prompt_ids) - 1
    target_ids = target_ids[:max_target_tokens] + [tokenizer.eos_token_id]
    return {
        "input_ids": prompt_ids + target_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + target_ids,
    }


class _PairCollator:
    """Right-pad encoded pairs into a batch of ``(B, T)`` tensors."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        length = max(len(example["input_ids"]) for example in examples)
        input_ids = torch.full((len(examples), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
        for row, example in enumerate(examples):
            size = len(example["input_ids"])
            input_ids[row, :size] = torch.tensor(example["input_ids"])
            labels[row, :size] = torch.tensor(example["labels"])
            attention_mask[row, :size] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _load_tokenizer(checkpoint_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer in {checkpoint_dir} has no EOS token; set eos_token in tokenizer_config.json")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def fine_tune(
    base_dir: Path,
    pairs: list[tuple[str, str]],
    output_dir: Path,
    *,
    max_steps: int = 200,
    learning_rate: float = 5e-5,
    batch_size: int = 4,
    max_length: int = 256,
    seed: int = 0,
    warmup_steps: int = 10,
    logging_steps: int = 10,
    num_threads: int | None = None,
    eval_pairs: list[tuple[str, str]] | None = None,
    checkpoint_dir: Path | None = None,
    save_steps: int = 50,
    resume: bool = False,
) -> Path:
    """Fine-tune a causal LM on (prompt, target) pairs and save it as safetensors.

    Parameters
    ----------
    base_dir : Path
        HF checkpoint directory (model and tokenizer).
    pairs : list of (str, str)
        (prompt, target) text pairs. Only target tokens (and the appended EOS)
        contribute to the loss.
    output_dir : Path
        Directory for the fine-tuned model, tokenizer and ``training_summary.json``.
    max_steps : int
        Optimizer steps. The pairs are reshuffled every epoch.
    learning_rate : float
        Peak AdamW learning rate, after ``warmup_steps`` of linear warm-up and
        followed by linear decay.
    batch_size : int
        Pairs per step.
    max_length : int
        Maximum tokens per pair; see :func:`encode_pair`.
    seed : int
        Seed for shuffling and initialisation; the same seed and inputs give the
        same weights on the same hardware and library versions.
    num_threads : int or None
        Torch CPU threads; None uses every core this process may run on.
    eval_pairs : list of (str, str) or None
        Validation pairs; their mean loss is logged every ``save_steps`` steps and
        stored in ``training_summary.json``.
    checkpoint_dir : Path or None
        Folder for Trainer checkpoints (weights, optimizer, scheduler and RNG
        state) every ``save_steps`` steps, the last two kept. None keeps no
        checkpoints.
    save_steps : int
        Steps between checkpoints and validation losses.
    resume : bool
        Continue from the newest checkpoint in ``checkpoint_dir``, if there is one.

    Returns
    -------
    Path
        ``output_dir``.
    """
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, set_seed

    if not pairs:
        raise ValueError("no training pairs: pass at least one (prompt, target) pair")
    if max_steps < 1 or batch_size < 1:
        raise ValueError(f"invalid max_steps={max_steps} or batch_size={batch_size}: both must be >= 1")
    base_dir, output_dir = Path(base_dir), Path(output_dir)
    torch.set_num_threads(num_threads or available_cpu_count())
    set_seed(seed)

    tokenizer = _load_tokenizer(base_dir)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    dataset = [encode_pair(tokenizer, prompt, target, max_length=max_length) for prompt, target in pairs]
    target_tokens = sum(sum(label != IGNORE_INDEX for label in example["labels"]) for example in dataset)
    logger.info(
        "fine-tuning %s on %d pairs (%d target tokens) for %d steps, batch %d, %d threads",
        base_dir, len(dataset), target_tokens, max_steps, batch_size, torch.get_num_threads(),
    )

    eval_dataset = [encode_pair(tokenizer, prompt, target, max_length=max_length)
                    for prompt, target in eval_pairs or []]
    resume_from = latest_checkpoint(checkpoint_dir) if resume and checkpoint_dir is not None else None
    if resume_from is not None:
        logger.info("resuming from checkpoint %s", resume_from)

    started_s = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="shopsynth-trainer-") as scratch_dir:
        args = TrainingArguments(
            output_dir=str(checkpoint_dir) if checkpoint_dir is not None else scratch_dir,
            max_steps=max_steps,
            per_device_train_batch_size=batch_size,
            learning_rate=learning_rate,
            lr_scheduler_type="linear",
            warmup_steps=min(warmup_steps, max_steps // 2),
            weight_decay=0.0,
            optim="adamw_torch",
            seed=seed,
            data_seed=seed,
            logging_steps=logging_steps,
            save_strategy="steps" if checkpoint_dir is not None else "no",
            save_steps=save_steps,
            save_total_limit=2,
            eval_strategy="steps" if eval_dataset else "no",
            eval_steps=save_steps,
            per_device_eval_batch_size=batch_size,
            report_to="none",
            disable_tqdm=False,
            dataloader_num_workers=0,
            remove_unused_columns=False,
            use_cpu=not torch.cuda.is_available(),
        )
        trainer = Trainer(
            model=model,
            args=args,
            data_collator=_PairCollator(tokenizer.pad_token_id),
            train_dataset=dataset,
            eval_dataset=eval_dataset or None,
            processing_class=tokenizer,
        )
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        # After a resume, Trainer's training_loss averages only this session's steps over all steps,
        # so the mean of the logged losses (restored with the checkpoint) is used instead.
        logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        train_loss = sum(logged) / len(logged) if resume_from and logged else result.training_loss
        steps_run = max_steps - (int(resume_from.name.split("-")[-1]) if resume_from else 0)
        eval_loss = _final_eval_loss(trainer, max_steps=max_steps) if eval_dataset else None
        elapsed_s = time.perf_counter() - started_s
        output_dir.mkdir(parents=True, exist_ok=True)
        trainer.save_model(str(output_dir))
    # Trainer also pickles its TrainingArguments; loading the model does not need them.
    (output_dir / "training_args.bin").unlink(missing_ok=True)
    tokenizer.save_pretrained(str(output_dir))

    summary = {
        "base_dir": str(base_dir),
        "num_pairs": len(pairs),
        "max_steps": max_steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "max_length": max_length,
        "seed": seed,
        "train_loss": train_loss,
        "eval_loss": eval_loss,
        "num_eval_pairs": len(eval_dataset),
        "resumed_from": str(resume_from) if resume_from else None,
        "train_time_s": round(elapsed_s, 2),
        "steps_run": steps_run,
        # None when a resume found every step done already.
        "seconds_per_step": round(elapsed_s / steps_run, 3) if steps_run else None,
    }
    (output_dir / "training_summary.json").write_text(json.dumps(summary, indent=2))
    logger.info("fine-tuned %s in %.1f s (%d steps run, mean train loss %.3f)",
                output_dir, elapsed_s, steps_run, train_loss)
    return output_dir


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """Return the ``checkpoint-<step>`` folder with the highest step, or None."""
    if checkpoint_dir is None or not Path(checkpoint_dir).is_dir():
        return None
    candidates = [
        path for path in Path(checkpoint_dir).glob("checkpoint-*")
        if path.is_dir() and path.name.split("-")[-1].isdigit()
    ]
    return max(candidates, key=lambda path: int(path.name.split("-")[-1]), default=None)


@torch.no_grad()
def mean_target_loss(
    checkpoint_dir: Path, pairs: list[tuple[str, str]], *, max_length: int = 256, batch_size: int = 8
) -> float:
    """Return the mean cross-entropy per target token of a checkpoint on (prompt, target) pairs.

    Uses the same encoding as :func:`fine_tune` (EOS appended, prompt tokens ignored).
    """
    from transformers import AutoModelForCausalLM

    tokenizer = _load_tokenizer(Path(checkpoint_dir))
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint_dir), dtype=torch.float32).eval()
    collator = _PairCollator(tokenizer.pad_token_id)
    encoded = [encode_pair(tokenizer, prompt, target, max_length=max_length) for prompt, target in pairs]
    total_loss = 0.0
    total_tokens = 0
    for start in range(0, len(encoded), batch_size):
        batch = collator(encoded[start : start + batch_size])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        # Token t predicts token t + 1: (B, T-1, V) against (B, T-1).
        shifted_logits = logits[:, :-1].reshape(-1, logits.shape[-1])
        shifted_labels = batch["labels"][:, 1:].reshape(-1)
        loss = torch.nn.functional.cross_entropy(
            shifted_logits, shifted_labels, ignore_index=IGNORE_INDEX, reduction="sum"
        )
        total_loss += float(loss)
        total_tokens += int((shifted_labels != IGNORE_INDEX).sum())
    if total_tokens == 0:
        return math.nan
    return total_loss / total_tokens


def make_tiny_checkpoint(tokenizer_source_dir: Path, output_dir: Path, *, seed: int = 0) -> Path:
    """Save a randomly initialised tiny Llama model with a real tokenizer, for tests.

    The model has hidden size 64, 2 layers, 4 attention heads and 2 key/value heads
    (grouped-query attention, like SmolLM2), with the vocabulary and special
    tokens of the tokenizer in ``tokenizer_source_dir``.

    Parameters
    ----------
    tokenizer_source_dir : Path
        Directory with tokenizer files, such as a converted base checkpoint.
    output_dir : Path
        Directory for the tiny checkpoint.
    seed : int
        Seed for the random weights.

    Returns
    -------
    Path
        ``output_dir``.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _load_tokenizer(Path(tokenizer_source_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        # Wider than the usual 0.02, so that random logits have clear maxima and
        # greedy decoding is not decided by float rounding.
        initializer_range=0.1,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    output_dir = Path(output_dir)
    model.save_pretrained(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
    logger.info("saved tiny checkpoint %s (%d parameters)", output_dir, model.num_parameters())
    return output_dir


def _final_eval_loss(trainer: "transformers.Trainer", *, max_steps: int) -> float:
    """Return the validation loss after the last step, evaluating only when Trainer has not already."""
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry and entry.get("step") == max_steps:
            return float(entry["eval_loss"])
    return float(trainer.evaluate()["eval_loss"])
