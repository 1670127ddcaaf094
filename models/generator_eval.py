"""Evaluate a fine-tuned generator against its base model on the held-out split.

Both checkpoints write text for the same validation examples with the same
decoding settings (greedy, repetition penalty, no-repeat n-gram), in PyTorch.
Every text goes through the quality and safety gates, and the metrics of
:mod:`models.text_metrics` compare it with the real text of the same item.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from models import quality
from models.fidelity import Lexicon
from models.finetune import example_prompt
from models.near_duplicate import NearDuplicateIndex

from models.text_metrics import (
    corpus_bleu,
    distinct_n,
    embed_texts,
    embedding_distances,
    mean_rouge_l,
)
from models.text_prep import TextExample, sentiment_from_classifier
from models.prompts import clean_generation, prompt_token_ids
from models.train import available_cpu_count, mean_target_loss

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DecodingSettings:
    """Decoding used for both models in an evaluation (greedy, so the run is deterministic)."""

    max_new_tokens: int = 96
    repetition_penalty: float = 1.15
    no_repeat_ngram_size: int = 4
    batch_size: int = 8
    max_prompt_tokens: int = 384


def sample_validation(examples: list[TextExample], *, per_task: int, seed: int = 0) -> list[TextExample]:
    """Pick up to ``per_task`` validation examples of each task, one per item, in a seeded order."""
    picked: list[TextExample] = []
    for task in sorted({example.task for example in examples}):
        seen_items: set[str] = set()
        candidates = []
        for example in examples:
            if example.task == task and example.item_id not in seen_items:
                seen_items.add(example.item_id)
                candidates.append(example)
        random.Random(seed).shuffle(candidates)
        picked.extend(candidates[:per_task])
    return picked


@torch.no_grad()
def generate_texts(checkpoint_dir: Path, prompts: list[str], *, decoding: DecodingSettings) -> list[str]:
    """Generate one cleaned text per prompt with a PyTorch checkpoint (left-padded batches)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(available_cpu_count())
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint_dir), dtype=torch.float32).eval()
    texts: list[str] = []
    started_s = time.perf_counter()
    for start in range(0, len(prompts), decoding.batch_size):
        token_lists = [prompt_token_ids(tokenizer, prompt)[-decoding.max_prompt_tokens:]
                       for prompt in prompts[start:start + decoding.batch_size]]
        length = max(len(tokens) for tokens in token_lists)
        # (B, T) left padded, so every row's next token follows its last prompt token.
        input_ids = torch.full((len(token_lists), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(token_lists), length), dtype=torch.long)
        for row, tokens in enumerate(token_lists):
            input_ids[row, length - len(tokens):] = torch.tensor(tokens)
            attention_mask[row, length - len(tokens):] = 1
        output = model.generate(
            input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
            max_new_tokens=decoding.max_new_tokens, repetition_penalty=decoding.repetition_penalty,
            no_repeat_ngram_size=decoding.no_repeat_ngram_size, pad_token_id=pad_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        for row in output[:, length:]:
            texts.append(clean_generation(tokenizer.decode(row, skip_special_tokens=True)))
        logger.info("generated %d/%d texts with %s (%.0f s)", len(texts), len(prompts),
                    Path(checkpoint_dir).name, time.perf_counter() - started_s)
    return texts


def gate_texts(texts: list[str], examples: list[TextExample], *, lexicon: Lexicon) -> list[dict]:
    """Run the quality and safety gates on each text; the near-duplicate index spans the run."""
    gate = quality.QualityGate()
    index = NearDuplicateIndex()
    results = []
    for text, example in zip(texts, examples):
        checks = gate.check(text, example.listing, task=example.task, lexicon=lexicon, near_duplicates=index)
        if quality.passed(checks):
            index.add(text, item_id=example.item_id)
        results.append(checks)
    return results


def score_texts(texts: list[str], examples: list[TextExample], checks: list[dict], *, language: str,
                lexicon: Lexicon) -> dict:
    """Compute the reference, diversity, embedding and gate metrics of one model on one task.

    The gate rates are also computed on the real texts (``real_*`` keys), which
    shows how often the gates reject text that people wrote.
    """
    references = [example.target for example in examples]
    rates = quality.gate_rates(checks)
    real_checks = gate_texts(references, examples, lexicon=lexicon)
    real_rates = {f"real_{key}": value for key, value in quality.gate_rates(real_checks).items() if key != "texts"}
    rejected_real = sum(1 for c in real_checks if not quality.passed(c))
    real_rates["real_gate_rejection_rate"] = rejected_real / max(1, len(real_checks))
    distances = embedding_distances(embed_texts(texts), embed_texts(references))
    scores = {
        "texts": len(texts),
        "empty_texts": sum(1 for text in texts if not text),
        "bleu": corpus_bleu(texts, references, language=language),
        "rouge_l": mean_rouge_l(texts, references, language=language),
        "distinct_1": distinct_n(texts, 1, language=language),
        "distinct_2": distinct_n(texts, 2, language=language),
        "real_distinct_1": distinct_n(references, 1, language=language),
        "real_distinct_2": distinct_n(references, 2, language=language),
        "gate_rejection_rate": sum(1 for c in checks if not quality.passed(c)) / max(1, len(checks)),
        **rates,
        **real_rates,
        **distances,
    }
    if language == "zh" and examples and examples[0].task == "review":
        expected = [example.sentiment for example in examples]
        matched = [sentiment_from_classifier(text) == label for text, label in zip(texts, expected) if text]
        scores["sentiment_match_rate"] = sum(matched) / max(1, len(matched))
        real_matched = [sentiment_from_classifier(text) == label for text, label in zip(references, expected)]
        scores["real_sentiment_match_rate"] = sum(real_matched) / max(1, len(real_matched))
    return scores


def evaluate_checkpoint(
    checkpoint_dir: Path, examples: list[TextExample], *, language: str, lexicon: Lexicon,
    decoding: DecodingSettings,
) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """Generate, gate and score one checkpoint on ``examples``, per task.

    Returns
    -------
    (dict, dict)
        Metrics per task, and the generated texts per task (in example order).
    """
    metrics: dict[str, dict] = {}
    samples: dict[str, list[str]] = {}
    for task in sorted({example.task for example in examples}):
        task_examples = [example for example in examples if example.task == task]
        prompts = [example_prompt(example) for example in task_examples]
        texts = generate_texts(checkpoint_dir, prompts, decoding=decoding)
        checks = gate_texts(texts, task_examples, lexicon=lexicon)
        scores = score_texts(texts, task_examples, checks, language=language, lexicon=lexicon)
        loss = mean_target_loss(checkpoint_dir, list(zip(prompts, [e.target for e in task_examples])))
        scores["perplexity_of_real_text"] = math.exp(loss) if not math.isnan(loss) else float("nan")
        metrics[task] = scores
        samples[task] = texts
        logger.info("evaluated %s on %d %s examples: bleu=%.2f rouge_l=%.3f", Path(checkpoint_dir).name,
                    len(task_examples), task, scores["bleu"], scores["rouge_l"])
    return metrics, samples
