"""Build a generator end to end: resolve the base, fine-tune on pairs, export to ONNX.

Builds are cached under ``<cache>/generators/<key>/`` where the key hashes every
input that changes the result. A build runs in a temporary directory that is
renamed into place, and an exclusive file lock per key makes a second process
wait for the first and then reuse its result.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from export.onnx_export import EXPORT_CODE_VERSION, export_decoder
from models.base import resolve_base_checkpoint, resolve_cache_dir
from models.prompts import description_prompt
from models.train import fine_tune
from models.training_data import clean_text

logger = logging.getLogger(__name__)

# Bump when the training recipe or the prompt format changes, so old builds are not reused.
PIPELINE_CODE_VERSION = "1"


def training_pairs_from_listings(listings: list[dict]) -> list[tuple[str, str]]:
    """Return (description prompt, description) pairs for listings that have a description.

    Descriptions are cleaned with ``models.training_data.clean_text``; listings whose
    description is missing or empty after cleaning are skipped.
    """
    pairs = []
    for listing in listings:
        description = clean_text(listing.get("description"))
        if description:
            pairs.append((description_prompt(listing), description))
    return pairs


def _base_identity(base: str) -> str:
    """Identify a base for the cache key: a directory by path and weight file sizes and times."""
    path = Path(base).expanduser()
    if not path.is_dir():
        return base
    stats = [
        f"{weights.name}:{weights.stat().st_size}:{weights.stat().st_mtime_ns}"
        for weights in sorted(path.glob("*.safetensors"))
    ]
    return f"{path.resolve()}|{'|'.join(stats)}"


def build_key(*, base: str, pairs: list[tuple[str, str]], settings: dict) -> str:
    """Return the cache key (16 hex digits) for a build of ``base`` on ``pairs`` with ``settings``."""
    digest = hashlib.sha256()
    header = {
        "base": _base_identity(base),
        "settings": settings,
        "pipeline_code_version": PIPELINE_CODE_VERSION,
        "export_code_version": EXPORT_CODE_VERSION,
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    for prompt, target in pairs:
        digest.update(json.dumps([prompt, target]).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        started_s = time.perf_counter()
        fcntl.flock(handle, fcntl.LOCK_EX)
        waited_s = time.perf_counter() - started_s
        if waited_s > 1.0:
            logger.info("waited %.1f s for build lock %s", waited_s, lock_path)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_generator(
    *,
    base: str = "smollm2",
    pairs: list[tuple[str, str]],
    cache_dir: Path | None = None,
    max_steps: int = 200,
    seed: int = 0,
    force: bool = False,
    learning_rate: float = 5e-5,
    batch_size: int = 4,
    max_length: int = 256,
    opset: int = 17,
    keep_checkpoint: bool = True,
) -> Path:
    """Convert the base, fine-tune it on ``pairs`` and export it to ONNX, reusing cached builds.

    Parameters
    ----------
    base : str
        Base model name or checkpoint directory; see ``models.base.resolve_base_checkpoint``.
    pairs : list of (str, str)
        (prompt, target) pairs, for example from :func:`training_pairs_from_listings`.
    cache_dir : Path or None
        Cache root; see ``models.base.resolve_cache_dir``.
    max_steps : int
        Fine-tuning steps; 0 exports the base model without fine-tuning.
    seed : int
        Training seed.
    force : bool
        Rebuild even when a cached build exists, then replace it.
    learning_rate, batch_size, max_length : float, int, int
        Passed to ``models.train.fine_tune``.
    opset : int
        ONNX opset for the export.
    keep_checkpoint : bool
        Keep the fine-tuned safetensors checkpoint next to the ONNX export
        (``<build>/checkpoint``); when False only the ONNX directory is kept.

    Returns
    -------
    Path
        The ONNX model directory (``<cache>/generators/<key>/onnx``), ready for
        ``export.runtime.OnnxGenerator``.
    """
    if max_steps < 0:
        raise ValueError(f"invalid max_steps {max_steps}: expected >= 0 (0 skips fine-tuning)")
    if max_steps > 0 and not pairs:
        raise ValueError("no training pairs for fine-tuning: pass pairs or set max_steps=0")
    settings = {
        "max_steps": max_steps,
        "seed": seed,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "max_length": max_length,
        "opset": opset,
    }
    pairs_used = pairs if max_steps > 0 else []
    key = build_key(base=base, pairs=pairs_used, settings=settings)
    builds_dir = resolve_cache_dir(cache_dir) / "generators"
    build_dir = builds_dir / key
    onnx_dir = build_dir / "onnx"

    with _exclusive_lock(builds_dir / f"{key}.lock"):
        if (onnx_dir / "manifest.json").is_file() and not force:
            logger.info("reusing generator build %s at %s", key, onnx_dir)
            return onnx_dir

        started_s = time.perf_counter()
        logger.info("building generator %s: base=%s, %d pairs, settings=%s", key, base, len(pairs_used), settings)
        stage_s = time.perf_counter()
        base_dir = resolve_base_checkpoint(base, cache_dir=cache_dir)
        logger.info("build %s: base checkpoint %s ready in %.1f s", key, base_dir, time.perf_counter() - stage_s)

        temp_dir = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=builds_dir))
        try:
            checkpoint_dir = base_dir
            if max_steps > 0:
                stage_s = time.perf_counter()
                checkpoint_dir = fine_tune(
                    base_dir,
                    pairs_used,
                    temp_dir / "checkpoint",
                    max_steps=max_steps,
                    learning_rate=learning_rate,
                    batch_size=batch_size,
                    max_length=max_length,
                    seed=seed,
                )
                logger.info("build %s: fine-tuned in %.1f s", key, time.perf_counter() - stage_s)

            stage_s = time.perf_counter()
            export_decoder(checkpoint_dir, temp_dir / "onnx", opset=opset)
            logger.info("build %s: exported in %.1f s", key, time.perf_counter() - stage_s)
            if not keep_checkpoint:
                shutil.rmtree(temp_dir / "checkpoint", ignore_errors=True)
            build_info = {"key": key, "base": base, "num_pairs": len(pairs_used), **settings}
            (temp_dir / "build.json").write_text(json.dumps(build_info, indent=2))

            if build_dir.exists():
                # Only reached with force=True, under the lock, so no reader is mid-build.
                stale_dir = builds_dir / f".{key}.stale.{os.getpid()}"
                os.rename(build_dir, stale_dir)
                shutil.rmtree(stale_dir, ignore_errors=True)
            os.rename(temp_dir, build_dir)
        finally:
            if temp_dir.exists():
                shutil.rmtree(temp_dir, ignore_errors=True)
        logger.info("built generator %s in %.1f s at %s", key, time.perf_counter() - started_s, onnx_dir)
    return onnx_dir


def main(argv: list[str] | None = None) -> None:
    """Build a generator from a public catalogue and print the ONNX model directory."""
    from models.training_data import load_amazon2018_pairs, load_myntra_pairs

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data", type=Path, required=True,
                        help="Myntra catalogue .csv.gz or Amazon 2018 meta_*.json.gz file")
    parser.add_argument("--limit", type=int, default=200, help="maximum training pairs read from --data")
    parser.add_argument("--base", default="smollm2", help="base model name or checkpoint directory")
    parser.add_argument("--max-steps", type=int, default=200, help="fine-tuning steps (0 skips fine-tuning)")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per fine-tuning step")
    parser.add_argument("--max-length", type=int, default=256, help="maximum tokens per training pair")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--force", action="store_true", help="rebuild even when a cached build exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    loader = load_myntra_pairs if args.data.name.endswith(".csv.gz") else load_amazon2018_pairs
    listing_pairs = loader(args.data, limit=args.limit)
    pairs = [(description_prompt(listing), description) for listing, description in listing_pairs]
    onnx_dir = build_generator(
        base=args.base,
        pairs=pairs,
        max_steps=args.max_steps,
        seed=args.seed,
        force=args.force,
        batch_size=args.batch_size,
        max_length=args.max_length,
    )
    print(onnx_dir)


if __name__ == "__main__":
    main()
