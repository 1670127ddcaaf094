"""train-generator and evaluate-generator end to end with a tiny model on a small Chinese corpus."""

from __future__ import annotations

import csv
import gzip
import json

import pytest
from tests.generator_fixtures import smollm2_tokenizer_dir, tiny_checkpoint_dir  # noqa: F401

from models.corpora import ADVERTISEGEN_DIR, ONLINE_SHOPPING_DIR
from models.finetune import CorpusSpec, example_prompt
from models.text_prep import TextExample

COLOURS = ["白色", "黑色", "红色", "蓝色", "灰色", "粉色"]
TYPES = [("上衣", "外套"), ("裙", "连衣裙"), ("裤", "阔腿裤")]


def _write_corpus(root):
    (root / ADVERTISEGEN_DIR).mkdir(parents=True)
    (root / ONLINE_SHOPPING_DIR).mkdir(parents=True)
    for name, offset in (("train_head5000.jsonl.gz", 0), ("dev.jsonl.gz", 1)):
        with gzip.open(root / ADVERTISEGEN_DIR / name, "wt", encoding="utf-8") as handle:
            for index in range(30):
                colour = COLOURS[(index + offset) % len(COLOURS)]
                kind, style = TYPES[index % len(TYPES)]
                content = f"类型#{kind}*颜色#{colour}*款式#{style}{index}{offset}"
                summary = f"这款{colour}的{style}设计简约，版型合身，面料舒适透气，第{index}款日常百搭。"
                handle.write(json.dumps({"content": content, "summary": summary}, ensure_ascii=False) + "\n")
    with gzip.open(root / ONLINE_SHOPPING_DIR / "online_shopping_10_cats.csv.gz", "wt", encoding="utf-8",
                   newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cat", "label", "review"])
        for index in range(40):
            if index % 2:
                writer.writerow(["衣服", "1", f"衣服质量很好，穿着很舒服，第{index}次购买，非常满意。"])
            else:
                writer.writerow(["水果", "0", f"水果不新鲜，有好几个烂了，第{index}次买到这样，很失望。"])


def test_example_prompt_uses_rating_or_sentiment():
    listing = {"item_id": "x", "title": "书籍", "language": "zh"}
    review = TextExample(task="review", language="zh", item_id="x", listing=listing, target="t",
                         sentiment="negative")
    rated = TextExample(task="review", language="en", item_id="x", listing=listing | {"language": "en"},
                        target="t", rating=4, sentiment="positive")
    assert "Sentiment: negative" in example_prompt(review)
    assert "Rating: 4/5" in example_prompt(rated)


def test_corpus_spec_round_trip(tmp_path):
    spec = CorpusSpec(language="zh", tasks=("review",), limit_per_source=50, validation_share=0.3, split_seed=2)
    spec.save(tmp_path, validation_item_ids=["b", "a", "a"])
    assert CorpusSpec.read(tmp_path) == spec
    assert json.loads((tmp_path / "split.json").read_text())["validation_item_ids"] == ["a", "b"]
    with pytest.raises(FileNotFoundError, match="train-generator"):
        CorpusSpec.read(tmp_path / "missing")


@pytest.mark.slow
def test_train_and_evaluate_tiny_generator(tiny_checkpoint_dir, tmp_path, capsys):
    from models.finetune import main as train_main
    from models.generator_eval_cli import main as evaluate_main

    data_dir = tmp_path / "data"
    _write_corpus(data_dir)
    model_dir = tmp_path / "model"
    assert train_main([
        "--base", str(tiny_checkpoint_dir), "--language", "zh", "--output", str(model_dir),
        "--data-dir", str(data_dir), "--steps", "4", "--batch-size", "4", "--max-length", "96",
        "--save-steps", "2", "--validation-share", "0.3", "--learning-rate", "3e-3",
    ]) == 0
    assert (model_dir / "model.safetensors").is_file()
    assert (model_dir / "checkpoints" / "checkpoint-4").is_dir()
    split = json.loads((model_dir / "split.json").read_text())
    assert split["language"] == "zh"
    assert split["validation_item_ids"]

    report_path = tmp_path / "report" / "generator_zh"
    assert evaluate_main([
        "--model", str(model_dir), "--data-dir", str(data_dir), "--per-task", "3",
        "--max-new-tokens", "12", "--output", str(report_path),
    ]) == 0
    report = json.loads(report_path.with_suffix(".json").read_text())
    assert (report_path.with_suffix(".png")).stat().st_size > 0
    markdown = report_path.with_suffix(".md").read_text()
    assert "| BLEU (0-100) |" in markdown
    for model in ("base", "fine_tuned"):
        assert set(report["metrics"][model]) == {"description", "review"}
        for task, scores in report["metrics"][model].items():
            assert scores["texts"] == 3, (model, task)
            assert 0.0 <= scores["gate_rejection_rate"] <= 1.0
            assert scores["perplexity_of_real_text"] > 1.0
        assert "sentiment_match_rate" in report["metrics"][model]["review"]
    # Four steps at a high learning rate on a repetitive corpus must lower the real text's perplexity.
    base_ppl = report["metrics"]["base"]["description"]["perplexity_of_real_text"]
    tuned_ppl = report["metrics"]["fine_tuned"]["description"]["perplexity_of_real_text"]
    assert tuned_ppl < base_ppl
    assert "BLEU" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--steps", "0", "invalid --steps 0"),
        ("--batch-size", "-1", "invalid --batch-size -1"),
        ("--save-steps", "0", "invalid --save-steps 0"),
        ("--learning-rate", "-1", "invalid --learning-rate -1"),
        ("--limit-per-source", "0", "invalid --limit-per-source 0"),
        ("--validation-share", "1", "invalid --validation-share 1.0"),
        ("--tasks", "summary", "invalid --tasks 'summary'"),
    ],
)
def test_train_generator_rejects_option_before_writing(option, value, message, tmp_path, capsys):
    from models.finetune import main as train_main

    output = tmp_path / "model"
    output.mkdir()
    (output / "split.json").write_text("kept")
    assert train_main(["--output", str(output), "--data-dir", str(tmp_path), option, value]) == 2
    assert message in capsys.readouterr().err
    assert (output / "split.json").read_text() == "kept"


