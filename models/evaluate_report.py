"""Markdown report and PNG plots of the cold-start experiment, with confidence intervals over seeds."""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

logger = logging.getLogger(__name__)

RECOMMENDER_METRICS = ("auc", "recall@20", "ndcg@20")
SEARCH_METRICS = ("recall@10", "mrr")
VARIANT_LABELS = {
    "cf": "(a) collaborative filtering only",
    "metadata": "(b) metadata",
    "metadata+real": "(c) metadata + real text (upper bound)",
    "metadata+synthetic": "(d) metadata + synthetic text",
}


def mean_ci(values: list[float], *, confidence: float = 0.95) -> tuple[float, float]:
    """Return the mean and the half-width of its Student-t confidence interval (nan for one value)."""
    array = np.asarray(values, dtype=np.float64)
    if len(array) < 2:
        return float(array.mean()), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, len(array) - 1) * array.std(ddof=1) / math.sqrt(len(array))
    return float(array.mean()), float(half)


def _format(mean: float, half: float) -> str:
    return f"{mean:.4f}" if math.isnan(half) else f"{mean:.4f} ± {half:.4f}"


def summarise(rows: list[dict], *, group_keys: tuple[str, ...], metrics: list[str]) -> dict[tuple, dict]:
    """Group rows by ``group_keys`` (in first-seen order) and summarise each metric as (mean, CI half-width)."""
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        grouped[tuple(row[key] for key in group_keys)].append(row)
    return {key: {metric: mean_ci([row[metric] for row in group]) for metric in metrics}
            | {"n_seeds": len(group)} for key, group in grouped.items()}


def _plot(summary: dict[tuple, dict], *, metrics: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(summary)
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6))
    for axis, metric in zip(np.atleast_1d(axes), metrics):
        means = [summary[key][metric][0] for key in groups]
        errors = [0.0 if math.isnan(summary[key][metric][1]) else summary[key][metric][1] for key in groups]
        axis.bar(range(len(groups)), means, yerr=errors, capsize=4, color="tab:blue")
        axis.set_xticks(range(len(groups)))
        axis.set_xticklabels([key[-1] for key in groups], rotation=30, ha="right", fontsize=8)
        axis.set_title(metric, fontsize=10)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def paired_difference(rows: list[dict], *, key: str, metric: str, better: str, worse: str,
                      match: tuple[str, ...] = ("dataset", "seed")) -> tuple[float, float, int]:
    """Return mean and CI half-width of ``metric(better) - metric(worse)`` over rows matched on ``match``."""
    by_match: dict[tuple, dict] = defaultdict(dict)
    for row in rows:
        by_match[tuple(row[name] for name in match)][row[key]] = row[metric]
    differences = [values[better] - values[worse] for values in by_match.values()
                   if better in values and worse in values]
    if not differences:
        return float("nan"), float("nan"), 0
    mean, half = mean_ci(differences)
    return mean, half, len(differences)


def _judge(mean: float, half: float) -> str:
    if math.isnan(half):
        return "not enough seeds to judge"
    if mean - half > 0:
        return "gain"
    if mean + half < 0:
        return "loss"
    return "no significant difference"


def _verdicts(runs: list[dict], search: list[dict]) -> list[str]:
    lines = []
    comparisons = (("metadata", "cf"), ("metadata+real", "metadata"), ("metadata+synthetic", "metadata"),
                   ("metadata+synthetic", "metadata+real"))
    for dataset in dict.fromkeys(row["dataset"] for row in runs):
        dataset_runs = [row for row in runs if row["dataset"] == dataset]
        for better, worse in comparisons:
            for metric in ("cold_recall@20", "cold_ndcg@20", "warm_recall@20"):
                mean, half, n = paired_difference(dataset_runs, key="variant", metric=metric,
                                                  better=better, worse=worse)
                if n:
                    lines.append(f"- {dataset}, {metric}: {better} − {worse} = {_format(mean, half)} "
                                 f"over {n} seeds: {_judge(mean, half)}.")
    for dataset in dict.fromkeys(row["dataset"] for row in search):
        for queries in dict.fromkeys(row["queries"] for row in search if row["dataset"] == dataset):
            subset = [row for row in search if row["dataset"] == dataset and row["queries"] == queries]
            for better in ("synthetic", "real"):
                for metric in SEARCH_METRICS:
                    mean, half, n = paired_difference(subset, key="index", metric=metric,
                                                      better=better, worse="raw")
                    if n:
                        lines.append(f"- {dataset} search ({queries}), {metric}: {better} − raw = "
                                     f"{_format(mean, half)} over {n} seeds: {_judge(mean, half)}.")
    return lines


