"""End-to-end generator build on the tiny model: fine-tune, export, cache reuse."""

from __future__ import annotations

import json
import multiprocessing

import pytest
from tests.generator_fixtures import LISTINGS, smollm2_tokenizer_dir, tiny_checkpoint_dir  # noqa: F401

from export.pipeline import build_generator, build_key, training_pairs_from_listings
from export.runtime import OnnxGenerator

DESCRIBED = [
    {**listing, "description": f"Description number {index} of a useful everyday product."}
    for index, listing in enumerate(LISTINGS)
]


def _build(tiny_dir: str, cache_dir: str, queue) -> None:
    path = build_generator(base=tiny_dir, pairs=training_pairs_from_listings(DESCRIBED), cache_dir=cache_dir,
                           max_steps=2, batch_size=2, max_length=96, seed=4)
    queue.put(str(path))


def test_build_generator_and_reuse(tiny_checkpoint_dir, tmp_path, monkeypatch):
    pairs = training_pairs_from_listings(DESCRIBED)
    settings = {"max_steps": 3, "seed": 1, "batch_size": 2, "max_length": 96}
    onnx_dir = build_generator(base=str(tiny_checkpoint_dir), pairs=pairs, cache_dir=tmp_path, **settings)

    assert onnx_dir.parent.parent == tmp_path / "generators"
    assert (onnx_dir / "model.onnx").is_file()
    assert (onnx_dir.parent / "checkpoint" / "model.safetensors").is_file()
    build_info = json.loads((onnx_dir.parent / "build.json").read_text())
    assert build_info["num_pairs"] == 3
    generator = OnnxGenerator(onnx_dir, providers=["CPUExecutionProvider"])
    assert len(generator.generate(["Title: mug"], max_new_tokens=4)) == 1

    def fail(*args, **kwargs):
        raise AssertionError("a cached build must not fine-tune or export again")

    monkeypatch.setattr("export.pipeline.fine_tune", fail)
    monkeypatch.setattr("export.pipeline.export_decoder", fail)
    assert build_generator(base=str(tiny_checkpoint_dir), pairs=pairs, cache_dir=tmp_path, **settings) == onnx_dir

    with pytest.raises(AssertionError, match="must not fine-tune"):
        build_generator(base=str(tiny_checkpoint_dir), pairs=pairs, cache_dir=tmp_path, force=True, **settings)
    assert (onnx_dir / "manifest.json").is_file()


def test_build_key_depends_on_inputs(tiny_checkpoint_dir):
    pairs = training_pairs_from_listings(DESCRIBED)
    settings = {"max_steps": 3, "seed": 1}
    key = build_key(base=str(tiny_checkpoint_dir), pairs=pairs, settings=settings)
    assert key == build_key(base=str(tiny_checkpoint_dir), pairs=list(pairs), settings=dict(settings))
    assert key != build_key(base=str(tiny_checkpoint_dir), pairs=pairs[:2], settings=settings)
    assert key != build_key(base=str(tiny_checkpoint_dir), pairs=pairs, settings={**settings, "seed": 2})
    assert key != build_key(base="smollm2", pairs=pairs, settings=settings)


def test_build_without_fine_tuning(tiny_checkpoint_dir, tmp_path):
    onnx_dir = build_generator(base=str(tiny_checkpoint_dir), pairs=[], cache_dir=tmp_path, max_steps=0,
                               keep_checkpoint=False)
    assert (onnx_dir / "manifest.json").is_file()
    assert not (onnx_dir.parent / "checkpoint").exists()


def test_build_rejects_empty_pairs(tiny_checkpoint_dir, tmp_path):
    with pytest.raises(ValueError, match="no training pairs"):
        build_generator(base=str(tiny_checkpoint_dir), pairs=[], cache_dir=tmp_path, max_steps=5)


def test_concurrent_builds_share_result(tiny_checkpoint_dir, tmp_path):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [
        context.Process(target=_build, args=(str(tiny_checkpoint_dir), str(tmp_path), queue)) for _ in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    assert [process.exitcode for process in processes] == [0, 0]
    results = {queue.get(timeout=5) for _ in processes}
    assert len(results) == 1
    builds = [path for path in (tmp_path / "generators").iterdir() if path.is_dir()]
    assert len(builds) == 1, builds
