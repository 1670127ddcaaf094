"""Fixtures for the generator tests: the SmolLM2 tokenizer, a tiny Llama model and its ONNX export.

Import the fixtures by name into a test module. Each module builds its own copy,
which takes about 15 s on 2 idle CPU cores (fp32, int8 and fp16 graphs).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Greedy parity tolerance for fp32 logits, ONNX (CPU) vs PyTorch, on the tiny model.
LOGITS_TOLERANCE = 1e-4

LISTINGS = [
    {
        "item_id": "tiny-1",
        "title": "Blue cotton shirt",
        "brand": "Acme",
        "category": ["Men", "Shirts"],
        "attributes": {"fabric": "cotton", "fit": "slim"},
        "price": 19.5,
        "currency": "USD",
        "language": "en",
    },
    {"item_id": "tiny-2", "title": "Steel water bottle", "category": [], "attributes": {}, "price": None},
    {
        "item_id": "tiny-3",
        "title": "Leather wallet with coin pocket and six card slots",
        "brand": "Northfold",
        "category": ["Accessories"],
        "attributes": {"colour": "brown"},
        "price": 1299.0,
        "currency": "INR",
    },
]


@pytest.fixture(scope="module")
def smollm2_tokenizer_dir(tmp_path_factory) -> Path:
    """Directory with the SmolLM2 tokenizer read from the bundled GGUF file."""
    from models.base import find_smollm2_gguf, load_gguf_tokenizer

    try:
        gguf_path = find_smollm2_gguf()
    except FileNotFoundError as error:
        pytest.skip(f"SmolLM2 GGUF not installed: {error}")
    output_dir = tmp_path_factory.mktemp("smollm2-tokenizer")
    load_gguf_tokenizer(gguf_path).save_pretrained(str(output_dir))
    return output_dir


@pytest.fixture(scope="module")
def tiny_checkpoint_dir(smollm2_tokenizer_dir, tmp_path_factory) -> Path:
    """Randomly initialised tiny Llama checkpoint with the SmolLM2 tokenizer."""
    from models.train import make_tiny_checkpoint

    return make_tiny_checkpoint(smollm2_tokenizer_dir, tmp_path_factory.mktemp("tiny-checkpoint"), seed=0)


@pytest.fixture(scope="module")
def tiny_onnx_dir(tiny_checkpoint_dir, tmp_path_factory) -> Path:
    """ONNX export of the tiny checkpoint."""
    from export.onnx_export import export_decoder

    return export_decoder(tiny_checkpoint_dir, tmp_path_factory.mktemp("tiny-onnx"))


@pytest.fixture(scope="module")
def tiny_generator(tiny_onnx_dir):
    """``OnnxGenerator`` for the tiny export, on CPU."""
    from export.runtime import OnnxGenerator

    return OnnxGenerator(tiny_onnx_dir, providers=["CPUExecutionProvider"], intra_op_num_threads=1)


@pytest.fixture(scope="module")
def tiny_torch_model(tiny_checkpoint_dir):
    """The tiny checkpoint loaded in PyTorch (eager attention, eval mode)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_checkpoint_dir), attn_implementation="eager").eval()
