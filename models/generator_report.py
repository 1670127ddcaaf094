"""Markdown, JSON and PNG report of a generator evaluation (base model against fine-tuned)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from models.text_prep import TextExample

# (metric key, label, True when higher is better, format)
METRIC_ROWS = (
    ("bleu", "BLEU (0-100)", True, "{:.2f}"),
    ("rouge_l", "ROUGE-L F1", True, "{:.3f}"),
    ("distinct_1", "distinct-1", True, "{:.3f}"),
    ("distinct_2", "distinct-2", True, "{:.3f}"),
    ("perplexity_of_real_text", "perplexity of the real text", False, "{:.1f}"),
    ("centroid_cosine_distance", "embedding centroid distance to real text", False, "{:.4f}"),
    ("paired_cosine_similarity", "embedding cosine with the item's real text", True, "{:.3f}"),
    ("fidelity_rate", "attribute fidelity rate", True, "{:.3f}"),
    ("hallucinated_brand_rate", "hallucinated-brand rate", False, "{:.3f}"),
    ("safety_flag_rate", "safety-flag rate", False, "{:.3f}"),
    ("gate_rejection_rate", "gate rejection rate", False, "{:.3f}"),
    ("empty_texts", "empty texts", False, "{:.0f}"),
    ("sentiment_match_rate", "sentiment match (SnowNLP)", True, "{:.3f}"),
)
PLOTTED = ("bleu", "rouge_l", "fidelity_rate", "gate_rejection_rate", "distinct_2", "paired_cosine_similarity")
LANGUAGE_NAMES = {"en": "English", "zh": "Chinese"}
# Known size and noise limits of each source, shown under the source table.
SOURCE_NOTES = {
    "myntra": "Myntra descriptions follow one templated house style, so BLEU against them rewards the template.",
    "amazon2018": "Amazon 2018 Gift Cards metadata: few items have a usable description.",
    "office2014": "Office Products descriptions include marketing boilerplate and run-together bullet text.",
    "amazon2018-reviews": "Gift Cards reviews: about 150 items, short texts, and almost all rated 4-5 stars, "
                          "so negative reviews are rare in training and evaluation.",
    "advertisegen": "AdvertiseGen: only the first 5,000 training pairs plus the dev set; copies with the "
                    "upstream <UNK> mask are dropped and the BRAND mask removed; apparel only.",
    "online-shopping": "online_shopping_10_cats: no item ids or titles, so the listing is the category name "
                       "and each review is its own item; categories include hotels and one dairy brand.",
}


def _format(value: float | None, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return pattern.format(value)


def _sample(text: str, *, max_chars: int = 300) -> str:
    """Return ``text`` on one Markdown line, cut at ``max_chars`` with an ellipsis."""
    line = " ".join(text.split())
    if not line:
        return "(empty)"
    return line if len(line) <= max_chars else line[:max_chars] + "…"


def _metric_table(task: str, base: dict, tuned: dict) -> list[str]:
    lines = [f"| {task} metric | base | fine-tuned | real text | better |", "|---|---:|---:|---:|---|"]
    for key, label, higher_is_better, pattern in METRIC_ROWS:
        if key not in tuned:
            continue
        real = tuned.get(f"real_{key}")
        base_value, tuned_value = base.get(key), tuned.get(key)
        better = ""
        if isinstance(base_value, (int, float)) and isinstance(tuned_value, (int, float)) \
                and not (math.isnan(base_value) or math.isnan(tuned_value)) and base_value != tuned_value:
            better = "fine-tuned" if (tuned_value > base_value) == higher_is_better else "base"
        lines.append(f"| {label} | {_format(base_value, pattern)} | {_format(tuned_value, pattern)} | "
                     f"{_format(real, pattern) if real is not None else ''} | {better} |")
    return lines


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(report["metrics"]["fine_tuned"])
    figure, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        base, tuned = report["metrics"]["base"][task], report["metrics"]["fine_tuned"][task]
        # BLEU is on a 0-100 scale; it is divided by 100 to share the axis.
        labels = [key if key != "bleu" else "bleu/100" for key in PLOTTED]
        scale = [0.01 if key == "bleu" else 1.0 for key in PLOTTED]
        positions = range(len(PLOTTED))
        axis.bar([p - 0.2 for p in positions], [base[k] * s for k, s in zip(PLOTTED, scale)], 0.4, label="base")
        axis.bar([p + 0.2 for p in positions], [tuned[k] * s for k, s in zip(PLOTTED, scale)], 0.4,
                 label="fine-tuned")
        axis.set_xticks(list(positions), labels, rotation=30, ha="right")
        axis.set_title(f"{LANGUAGE_NAMES.get(report['language'], report['language'])} {task} ({base['texts']} items)")
        axis.set_ylim(0, 1)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(report: dict, *, examples: list[TextExample], samples: dict[str, dict[str, list[str]]],
                 output: Path) -> list[Path]:
    """Write ``<output>.md``, ``<output>.json`` and ``<output>.png``; return their paths."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # Suffixes are appended, so a name with a dot ("run-1.5") keeps it.
    json_path, markdown_path, png_path = (output.with_name(output.name + suffix) for suffix in (".json", ".md", ".png"))
    json_path.write_text(json.dumps(report, ensure_ascii=False, indent=2, default=str))
    _plot(report, png_path)

    training, corpus = report["training"], report["corpus"]
    language = LANGUAGE_NAMES.get(report["language"], report["language"])
    lines = [
        f"# Generator evaluation: {language}",
        "",
        f"Base checkpoint `{Path(report['base_dir']).name}`, fine-tuned for {training['max_steps']} steps "
        f"(batch {training['batch_size']}, learning rate {training['learning_rate']}, "
        f"{training['train_time_s']:.0f} s on CPU; train loss {training['train_loss']:.3f}, "
        f"validation loss {_format(training.get('eval_loss'), '{:.3f}')}).",
        f"Corpus: {corpus['train_examples']} training and {corpus['validation_examples']} held-out examples, "
        f"split by item; {corpus['evaluated_examples']} held-out items evaluated "
        f"(tasks: {', '.join(corpus['tasks'])}; at most {corpus['limit_per_source']} raw examples per source).",
        "Both models decode greedily in PyTorch with the same settings "
        f"({json.dumps(report['decoding'])}). Rates are shares of generated texts; the gates are those of "
        "the stream worker, with brands and categories of the whole corpus as the lexicon.",
        "",
        f"![metrics]({png_path.name})",
        "",
    ]
    if report.get("sources"):
        lines += ["## Data", "", "| source | task | examples | sentiments |", "|---|---|---:|---|"]
        for row in report["sources"]:
            sentiments = ", ".join(f"{name} {count}" for name, count in sorted(row["sentiments"].items()))
            lines.append(f"| {row['source']} | {row['task']} | {row['examples']} | {sentiments} |")
        lines.append("")
        lines += [f"- {SOURCE_NOTES[row['source']]}" for row in report["sources"] if row["source"] in SOURCE_NOTES]
        lines.append("")
    for task in report["metrics"]["fine_tuned"]:
        lines += [f"## {task.capitalize()}", ""]
        lines += _metric_table(task, report["metrics"]["base"][task], report["metrics"]["fine_tuned"][task])
        lines += ["", f"Samples ({task}):", ""]
        task_examples = [example for example in examples if example.task == task]
        for index, example in enumerate(task_examples[:3]):
            condition = f", rating {example.rating}" if example.rating else (
                f", {example.sentiment}" if example.sentiment else "")
            lines += [
                f"- **{example.listing['title']}**{condition}",
                f"  - real: {_sample(example.target)}",
                f"  - base: {_sample(samples['base'][task][index])}",
                f"  - fine-tuned: {_sample(samples['fine_tuned'][task][index])}",
            ]
        lines.append("")
    lines += [f"Evaluation time: {report['elapsed_s']:.0f} s.", ""]
    markdown_path.write_text("\n".join(lines))
    return [markdown_path, json_path, png_path]