def test_train_generator_resume_needs_checkpoint(tmp_path, capsys):
    from models.finetune import main as train_main

    assert train_main(["--output", str(tmp_path / "empty"), "--data-dir", str(tmp_path), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_train_generator_rejects_used_folder(tmp_path, capsys):
    from models.finetune import main as train_main

    (tmp_path / "model" / "checkpoints" / "checkpoint-6").mkdir(parents=True)
    assert train_main(["--output", str(tmp_path / "model"), "--data-dir", str(tmp_path), "--steps", "4"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert train_main(["--output", str(tmp_path / "model"), "--data-dir", str(tmp_path), "--steps", "4",
                       "--resume"]) == 2
    assert "past --steps 4" in capsys.readouterr().err


def test_evaluate_generator_needs_training_folder(tmp_path, capsys):
    from models.generator_eval_cli import main as evaluate_main

    assert evaluate_main(["--model", str(tmp_path), "--output", str(tmp_path / "report")]) == 2
    assert "split.json not found" in capsys.readouterr().err


def test_global_options_reach_delegated_commands(tmp_path, capsys):
    from streams.cli import main as cli_main

    argv = ["train-generator", "--output", str(tmp_path / "empty"), "--data-dir", str(tmp_path), "--resume"]
    assert cli_main(["--log-level", "warning", *argv]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert cli_main(["--log-level=loud", *argv]) == 2
    assert "invalid --log-level 'loud'" in capsys.readouterr().err
    assert cli_main(["--topic-prefix", "x.", *argv]) == 2
    assert "--topic-prefix has no effect on train-generator" in capsys.readouterr().err
