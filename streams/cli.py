"""shopsynth: enrich new listings and keep recommendations fresh on Kafka. Each command has its own --help."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from pathlib import Path

from streams.settings import Settings

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shopsynth", description=__doc__)
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (default: SHOPSYNTH_BOOTSTRAP_SERVERS "
                        "or 127.0.0.1:9092)")
    parser.add_argument("--topic-prefix", help="prefix added to every topic name (default: none)")
    parser.add_argument("--log-level", default=None, help="logging level: debug, info, warning (default: info)")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the whole pipeline on a local broker and print a summary")
    demo.add_argument("--dataset", default="simulator", choices=["simulator", "amazon-gift-cards"],
                      help="input: the built-in simulator (default) or the Amazon 2018 Gift Cards files")
    demo.add_argument("--data-dir", type=Path, help="folder of the dataset files "
                      "(default: $SHOPSYNTH_DATA_DIR/amazon2018_gift_cards_5core)")
    demo.add_argument("--items", type=int, default=60, help="simulated listings (default: 60)")
    demo.add_argument("--users", type=int, default=40, help="simulated shoppers (default: 40)")
    demo.add_argument("--events", type=int, default=3000, help="simulated behaviour events (default: 3000)")
    demo.add_argument("--train-steps", type=int, default=60, help="fine-tuning steps (default: 60)")
    demo.add_argument("--base", default="smollm2", help="base model: 'smollm2' or a local Hugging Face "
                      "causal-LM directory (default: smollm2)")
    demo.add_argument("--timeout-s", type=float, default=1200.0, help="max seconds to wait for outputs")

    commands.add_parser("worker", help="run the Faust worker (settings from SHOPSYNTH_* variables)")

    commands.add_parser("provision", help="create the topics of infra/topics.toml")

    feed = commands.add_parser("feed", help="produce input events from the simulator or a dataset")
    feed.add_argument("source", choices=["simulator", "amazon", "tianchi"])
    feed.add_argument("--path", type=Path, help="dataset folder (amazon, tianchi)")
    feed.add_argument("--limit", type=int, help="max events per topic")
    feed.add_argument("--seed", type=int, default=0, help="simulator seed (default: 0)")

    replay = commands.add_parser("replay", help="copy a range of the input topics into another prefix "
                                 "for a backfill; run a worker with that prefix to process it")
    replay.add_argument("--target-prefix", required=True, help="topic prefix of the backfill, e.g. backfill-1.")
    replay.add_argument("--from-offset", type=int, help="first offset in every partition (default: beginning)")
    replay.add_argument("--to-offset", type=int, help="offset to stop before, in every partition (default: end)")
    replay.add_argument("--from-timestamp-ms", type=int, help="first record time, epoch ms")
    replay.add_argument("--to-timestamp-ms", type=int, help="record time to stop before, epoch ms")

    evaluate = commands.add_parser("evaluate", add_help=False,
                                   help="cold-start and search experiment on real data "
                                        "(options: shopsynth evaluate --help)")
    evaluate.add_argument("evaluate_args", nargs=argparse.REMAINDER)

    for name, summary in (
        ("train-generator", "fine-tune the generator for descriptions and reviews on real English or Chinese data"),
        ("evaluate-generator", "report on a fine-tuned generator against its base model on held-out data"),
    ):
        command = commands.add_parser(name, add_help=False, help=f"{summary} (options: shopsynth {name} --help)")
        command.add_argument(f"{name.replace('-', '_')}_args", nargs=argparse.REMAINDER)

    export = commands.add_parser("export-generator",
                                 help="export a fine-tuned checkpoint (e.g. from train-generator) to ONNX for the worker")
    export.add_argument("--model", type=Path, required=True, help="Hugging Face checkpoint folder")
    export.add_argument("--output", type=Path, required=True, help="folder for the ONNX graphs and manifest")
    export.add_argument("--variants", default="fp32,int8",
                        help="comma-separated graph variants: fp32, int8, fp16 (default: fp32,int8)")

    build = commands.add_parser("build-generator", help="fine-tune the base model and export it to ONNX")
    build.add_argument("--base", default="smollm2")
    build.add_argument("--data", choices=["amazon-gift-cards", "myntra"], default="myntra",
                       help="real training data under $SHOPSYNTH_DATA_DIR (default: myntra)")
    build.add_argument("--limit", type=int, default=400, help="max training pairs (default: 400)")
    build.add_argument("--steps", type=int, default=200, help="fine-tuning steps (default: 200)")
    return parser


# Commands with parsers of their own; the global options before them are read here.
_DELEGATED = {
    "evaluate": "models.evaluate_cli",
    "train-generator": "models.finetune",
    "evaluate-generator": "models.generator_eval_cli",
}
_GLOBAL_OPTIONS = ("--bootstrap-servers", "--topic-prefix", "--log-level")


def _split_global_options(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split ``argv`` into the global options before the command and the rest."""
    options: dict[str, str] = {}
    index = 0
    while index < len(argv):
        name, equals, value = argv[index].partition("=")
        if name not in _GLOBAL_OPTIONS:
            break
        if not equals:
            if index + 1 >= len(argv):
                break
            value = argv[index + 1]
            index += 1
        options[name] = value
        index += 1
    return options, argv[index:]


