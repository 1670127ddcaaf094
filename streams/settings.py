"""Worker settings: one object per process, read from ``SHOPSYNTH_*`` variables.

Every field has an explicit default with its unit in the name. The environment
overrides a default, and the command line overrides the environment.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

ENV_PREFIX = "SHOPSYNTH_"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Settings of a shopsynth worker, demo or feeder.

    ``security`` is passed unchanged to every Kafka client (for example
    ``{"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", ...}``), and
    it is never logged.
    """

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    app_id: str = "shopsynth"
    log_level: str = "info"

    # Generator.
    generator_dir: str | None = None
    # ONNX generator for Chinese listings (for example a fine-tuned Gemma 3);
    # unset sends Chinese listings to generator_dir too.
    generator_dir_zh: str | None = None
    # "module:callable" that returns a generator object with the
    # TextGenerator interface of streams.enrichment, called with the settings.
    # It replaces generator_dir, for example for a generator served elsewhere.
    generator_factory: str | None = None
    generation_batch_size: int = 8
    generation_batch_timeout_s: float = 0.5
    generation_timeout_s: float = 300.0
    # A listing whose generation failed or timed out is published flagged, then
    # enriched again up to generation_retries times, generation_retry_delay_s
    # apart, through the enrichment-retry topic; 0 turns retries off.
    generation_retries: int = 2
    generation_retry_delay_s: float = 60.0
    max_new_tokens: int = 64
    review_max_new_tokens: int = 40
    synthetic_review_ratings: tuple[int, ...] = (5,)
    generation_seed: int = 0
    max_regenerations: int = 1
    intra_op_num_threads: int = 0

    # Quality and safety gates. blocklist_path is a UTF-8 file of blocked
    # phrases, one per line, where "#" starts a comment line. The file replaces
    # the built-in list, and None or "" keeps the built-in list.
    # A generated text is rejected when the Jaccard similarity of its character
    # shingles to an accepted text of another item reaches
    # near_duplicate_threshold. The index keeps the newest
    # near_duplicate_capacity texts in memory.
    blocklist_path: str | None = None
    near_duplicate_threshold: float = 0.8
    near_duplicate_capacity: int = 10_000

    # Cold-start policy.
    cold_min_description_words: int = 12
    cold_min_reviews: int = 3
    cold_min_interactions: int = 5

    # Recommender.
    behaviour_batch_size: int = 512
    behaviour_batch_timeout_s: float = 1.0
    recommendations_k: int = 10
    exclude_seen: bool = True
    no_components: int = 32
    learning_rate: float = 0.05
    fit_epochs: int = 2
    random_state: int = 0
    # Behaviour events older than the newest event seen lose half their weight
    # per half-life; 0 turns time decay off.
    event_half_life_s: float = 7 * 24 * 3600.0
    # Item text features. A text token weighs text_weight (structured tokens weigh 1),
    # times synthetic_text_weight when the text was generated.
    text_features: bool = True
    text_weight: float = 0.25
    synthetic_text_weight: float = 0.25
    max_text_tokens: int = 32
    # Similar items published per new or updated item; 0 turns them off.
    similar_items_k: int = 10

    # Recommender snapshots. None: <cache dir>/snapshots/<topic prefix><app id>.
    snapshot_dir: str | None = None
    snapshot_interval_s: float = 300.0
    snapshots_kept: int = 2

    # Input limits.
    max_event_bytes: int = 64 * 1024

    security: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings from ``SHOPSYNTH_<FIELD>`` variables, then ``overrides``.

        Raises
        ------
        ValueError
            If a variable cannot be converted to the field's type; the message
            names the variable and the value.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "security":
                continue
            name = ENV_PREFIX + f.name.upper()
            if name in environ:
                values[f.name] = _convert(name, environ[name], f.default)
        values["security"] = _security_from_env(environ)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ``ValueError`` for a setting that cannot work."""
        positive = (
            "generation_batch_size", "max_new_tokens", "behaviour_batch_size",
            "recommendations_k", "no_components", "max_event_bytes", "fit_epochs",
            "max_text_tokens",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"{name} must be > 0, got {getattr(self, name)!r}; "
                    f"set {ENV_PREFIX}{name.upper()} to a positive value"
                )
        for rating in self.synthetic_review_ratings:
            if rating not in (1, 2, 3, 4, 5):
                raise ValueError(
                    f"synthetic_review_ratings must hold ratings 1-5, got {rating!r}; "
                    f"set {ENV_PREFIX}SYNTHETIC_REVIEW_RATINGS to a comma-separated list such as 5,3"
                )
        for name in ("generation_batch_timeout_s", "generation_timeout_s", "behaviour_batch_timeout_s",
                     "learning_rate", "generation_retry_delay_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}; "
                                 f"set {ENV_PREFIX}{name.upper()}")
        for name in ("cold_min_description_words", "cold_min_reviews", "cold_min_interactions",
                     "max_regenerations", "intra_op_num_threads", "generation_retries"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}; "
                                 f"set {ENV_PREFIX}{name.upper()}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"log_level must be one of debug, info, warning, error, critical, "
                             f"got {self.log_level!r}; set {ENV_PREFIX}LOG_LEVEL or --log-level")
        for server in self.bootstrap_servers.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"bootstrap server {server.strip()!r} is not HOST:PORT; "
                                 f"set {ENV_PREFIX}BOOTSTRAP_SERVERS or --bootstrap-servers")
        if self.event_half_life_s < 0:
            raise ValueError(f"event_half_life_s must be >= 0 (0 turns decay off), "
                             f"got {self.event_half_life_s!r}")
        if not self.text_weight > 0:
            raise ValueError(f"text_weight must be > 0, got {self.text_weight!r}; set {ENV_PREFIX}TEXT_WEIGHT")
        if not 0.0 < self.synthetic_text_weight <= 1.0:
            raise ValueError(f"synthetic_text_weight must be in (0, 1], got {self.synthetic_text_weight!r}; "
                             f"set {ENV_PREFIX}SYNTHETIC_TEXT_WEIGHT")
        if self.similar_items_k < 0:
            raise ValueError(f"similar_items_k must be >= 0 (0 turns similar items off), "
                             f"got {self.similar_items_k!r}")
        if self.snapshot_interval_s <= 0 or self.snapshots_kept < 1:
            raise ValueError(f"snapshot_interval_s must be > 0 and snapshots_kept >= 1, got "
                             f"{self.snapshot_interval_s!r} and {self.snapshots_kept!r}")
        for name in ("generator_dir", "generator_dir_zh"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_dir():
                raise ValueError(
                    f"{name} {value!r} is not a directory; build one with `shopsynth build-generator` "
                    f"or `shopsynth export-generator` and set {ENV_PREFIX}{name.upper()} to its path"
                )

        if self.generator_factory is not None:
            module, _, name = self.generator_factory.partition(":")
            if not module or not name:
                raise ValueError(f"generator_factory {self.generator_factory!r} is not MODULE:CALLABLE; "
                                 f"set {ENV_PREFIX}GENERATOR_FACTORY to a value such as mypackage.gen:create")

    def to_env(self) -> dict[str, str]:
        """Return the settings as ``SHOPSYNTH_*`` variables for a child process."""
        env: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "security" or value is None:
                continue
            if isinstance(value, tuple):
                value = ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                value = "1" if value else "0"
            env[ENV_PREFIX + f.name.upper()] = str(value)
        return env

    def topic(self, logical_name: str) -> str:
        """Return the real Kafka topic name for a logical one (prefix applied)."""
        return self.topic_prefix + logical_name


def _convert(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected one of 1/0, true/false, yes/no, on/off")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(int(part) for part in raw.split(",") if part.strip())
        return raw
    except ValueError as exc:
        raise ValueError(f"invalid value {raw!r} for {name}: {exc}") from exc


def _security_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Collect Kafka client security options from ``SHOPSYNTH_KAFKA_*`` variables."""
    keys = {
        "SHOPSYNTH_KAFKA_SECURITY_PROTOCOL": "security_protocol",
        "SHOPSYNTH_KAFKA_SASL_MECHANISM": "sasl_mechanism",
        "SHOPSYNTH_KAFKA_SASL_USERNAME": "sasl_plain_username",
        "SHOPSYNTH_KAFKA_SASL_PASSWORD": "sasl_plain_password",
    }
    return {option: environ[var] for var, option in keys.items() if environ.get(var)}
