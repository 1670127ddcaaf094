"""Export variants (fp32, int8, fp16) of the tiny generator: manifest, cache paths and parity with PyTorch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tests.generator_fixtures import (  # noqa: F401
    LISTINGS,
    LOGITS_TOLERANCE,
    smollm2_tokenizer_dir,
    tiny_checkpoint_dir,
    tiny_onnx_dir,
    tiny_torch_model,
)

from export.variants import VARIANT_FILES, VARIANT_TOLERANCES, logits_agreement, within_tolerance
from models.prompts import description_prompt

PROMPTS = [description_prompt(listing) for listing in LISTINGS] + ["Hello", "A pair of running shoes"]
VARIANTS = ("fp32", "int8", "fp16")


@pytest.fixture(scope="module")
def generators(tiny_onnx_dir):
    from export.runtime import OnnxGenerator

    return {
        variant: OnnxGenerator(tiny_onnx_dir, providers=["CPUExecutionProvider"], intra_op_num_threads=1,
                               variant=variant)
        for variant in VARIANTS
    }


def _torch_logits(model, input_ids, attention_mask):
    position_ids = np.clip(np.cumsum(attention_mask, axis=-1) - 1, 0, None)
    with torch.inference_mode():
        return model(
            input_ids=torch.from_numpy(input_ids),
            attention_mask=torch.from_numpy(attention_mask),
            position_ids=torch.from_numpy(position_ids),
        ).logits.numpy()


def _assert_close(actual, expected, variant):
    if variant == "fp32":
        assert np.abs(actual - expected).max() < LOGITS_TOLERANCE
        assert (actual.argmax(-1) == expected.argmax(-1)).all()
    else:
        result = logits_agreement(actual, expected)
        assert within_tolerance(result, variant), f"{variant}: {result} outside {VARIANT_TOLERANCES[variant]}"


def test_manifest_records_variants(tiny_onnx_dir, tiny_checkpoint_dir):
    manifest = json.loads((tiny_onnx_dir / "manifest.json").read_text())
    assert manifest["opset"] == 17
    assert len(manifest["source_checkpoint_sha256"]) == 64
    assert Path(manifest["source_checkpoint"]) == tiny_checkpoint_dir.resolve()
    assert "tokenizer.json" in manifest["tokenizer"]["files"]
    assert len(manifest["tokenizer"]["sha256"]) == 64
    assert set(manifest["variants"]) == set(VARIANTS)
    for variant, record in manifest["variants"].items():
        assert record["file"] == VARIANT_FILES[variant]
        assert (tiny_onnx_dir / record["file"]).is_file()
        assert record["size_bytes"] == (tiny_onnx_dir / record["file"]).stat().st_size
        assert record["export_check"]["positions"] > 0
        assert record["export_check"]["top1_agreement"] >= record["tolerance"]["min_top1_agreement"]
    assert manifest["variants"]["fp16"]["dtype"] == "float16"
    assert manifest["variants"]["int8"]["dtype"] == "float32"


def test_export_checks_cover_past_zero_and_one(tiny_onnx_dir):
    manifest = json.loads((tiny_onnx_dir / "manifest.json").read_text())
    cases = manifest["variants"]["fp32"]["export_check"]["cases"]
    past_lengths = {case[2] for case in cases}
    batches = {case[0] for case in cases}
    assert {0, 1} <= past_lengths
    assert 1 in batches
    assert max(batches) > 1


def test_variant_graphs_share_interface(tiny_onnx_dir):
    manifest = json.loads((tiny_onnx_dir / "manifest.json").read_text())
    for variant in VARIANTS:
        graph = onnx.load(str(tiny_onnx_dir / VARIANT_FILES[variant]), load_external_data=False).graph
        assert [value.name for value in graph.input] == manifest["input_names"], variant
        assert [value.name for value in graph.output] == manifest["output_names"], variant
    int8_ops = {node.op_type for node in onnx.load(str(tiny_onnx_dir / VARIANT_FILES["int8"])).graph.node}
    assert "MatMulNBits" in int8_ops


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("prompts", [PROMPTS[:1], PROMPTS], ids=["batch1", "batch5"])
def test_prefill_past_zero_matches_torch(generators, tiny_torch_model, variant, prompts):
    generator = generators[variant]
    input_ids, attention_mask = generator.encode_left_padded(prompts, max_prompt_tokens=512)
    expected = _torch_logits(tiny_torch_model, input_ids, attention_mask)
    actual = generator.logits(input_ids, attention_mask)
    real = attention_mask.astype(bool)
    assert actual.shape == expected.shape
    assert actual.dtype == np.float32
    _assert_close(actual[real], expected[real], variant)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("prompts", [PROMPTS[:1], PROMPTS], ids=["batch1", "batch5"])
def test_decode_past_one_matches_torch(generators, tiny_torch_model, variant, prompts):
    generator = generators[variant]
    input_ids, _ = generator.encode_left_padded(prompts, max_prompt_tokens=512)
    # Unpadded two-token sequences: the first token fills a past of length 1.
    input_ids = input_ids[:, -2:]
    attention_mask = np.ones_like(input_ids)
    expected_last = _torch_logits(tiny_torch_model, input_ids, attention_mask)[:, -1]

    _, present = generator.forward(input_ids[:, :1], attention_mask[:, :1])
    assert all(value.shape[2] == 1 for value in present)
    assert present[0].dtype == generator.cache_dtype
    step_logits, step_present = generator.forward(
        input_ids[:, 1:], attention_mask, position_ids=np.ones((len(prompts), 1), dtype=np.int64),
        past_key_values=present,
    )
    assert all(value.shape[2] == 2 for value in step_present)
    _assert_close(step_logits[:, -1], expected_last, variant)


def test_last_logits_only_equal_full(generators):
    generator = generators["fp32"]
    input_ids, attention_mask = generator.encode_left_padded(PROMPTS, max_prompt_tokens=512)
    full = generator.logits(input_ids, attention_mask)
    last, _ = generator.forward(input_ids, attention_mask, num_logits_to_keep=1)
    assert last.shape == (len(PROMPTS), 1, full.shape[-1])
    assert np.abs(last[:, 0] - full[:, -1]).max() < 1e-5
    with pytest.raises(ValueError, match="num_logits_to_keep"):
        generator.forward(input_ids, attention_mask, num_logits_to_keep=0)


@pytest.mark.parametrize("variant", ["int8", "fp16"])
def test_variant_greedy_close_to_fp32(generators, variant):
    reference = generators["fp32"].generate_ids(PROMPTS, max_new_tokens=8)
    actual = generators[variant].generate_ids(PROMPTS, max_new_tokens=8)
    first_tokens_equal = sum(a[:1] == b[:1] for a, b in zip(actual, reference))
    assert len(actual) == len(PROMPTS)
    assert first_tokens_equal >= len(PROMPTS) - 1


def test_min_new_tokens_and_step_callback(generators):
    generator = generators["fp32"]
    steps = []
    token_ids = generator.generate_ids(PROMPTS, max_new_tokens=6, min_new_tokens=6, step_callback=steps.append)
    assert all(len(tokens) == 6 for tokens in token_ids)
    assert steps == list(range(6))
    with pytest.raises(ValueError, match="min_new_tokens"):
        generator.generate_ids(PROMPTS, max_new_tokens=2, min_new_tokens=3)


def test_generate_from_ids_equals_generate_ids(generators):
    generator = generators["fp32"]
    input_ids, attention_mask = generator.encode_left_padded(PROMPTS, max_prompt_tokens=512)
    from_ids = generator.generate_from_ids(input_ids, attention_mask, max_new_tokens=10)
    from_text = generator.generate_ids(PROMPTS, max_new_tokens=10)
    assert from_ids == from_text
    with pytest.raises(ValueError, match="shapes"):
        generator.generate_from_ids(input_ids, attention_mask[:, 1:])


def test_variant_selection_and_version(tiny_onnx_dir, generators):
    from export.runtime import OnnxGenerator

    default = OnnxGenerator(tiny_onnx_dir, providers=["CPUExecutionProvider"], intra_op_num_threads=1)
    manifest = json.loads((tiny_onnx_dir / "manifest.json").read_text())
    assert default.variant == "fp32"
    assert default.version == manifest["generator_version"]
    assert generators["int8"].version == f"{manifest['generator_version']}-int8"
    assert generators["fp16"].provider == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="bf16"):
        OnnxGenerator(tiny_onnx_dir, providers=["CPUExecutionProvider"], variant="bf16")


def test_session_options_use_physical_cores():
    from export.session import physical_core_count, session_options

    options = session_options()
    assert options.intra_op_num_threads == physical_core_count()
    assert options.inter_op_num_threads == 1
    assert options.enable_mem_pattern
    assert session_options(intra_op_num_threads=3).intra_op_num_threads == 3


def test_parity_on_tiny_model(tiny_onnx_dir, tiny_checkpoint_dir):
    from export.parity import variant_parity, write_parity

    results = variant_parity(tiny_onnx_dir, tiny_checkpoint_dir, PROMPTS, batch_size=2, max_new_tokens=6,
                             intra_op_num_threads=1)
    assert set(results) == set(VARIANTS)
    assert results["fp32"]["passed"]
    assert results["fp32"]["greedy"]["identical"] == len(PROMPTS)
    assert results["fp32"]["logits"]["max_abs_diff"] < LOGITS_TOLERANCE
    assert "greedy" not in results["fp16"]
    assert results["int8"]["logits"]["positions"] == results["fp32"]["logits"]["positions"]

    write_parity(tiny_onnx_dir, results, prompt_source="test listings")
    manifest = json.loads((tiny_onnx_dir / "manifest.json").read_text())
    assert manifest["variants"]["int8"]["parity"]["prompt_source"] == "test listings"


@pytest.mark.skipif(not os.environ.get("SHOPSYNTH_DATA_DIR"), reason="SHOPSYNTH_DATA_DIR is not set")
def test_real_prompts_from_datasets():
    from export.parity import real_prompts

    prompts = real_prompts(Path(os.environ["SHOPSYNTH_DATA_DIR"]), count=10)
    assert len(prompts) == 10
    assert len(set(prompts)) == 10