def _run_delegated(command: str, options: dict[str, str], rest: list[str]) -> int:
    unused = [name for name in options if name != "--log-level"]
    if unused:
        print(f"error: {', '.join(unused)} has no effect on {command}; drop it", file=sys.stderr)
        return 2
    level = options.get("--log-level", "info")
    if not isinstance(logging.getLevelName(level.upper()), int):
        print(f"error: invalid --log-level {level!r}: use debug, info, warning or error", file=sys.stderr)
        return 2
    # The command's own basicConfig call is a no-op once the root logger has a handler.
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(_DELEGATED[command])
    return module.main(rest)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options, rest = _split_global_options(argv)
    if rest[:1] and rest[0] in _DELEGATED:
        return _run_delegated(rest[0], options, rest[1:])
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(bootstrap_servers=args.bootstrap_servers, topic_prefix=args.topic_prefix,
                                     log_level=args.log_level)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.command == "worker":
        from streams.app import run_worker

        run_worker(settings)
        return 0
    if args.command == "provision":
        from infra.provision import provision_topics

        created = asyncio.run(provision_topics(settings.bootstrap_servers, prefix=settings.topic_prefix,
                                               client_options=dict(settings.security) or None))
        for logical, real in created.items():
            print(f"{logical}: {real}")
        return 0
    if args.command == "demo":
        return _demo(args, settings)
    if args.command == "replay":
        return _replay(args, settings)
    if args.command == "feed":
        return _feed(args, settings)
    if args.command == "build-generator":
        return _build(args)
    if args.command == "export-generator":
        return _export(args)
    raise AssertionError(args.command)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from streams.demo import DemoOptions, print_summary, run_demo

    if args.log_level is None:
        logging.getLogger().setLevel(logging.WARNING)
    options = DemoOptions(dataset=args.dataset, data_dir=args.data_dir, n_items=args.items, n_users=args.users,
                          n_events=args.events, train_steps=args.train_steps, base=args.base,
                          timeout_s=args.timeout_s)
    try:
        summary = run_demo(settings, options)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("demo interrupted; the worker was stopped", file=sys.stderr)
        return 130
    print_summary(summary)
    return 0 if summary["listings_enriched_records"] == summary["listings_in"] else 1


def _feed(args: argparse.Namespace, settings: Settings) -> int:
    from streams import topics as names
    from streams.feed import produce_events

    if args.source == "simulator":
        from streams.simulator import Simulator

        simulator = Simulator(seed=args.seed)
        products, behaviour = simulator.products(), simulator.behaviour(args.limit or 3000)
    elif args.source == "amazon":
        from streams.loaders.amazon import load_amazon2018

        products, behaviour = load_amazon2018(_required_path(args.path), limit=args.limit)
    else:
        from streams.loaders.tianchi import load_tianchi_behaviour

        products = []
        behaviour = load_tianchi_behaviour(_required_path(args.path), limit=args.limit).behaviour
    events = [(settings.topic(names.PRODUCT_CREATED), p["item_id"], p) for p in products]
    events += [(settings.topic(names.USER_BEHAVIOUR), b["user_id"], b) for b in behaviour]
    count = asyncio.run(produce_events(settings.bootstrap_servers, events,
                                       security=dict(settings.security) or None))
    print(f"produced {count} events")
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from streams.replay import ReplayRange, replay

    replay_range = ReplayRange(from_offset=args.from_offset, to_offset=args.to_offset,
                               from_timestamp_ms=args.from_timestamp_ms, to_timestamp_ms=args.to_timestamp_ms)
    try:
        copied = asyncio.run(replay(settings.bootstrap_servers, source_prefix=settings.topic_prefix,
                                    target_prefix=args.target_prefix, replay_range=replay_range,
                                    security=dict(settings.security) or None))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for topic, count in copied.items():
        print(f"{topic}: {count} records -> {args.target_prefix}{topic}")
    print(f"start a worker with SHOPSYNTH_TOPIC_PREFIX={args.target_prefix} to process the backfill")
    return 0


def _build(args: argparse.Namespace) -> int:
    import os

    from export.pipeline import build_generator
    from models.prompts import description_prompt
    from models import training_data

    data_dir = Path(os.environ.get("SHOPSYNTH_DATA_DIR", ""))
    if args.data == "myntra":
        pairs = training_data.load_myntra_pairs(_first(data_dir / "myntra_fashion_catalog", "*.csv.gz"),
                                                limit=args.limit)
    else:
        pairs = training_data.load_amazon2018_pairs(
            data_dir / "amazon2018_gift_cards_5core" / "meta_Gift_Cards.json.gz", limit=args.limit)
    model_dir = build_generator(base=args.base, pairs=[(description_prompt(l), d) for l, d in pairs],
                                max_steps=args.steps)
    print(model_dir)
    return 0


def _export(args: argparse.Namespace) -> int:
    from export.onnx_export import export_decoder

    if not (args.model / "config.json").is_file():
        print(f"error: {args.model} has no config.json; pass a folder written by `shopsynth train-generator`",
              file=sys.stderr)
        return 2
    variants = [name.strip() for name in args.variants.split(",") if name.strip()]
    try:
        output_dir = export_decoder(args.model, args.output, variants=variants)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(output_dir)
    return 0


def _required_path(path: Path | None) -> Path:
    if path is None:
        raise SystemExit("error: --path is required for this source")
    return path


def _first(folder: Path, pattern: str) -> Path:
    matches = sorted(folder.glob(pattern))
    if not matches:
        raise SystemExit(f"error: no {pattern} file in {folder}; set SHOPSYNTH_DATA_DIR to the datasets folder")
    return matches[0]


if __name__ == "__main__":
    sys.exit(main())