def write_report(results: dict, *, output_dir: Path, name: str = "cold_start_report") -> Path:
    """Write ``<name>.md`` and its PNG plots to ``output_dir``; return the Markdown path."""
    output_dir = Path(output_dir)
    runs, search = results["runs"], results["search"]
    seeds = results["seeds"]
    lines = [
        "# Cold-start experiment: does item text get cold items recommended and found?",
        "",
        f"Generated by `python -m models.evaluate` (`models/evaluate.py`). Seeds: {seeds}; each seed draws "
        "its own cold-item split and model initialisation, and every variant of a seed uses the same split. "
        "Intervals are 95% Student-t confidence intervals of the mean over seeds.",
        "",
    ]
    for entry in _configs(results):
        lines += [f"Setup ({', '.join(entry['datasets'])}): "
                  + ", ".join(f"{key}={value}" for key, value in entry["config"].items()) + ".", ""]
    datasets = list(dict.fromkeys(row["dataset"] for row in runs))
    for dataset in datasets:
        dataset_runs = [row for row in runs if row["dataset"] == dataset]
        lines += [f"## {dataset}: recommendation", ""]
        first = dataset_runs[0]
        lines += [f"Evaluated users per seed: {int(first['cold_users'])} with cold test items (ranked among "
                  f"the cold items), {int(first['warm_users'])} with a held-out warm item (ranked among the "
                  "warm items they have not trained on).", ""]
        for side in ("cold", "warm"):
            metrics = [f"{side}_{metric}" for metric in RECOMMENDER_METRICS]
            summary = summarise(dataset_runs, group_keys=("dataset", "variant"), metrics=metrics)
            lines += [f"### {side.capitalize()} items", "",
                      "| variant | " + " | ".join(RECOMMENDER_METRICS) + " |",
                      "|---|" + "---|" * len(metrics)]
            for key, values in summary.items():
                label = VARIANT_LABELS.get(key[1], key[1])
                lines.append(f"| {label} | " + " | ".join(_format(*values[m]) for m in metrics) + " |")
            plot_name = f"{name}_{dataset.lower()}_{side}.png"
            _plot(summary, metrics=metrics, title=f"{dataset}: {side} items", path=output_dir / plot_name)
            lines += ["", f"![{dataset} {side} items]({plot_name})", ""]
        coverage = [row["synthetic_coverage"] for row in dataset_runs if "synthetic_coverage" in row]
        if coverage:
            lines += [f"Synthetic descriptions covered at least {min(coverage):.1%} of each seed's cold items. "
                      "A cold item whose generated text was empty after cleaning kept metadata only.", ""]
        generator = results.get("generators", {}).get(dataset)
        if generator:
            lines += ["Generator: " + ", ".join(f"{key}={value}" for key, value in generator.items()) + ".", ""]

    if search:
        lines += ["## Search lift (BM25)", "",
                  "`models/search.py`: a `bm25s` index over all listings (title, brand, categories and "
                  "text). Warm items carry their real description; cold items carry no text (`raw`), the "
                  "synthetic description or the real one (upper bound). Each cold item gets one query of "
                  "the five most distinctive words (TF-IDF) of its real description.", ""]
        index_order = {"raw": 0, "synthetic": 1, "real": 2}
        ordered = sorted(search, key=lambda row: (row["dataset"], row["queries"],
                                                  index_order.get(row["index"], 3), row["seed"]))
        summary = summarise(ordered, group_keys=("dataset", "queries", "index"), metrics=list(SEARCH_METRICS))
        lines += ["| dataset | queries | index | " + " | ".join(SEARCH_METRICS) + " |", "|---|---|---|---|---|"]
        for key, values in summary.items():
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} | "
                         + " | ".join(_format(*values[m]) for m in SEARCH_METRICS) + " |")
        plot_name = f"{name}_search.png"
        strict = {key: values for key, values in summary.items() if "removed" in key[1]}
        _plot(strict or summary, metrics=list(SEARCH_METRICS), title="BM25 retrieval of cold items",
              path=output_dir / plot_name)
        lines += ["", f"![search lift]({plot_name})", ""]
    lines += ["## Conclusion", "",
              "Paired differences per seed (same split), mean ± 95% CI; a difference counts as a gain or a "
              "loss only when its interval excludes 0.", ""]
    lines += _verdicts(runs, search)
    lines.append("")
    path = output_dir / f"{name}.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    logger.info("wrote report %s", path)
    return path


def _configs(results: dict) -> list[dict]:
    """Return the setups of a results dict as ``[{"datasets": [...], "config": {...}}]``."""
    if "configs" in results:
        return results["configs"]
    datasets = list(dict.fromkeys(row["dataset"] for row in results["runs"]))
    return [{"datasets": datasets, "config": results["config"]}]


def merge_results(paths: list[Path]) -> dict:
    """Merge results JSON files of several runs with the same seeds into one results dict.

    Each file keeps its own setup (``configs``), so datasets may use different
    settings; the report lists the setup of each dataset.
    """
    merged: dict = {"configs": [], "seeds": None, "runs": [], "search": [], "generators": {}}
    for path in paths:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
        if merged["seeds"] is not None and results["seeds"] != merged["seeds"]:
            raise ValueError(f"{path} has seeds {results['seeds']} but an earlier file has {merged['seeds']}; "
                             "rerun with the same --seeds")
        merged["seeds"] = results["seeds"]
        for entry in _configs(results):
            same = next((known for known in merged["configs"] if known["config"] == entry["config"]), None)
            if same is None:
                merged["configs"].append(entry)
            else:
                same["datasets"] = list(dict.fromkeys(same["datasets"] + entry["datasets"]))
        merged["runs"] += results["runs"]
        merged["search"] += results["search"]
        for dataset, generator in results.get("generators", {}).items():
            merged["generators"][dataset] = {key: value for key, value in generator.items() if key != "cache_path"}
    # A run repeated in a later file (same dataset, seed and variant) replaces the earlier one,
    # so that it is not counted twice in the confidence intervals.
    merged["runs"] = _deduplicate(merged["runs"], ("dataset", "variant", "seed"))
    merged["search"] = _deduplicate(merged["search"], ("dataset", "seed", "queries", "index"))
    return merged


def _deduplicate(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    latest = {tuple(row[key] for key in keys): row for row in rows}
    return list(latest.values())


def main(argv: list[str] | None = None) -> int:
    """Write one report from the results JSON files of several ``python -m models.evaluate`` runs."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("results", type=Path, nargs="+", help="results JSON files")
    parser.add_argument("--output-dir", type=Path, default=Path("docs"))
    parser.add_argument("--report-name", default="cold_start_report")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    merged = merge_results(args.results)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / f"{args.report_name}.json").write_text(json.dumps(merged, indent=1), encoding="utf-8")
    print(write_report(merged, output_dir=args.output_dir, name=args.report_name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
