"""Synthetic descriptions for the cold items of the experiment, from a generator fine-tuned on warm items.

The generator is built with :func:`export.pipeline.build_generator` (cached by a
hash of its inputs) on (prompt, real description) pairs of items that are warm
in every seed's split, so it is never trained on the text of an item it writes for.
Generated texts are cached in a JSON file under the shopsynth cache directory
and filled in batch by batch, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.evaluate_data import Dataset
from models.prompts import clean_generation, description_prompt

logger = logging.getLogger(__name__)


def generate_synthetic_texts(
    dataset: Dataset,
    *,
    cold_items: list[str],
    train_items: list[str],
    base: str = "smollm2",
    train_steps: int = 40,
    max_pairs: int = 400,
    max_length: int = 256,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    seed: int = 0,
    cache_dir: Path | None = None,
    generator_dir: Path | None = None,
) -> tuple[dict[str, str], dict]:
    """Fine-tune a generator on ``train_items`` and write a description for every cold item.

    Parameters
    ----------
    dataset : Dataset
        Must have ``text_field == "description"``: the prompt shows title, brand
        and categories, so for a dataset whose text is the title the generated
        text would repeat the withheld text.
    cold_items : list of str
        Items to write for; their real text is never used.
    train_items : list of str
        Items whose real description trains the generator.
    base : str, default "smollm2"
        Base model name or checkpoint directory.
    train_steps : int, default 40
        Fine-tuning steps (batch of 4 pairs each).
    max_pairs : int, default 400
        Training pairs drawn at random from ``train_items`` with a description.
    max_length : int, default 256
        Maximum tokens per training pair (prompt and description).
    max_new_tokens : int, default 48
    batch_size : int, default 16
        Prompts per generation call.
    seed : int, default 0
    cache_dir : Path or None
        See ``models.base.resolve_cache_dir``.
    generator_dir : Path or None
        An exported ONNX generator to use as is; fine-tuning is skipped and the
        training settings are ignored.

    Returns
    -------
    (dict, dict)
        item_id to generated text (items whose generation came out empty are
        absent), and information about the generator (version, pairs, steps, timings).
    """
    from export.pipeline import build_generator, training_pairs_from_listings
    from export.runtime import OnnxGenerator
    from models.base import resolve_cache_dir

    if dataset.text_field != "description":
        raise ValueError(f"dataset {dataset.name} has text field {dataset.text_field!r}; synthetic "
                         "descriptions are only compared where the real text is a description")
    overlap = set(cold_items) & set(train_items)
    if overlap:
        raise ValueError(f"{len(overlap)} items are both cold and training items, e.g. {sorted(overlap)[:5]}")
    rng = np.random.default_rng(seed)
    with_text = sorted(item for item in train_items if item in dataset.texts)
    chosen = sorted(rng.choice(with_text, size=min(max_pairs, len(with_text)), replace=False).tolist())
    pairs = training_pairs_from_listings(
        [dict(dataset.listings[item], description=dataset.texts[item]) for item in chosen])
    started = time.perf_counter()
    if generator_dir is not None:
        model_dir = Path(generator_dir)
    else:
        checkpoint = _fine_tuned_checkpoint(base=base, pairs=pairs, train_steps=train_steps, seed=seed,
                                            max_length=max_length, cache_dir=cache_dir)
        # The export runs as its own cached step, so a failed export keeps the fine-tuned checkpoint.
        model_dir = build_generator(base=str(checkpoint), pairs=[], max_steps=0, seed=seed, cache_dir=cache_dir)
    build_s = time.perf_counter() - started
    generator = OnnxGenerator(model_dir)

    key = hashlib.sha256(json.dumps([generator.version, max_new_tokens, sorted(cold_items)]).encode()).hexdigest()[:16]
    cache_path = resolve_cache_dir(cache_dir) / "evaluate" / f"{dataset.name}-synthetic-{key}.json"
    texts: dict[str, str] = {}
    if cache_path.is_file():
        texts = json.loads(cache_path.read_text(encoding="utf-8"))
        logger.info("resuming synthetic texts from %s: %d of %d done", cache_path, len(texts), len(cold_items))
    todo = [item for item in cold_items if item not in texts]
    started = time.perf_counter()
    for start in tqdm(range(0, len(todo), batch_size), desc="generating descriptions"):
        batch = todo[start:start + batch_size]
        prompts = [description_prompt(dataset.listings[item]) for item in batch]
        outputs = generator.generate(prompts, max_new_tokens=max_new_tokens, seed=seed)
        for item, output in zip(batch, outputs):
            texts[item] = clean_generation(output)
        _write_atomic(cache_path, texts)
    generation_s = time.perf_counter() - started
    info = {"generator_version": generator.version, "provider": generator.provider,
            "base": base if generator_dir is None else str(generator_dir),
            "fine_tuned_here": generator_dir is None,
            "train_pairs": len(pairs), "train_steps": train_steps, "max_length": max_length, "max_new_tokens": max_new_tokens,
            "build_s": round(build_s, 1), "generation_s": round(generation_s, 1),
            "generated_now": len(todo)}
    logger.info("synthetic descriptions of %s cached at %s", dataset.name, cache_path)
    empty = sum(1 for item in cold_items if not texts.get(item))
    if empty:
        logger.warning("%d of %d synthetic descriptions are empty after cleaning", empty, len(cold_items))
    return {item: text for item, text in texts.items() if text}, info


def _fine_tuned_checkpoint(*, base: str, pairs: list[tuple[str, str]], train_steps: int, seed: int,
                           max_length: int, cache_dir: Path | None) -> Path:
    """Fine-tune ``base`` on ``pairs`` once and keep the checkpoint under the cache, keyed by the inputs."""
    from models.base import resolve_base_checkpoint, resolve_cache_dir
    from models.train import fine_tune

    # A short run needs a higher rate than the 5e-5 default of fine_tune, and a short warm-up.
    learning_rate, warmup_steps = 2e-4, max(1, train_steps // 4)
    key = hashlib.sha256(json.dumps([base, train_steps, seed, max_length, learning_rate, pairs]).encode()
                         ).hexdigest()[:16]
    checkpoint = resolve_cache_dir(cache_dir) / "evaluate" / f"checkpoint-{key}"
    if (checkpoint / "config.json").is_file():
        logger.info("reusing fine-tuned checkpoint %s", checkpoint)
        return checkpoint
    base_dir = resolve_base_checkpoint(base, cache_dir=cache_dir)
    temp = checkpoint.with_name(checkpoint.name + ".tmp")
    shutil.rmtree(temp, ignore_errors=True)
    fine_tune(base_dir, pairs, temp, max_steps=train_steps, max_length=max_length, seed=seed,
              learning_rate=learning_rate, warmup_steps=warmup_steps)
    os.replace(temp, checkpoint)
    return checkpoint


def _write_atomic(path: Path, texts: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    os.replace(temp, path)
