"""Fine-tuning of the tiny generator model: label masking, loss, reproducibility."""

from __future__ import annotations

import json

import pytest
from tests.generator_fixtures import LISTINGS, smollm2_tokenizer_dir, tiny_checkpoint_dir  # noqa: F401
from safetensors.numpy import load_file

from models.prompts import description_prompt
from models.train import IGNORE_INDEX, encode_pair, fine_tune, make_tiny_checkpoint, mean_target_loss

TARGETS = [
    "A slim blue shirt in soft cotton with a button-down collar.",
    "Keeps drinks cold for a day; fits most cup holders.",
    "Brown leather wallet with six card slots and a zipped coin pocket.",
]
PAIRS = [(description_prompt(listing), target) for listing, target in zip(LISTINGS, TARGETS)]


def test_encode_pair_masks_prompt(tiny_checkpoint_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_checkpoint_dir))
    prompt, target = PAIRS[0]
    encoded = encode_pair(tokenizer, prompt, target, max_length=256)
    prompt_length = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]

    assert len(encoded["input_ids"]) == len(encoded["labels"])
    assert encoded["labels"][:prompt_length] == [IGNORE_INDEX] * prompt_length
    assert encoded["labels"][prompt_length:] == target_ids + [tokenizer.eos_token_id]
    assert encoded["input_ids"][-1] == tokenizer.eos_token_id


def test_encode_pair_truncates_to_max_length(tiny_checkpoint_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_checkpoint_dir))
    prompt, _ = PAIRS[0]
    encoded = encode_pair(tokenizer, prompt, "word " * 300, max_length=48)
    assert len(encoded["input_ids"]) == 48
    assert encoded["labels"][-1] == tokenizer.eos_token_id
    assert sum(label != IGNORE_INDEX for label in encoded["labels"]) >= 16
    # The prompt keeps its end, which cues the description.
    prompt_tail = tokenizer(prompt, add_special_tokens=False)["input_ids"][-4:]
    first_target = next(index for index, label in enumerate(encoded["labels"]) if label != IGNORE_INDEX)
    assert encoded["input_ids"][first_target - 4 : first_target] == prompt_tail


def test_encode_pair_rejects_tiny_max_length(tiny_checkpoint_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_checkpoint_dir))
    with pytest.raises(ValueError, match="max_length"):
        encode_pair(tokenizer, "prompt", "target", max_length=8)


def test_fine_tune_lowers_loss(tiny_checkpoint_dir, tmp_path):
    loss_before = mean_target_loss(tiny_checkpoint_dir, PAIRS, max_length=128)
    output_dir = fine_tune(
        tiny_checkpoint_dir, PAIRS, tmp_path / "tuned", max_steps=12, learning_rate=3e-3, batch_size=3,
        max_length=128, seed=0, warmup_steps=2,
    )
    loss_after = mean_target_loss(output_dir, PAIRS, max_length=128)

    assert (output_dir / "model.safetensors").is_file()
    assert (output_dir / "tokenizer.json").is_file()
    summary = json.loads((output_dir / "training_summary.json").read_text())
    assert summary["max_steps"] == 12
    assert loss_after < loss_before - 0.5, (loss_before, loss_after)


def test_fine_tune_same_seed_same_weights(tiny_checkpoint_dir, tmp_path):
    settings = {"max_steps": 3, "learning_rate": 1e-3, "batch_size": 2, "max_length": 96, "warmup_steps": 0}
    first = load_file(str(fine_tune(tiny_checkpoint_dir, PAIRS, tmp_path / "a", seed=5, **settings) / "model.safetensors"))
    second = load_file(str(fine_tune(tiny_checkpoint_dir, PAIRS, tmp_path / "b", seed=5, **settings) / "model.safetensors"))
    assert first.keys() == second.keys()
    for name in first:
        assert (first[name] == second[name]).all(), name


def test_fine_tune_rejects_empty_pairs(tiny_checkpoint_dir, tmp_path):
    with pytest.raises(ValueError, match="no training pairs"):
        fine_tune(tiny_checkpoint_dir, [], tmp_path / "out")


def test_tiny_checkpoint_config(smollm2_tokenizer_dir, tmp_path):
    from transformers import AutoConfig

    output_dir = make_tiny_checkpoint(smollm2_tokenizer_dir, tmp_path / "tiny", seed=3)
    config = AutoConfig.from_pretrained(str(output_dir))
    assert config.model_type == "llama"
    assert config.hidden_size == 64
    assert config.num_hidden_layers == 2
    assert config.num_attention_heads == 4
    assert config.num_key_value_heads == 2
    assert config.vocab_size == 49152
    assert config.eos_token_id == 2


def test_fine_tune_resumes_from_checkpoint(tiny_checkpoint_dir, tmp_path):
    settings = {"learning_rate": 1e-3, "batch_size": 2, "max_length": 96, "warmup_steps": 0, "seed": 4,
                "save_steps": 2, "checkpoint_dir": tmp_path / "checkpoints"}
    straight = fine_tune(tiny_checkpoint_dir, PAIRS, tmp_path / "straight", max_steps=4,
                         **(settings | {"checkpoint_dir": tmp_path / "straight-checkpoints"}))
    fine_tune(tiny_checkpoint_dir, PAIRS, tmp_path / "first-half", max_steps=4, **settings)
    # Keep only the step-2 checkpoint, as if the run had stopped after step 2.
    for extra in (tmp_path / "checkpoints").glob("checkpoint-4"):
        import shutil

        shutil.rmtree(extra)
    resumed = fine_tune(tiny_checkpoint_dir, PAIRS, tmp_path / "resumed", max_steps=4, resume=True, **settings)

    summary = json.loads((resumed / "training_summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2")
    first = load_file(str(straight / "model.safetensors"))
    second = load_file(str(resumed / "model.safetensors"))
    for name in first:
        assert abs(first[name] - second[name]).max() < 1e-5, name


def test_fine_tune_reports_validation_loss(tiny_checkpoint_dir, tmp_path):
    output_dir = fine_tune(tiny_checkpoint_dir, PAIRS, tmp_path / "tuned", max_steps=2, batch_size=2,
                           max_length=96, eval_pairs=PAIRS[:2], save_steps=1)
    summary = json.loads((output_dir / "training_summary.json").read_text())
    assert summary["num_eval_pairs"] == 2
    assert summary["eval_loss"] > 0
