"""Command line of the cold-start experiment: ``python -m models.evaluate``."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

from models.evaluate import VARIANTS, ExperimentConfig, run_experiment, split_items
from models.evaluate_data import load_dataset

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m models.evaluate",
        description="Cold-start experiment: recommend and search cold items with no, real or synthetic text.")
    parser.add_argument("--dataset", action="append", default=None,
                        help="'office', 'beauty' (under $SHOPSYNTH_DATA_DIR) or a dataset directory in "
                             "LC-Rec or S3-Rec format; repeat for several (default: office and beauty)")
    parser.add_argument("--s3rec-name", default="Beauty", help="file stem of S3-Rec datasets (default: Beauty)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="split and model seeds")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--cold-fraction", type=float, default=0.1, help="share of items held out as cold")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default: 10)")
    parser.add_argument("--no-components", type=int, default=32, help="embedding dimension (default: 32)")
    parser.add_argument("--text-weight", type=float, default=0.25,
                        help="weight of each text token; structured tokens weigh 1 (default: 0.25)")
    parser.add_argument("--synthetic-weight", type=float, default=1.0,
                        help="extra factor on synthetic text tokens, in (0, 1] (default: 1)")
    parser.add_argument("--synthetic", type=Path, help="JSON file of item_id -> synthetic description; "
                        "default: generate them (needs a base model, minutes on a CPU)")
    parser.add_argument("--base", default="smollm2", help="generator base model name or directory")
    parser.add_argument("--generator-dir", type=Path,
                        help="exported ONNX generator to use as is, without fine-tuning on the warm items")
    parser.add_argument("--train-steps", type=int, default=40, help="generator fine-tuning steps (default: 40)")
    parser.add_argument("--max-length", type=int, default=256,
                        help="maximum tokens per fine-tuning pair (default: 256)")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="tokens per synthetic description")
    parser.add_argument("--output-dir", type=Path, default=Path("docs"),
                        help="where the report, plots and results JSON go (default: docs)")
    parser.add_argument("--report-name", default="cold_start_report", help="file stem of the report")
    parser.add_argument("--log-level", default="info")
    return parser


def main(argv: list[str] | None = None) -> int:
    from models.evaluate_report import write_report

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ExperimentConfig(cold_fraction=args.cold_fraction, epochs=args.epochs,
                              no_components=args.no_components, text_weight=args.text_weight,
                              synthetic_weight=args.synthetic_weight)
    rows, search_rows, generators = [], [], {}
    for name in args.dataset or ["office", "beauty"]:
        dataset = load_dataset(name, s3rec_name=args.s3rec_name)
        splits = [split_items(dataset, seed=seed, cold_fraction=config.cold_fraction) for seed in args.seeds]
        all_cold = sorted({item for split in splits for item in split.cold_items})
        variants = list(args.variants)
        synthetic: dict[str, str] = {}
        if "metadata+synthetic" in variants:
            if dataset.text_field != "description":
                logger.warning("dataset %s has no descriptions (its text is the %s): skipping "
                               "metadata+synthetic", dataset.name, dataset.text_field)
                variants.remove("metadata+synthetic")
            elif args.synthetic is not None:
                synthetic = json.loads(args.synthetic.read_text(encoding="utf-8"))
            else:
                from models.evaluate_synthetic import generate_synthetic_texts

                train_items = sorted(set(dataset.listings) - set(all_cold))
                synthetic, generators[dataset.name] = generate_synthetic_texts(
                    dataset, cold_items=all_cold, train_items=train_items, base=args.base,
                    train_steps=args.train_steps, max_length=args.max_length,
                    max_new_tokens=args.max_new_tokens, generator_dir=args.generator_dir)
        rows += run_experiment(dataset, seeds=args.seeds, variants=variants, synthetic=synthetic, config=config)
        if dataset.text_field == "description":
            search_rows += _search_runs(dataset, splits, synthetic)
        else:
            logger.warning("dataset %s: search lift skipped, because queries come from descriptions",
                           dataset.name)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    results = {"config": asdict(config), "seeds": args.seeds, "runs": rows, "search": search_rows,
               "generators": generators}
    results_path = args.output_dir / f"{args.report_name}.json"
    results_path.write_text(json.dumps(results, indent=1, default=float), encoding="utf-8")
    report_path = write_report(results, output_dir=args.output_dir, name=args.report_name)
    print(f"report: {report_path}\nresults: {results_path}")
    return 0


def _search_runs(dataset, splits, synthetic: dict[str, str]) -> list[dict]:
    from models.search import keyword_queries, search_lift

    titles = {item: listing["title"] for item, listing in dataset.listings.items()}
    rows = []
    for split in splits:
        enriched = {"real": {item: dataset.texts[item] for item in split.cold_items}}
        if synthetic:
            enriched = {"synthetic": {item: synthetic[item] for item in split.cold_items if item in synthetic}} | enriched
        for query_kind, exclude in (("description keywords, title words removed", titles),
                                    ("description keywords", None)):
            queries = keyword_queries(dataset.texts, query_items=split.cold_items, exclude=exclude)
            metrics = search_lift(dataset.listings, cold_items=split.cold_items, real_texts=dataset.texts,
                                  queries=queries, enriched_texts=enriched)
            for variant, values in metrics.items():
                rows.append({"dataset": dataset.name, "seed": split.seed, "queries": query_kind,
                             "index": variant, **values})
    return rows
