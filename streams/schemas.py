"""Event schemas: the two input events with their validation, and the output records.

Input events arrive as UTF-8 JSON objects. :func:`parse_product_created` and
:func:`parse_user_behaviour` turn the raw bytes into dataclasses or raise
:class:`InvalidEvent`, whose reason names the field and the value. Fields that
the schema does not define are ignored, so producers may add fields without
breaking consumers. A ``null`` in an optional field means its default.

Output records are dataclasses too; :func:`to_bytes` serializes any of them
with orjson and :func:`record_from_bytes` reads one back. ``docs/events.md``
lists every field with its unit and an example.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypedDict, TypeVar

import orjson

EVENT_TYPES = ("view", "click", "favourite", "cart", "purchase")
DEFAULT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "favourite": 3.0,
    "cart": 4.0,
    "purchase": 5.0,
}
LANGUAGES = ("en", "zh")
MIN_TIMESTAMP_MS = 946_684_800_000  # 2000-01-01T00:00:00Z

# C0 controls, DEL and C1 controls. Descriptions may also contain tab and line breaks.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_CURRENCY = re.compile(r"[A-Z]{3}")


class InvalidEvent(ValueError):
    """An input event that fails validation.

    ``reason`` names the field and the offending value, and ``field`` is the
    field name (``None`` for payload-level errors such as invalid JSON).
    """

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


@dataclass(frozen=True, kw_only=True)
class EventLimits:
    """Limits applied by the parsers; lengths are in characters (code points)."""

    max_payload_bytes: int = 64 * 1024
    max_price: float = 1_000_000.0
    max_future_skew_ms: int = 24 * 3600 * 1000
    min_timestamp_ms: int = MIN_TIMESTAMP_MS
    max_id_chars: int = 128
    max_title_chars: int = 500
    max_brand_chars: int = 200
    max_category_depth: int = 10
    max_category_level_chars: int = 200
    max_behaviour_category_chars: int = 1000
    max_attributes: int = 50
    max_attribute_key_chars: int = 100
    max_attribute_value_chars: int = 1000
    max_description_chars: int = 20_000
    max_review_count: int = 100_000_000
    max_weight: float = 1000.0


DEFAULT_LIMITS = EventLimits()


@dataclass(slots=True, kw_only=True)
class ProductCreated:
    """A new listing (topic ``product-created``, key ``item_id``)."""

    event_id: str
    item_id: str
    title: str
    brand: str | None = None
    category: list[str] = field(default_factory=list)  # path from root to leaf
    attributes: dict[str, str] = field(default_factory=dict)
    price: float | None = None  # in `currency` units
    currency: str | None = None  # ISO 4217 code
    description: str | None = None
    review_count: int = 0
    language: str = "en"
    created_at_ms: int  # event time, epoch milliseconds

    def to_dict(self) -> dict[str, Any]:
        """Return the listing dict that the enrichment and the recommender consume."""
        return dataclasses.asdict(self)


@dataclass(slots=True, kw_only=True)
class UserBehaviour:
    """One shopper interaction (topic ``user-behaviour``, key ``user_id``)."""

    event_id: str
    user_id: str
    item_id: str
    event_type: str
    timestamp_ms: int  # event time, epoch milliseconds
    weight: float | None = None  # None: DEFAULT_WEIGHTS[event_type]
    category: str | None = None

    @property
    def resolved_weight(self) -> float:
        """Return the explicit weight, or the default weight of the event type."""
        return self.weight if self.weight is not None else DEFAULT_WEIGHTS[self.event_type]

    def to_dict(self) -> dict[str, Any]:
        """Return the behaviour event dict."""
        return dataclasses.asdict(self)


class ReviewText(TypedDict):
    rating: int  # stars, 1-5
    text: str
    synthetic: bool


class QualityCheck(TypedDict):
    passed: bool
    score: float
    reason: str | None


class ScoredItem(TypedDict):
    item_id: str
    score: float  # model score, higher is better; comparable only within one record


def record_version(topic: str, partition: int, offset: int) -> str:
    """Return the version of an output record derived from its source event's position."""
    return f"{topic}/{partition}/{offset}"


def now_ms() -> int:
    """Return the wall-clock time in epoch milliseconds."""
    return int(time.time() * 1000)


@dataclass(slots=True, kw_only=True)
class EnrichedListing:
    """A listing after the cold-start check and generation (topic ``listings-enriched``)."""

    item_id: str
    event_id: str  # event_id of the product-created event
    source_topic: str
    source_partition: int
    source_offset: int
    title: str
    brand: str | None = None
    category: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)
    price: float | None = None
    currency: str | None = None
    language: str = "en"
    description: str | None = None
    description_synthetic: bool = False
    reviews: list[ReviewText] = field(default_factory=list)
    cold: bool = False
    cold_reasons: list[str] = field(default_factory=list)
    enriched: bool = False
    generator_version: str | None = None
    # generated text ("description", "review_5") -> check name -> outcome; {} when nothing ran
    quality: dict[str, dict[str, QualityCheck]] = field(default_factory=dict)
    gate_rejected: list[str] = field(default_factory=list)
    enrichment_error: str | None = None
    # 0 for the first enrichment, n for the n-th retry after a failed or timed-out generation.
    enrichment_attempt: int = 0
    # True when enrichment failed and a retry is queued on enrichment-retry.
    retry_scheduled: bool = False
    record_version: str = ""  # "" -> derived from source_topic/partition/offset; "/retry-<n>" added by retries
    produced_at_ms: int = field(default_factory=now_ms)

    def __post_init__(self) -> None:
        if not self.record_version:
            self.record_version = record_version(self.source_topic, self.source_partition,
                                                 self.source_offset)


@dataclass(slots=True, kw_only=True)
class Recommendation:
    """Top-k items for one user (topic ``recommendations``, key ``user_id``)."""

    user_id: str
    items: list[ScoredItem]
    model_version: str
    # Behaviour events of this user the model had seen, and the one that triggered
    # this record; None when the producer does not track them.
    based_on_events: int | None = None
    last_event_id: str | None = None
    record_version: str
    produced_at_ms: int = field(default_factory=now_ms)


@dataclass(slots=True, kw_only=True)
class SimilarItems:
    """Nearest items of one item (topic ``similar-items``, key ``item_id``)."""

    item_id: str
    items: list[ScoredItem]
    model_version: str
    # What triggered the record: "listing" (the item's listing was upserted) or
    # "behaviour" (a micro-batch trained on the item).
    trigger: str = "listing"
    # <topic>/<partition>/<offset> of the listing event for trigger "listing", else None.
    record_version: str | None = None
    produced_at_ms: int = field(default_factory=now_ms)


@dataclass(slots=True, kw_only=True)
class DeadLetter:
    """An input event that could not be processed (topic ``dead-letter``)."""

    reason: str
    error_type: str  # kind of error, e.g. "invalid_event" or an exception class name
    source_topic: str
    partition: int | None
    offset: int | None
    original_bytes: str  # base64 of the raw message value
    original_key: str | None = None  # base64 of the raw message key
    field_name: str | None = None  # the invalid field, when known
    failed_at_ms: int = field(default_factory=now_ms)
    original_size: int | None = None  # bytes in the raw message value
    original_sha256: str | None = None  # hex digest of the whole raw value
    original_truncated: bool = False  # True when original_bytes keeps only a prefix

    @classmethod
    def from_error(cls, error: BaseException, *, raw: bytes | None, source_topic: str,
                   partition: int | None, offset: int | None, key: bytes | None = None,
                   max_original_bytes: int = 256 * 1024) -> DeadLetter:
        """Build the record for ``raw`` that failed with ``error``.

        A value longer than ``max_original_bytes`` keeps only its prefix, so
        that the record (base64 grows it by a third) stays under the broker's
        message size limit. ``original_size`` and ``original_sha256`` always
        describe the whole value.
        """
        value = bytes(raw or b"")
        kept = value[:max_original_bytes]
        return cls(
            reason=str(error) or repr(error),
            error_type=type(error).__name__,
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            original_bytes=base64.b64encode(kept).decode("ascii"),
            original_key=base64.b64encode(key[:1024]).decode("ascii") if key is not None else None,
            field_name=getattr(error, "field", None),
            original_size=len(value),
            original_sha256=hashlib.sha256(value).hexdigest(),
            original_truncated=len(kept) < len(value),
        )

    def original_value(self) -> bytes:
        """Decode ``original_bytes`` back to the raw message value."""
        return base64.b64decode(self.original_bytes)


OUTPUT_RECORDS = (EnrichedListing, Recommendation, SimilarItems, DeadLetter)
RecordT = TypeVar("RecordT")


def to_bytes(record: Any) -> bytes:
    """Serialize an output record (or any dataclass or dict) to JSON bytes with orjson."""
    return orjson.dumps(record)


def record_from_bytes(record_type: type[RecordT], raw: bytes) -> RecordT:
    """Read an output record back from JSON; fields the type does not define are ignored."""
    obj = orjson.loads(raw)
    if not isinstance(obj, dict):
        raise ValueError(f"a {record_type.__name__} must be a JSON object, got {type(obj).__name__}")
    names = {f.name for f in dataclasses.fields(record_type)}
    return record_type(**{name: value for name, value in obj.items() if name in names})


def parse_product_created(raw: bytes, *, limits: EventLimits = DEFAULT_LIMITS,
                          now_ms: int | None = None, max_bytes: int | None = None) -> ProductCreated:
    """Parse and validate a product-created event.

    Parameters
    ----------
    raw
        The message value: a UTF-8 JSON object.
    limits
        Size, price and time limits.
    now_ms
        Reference time for the future-timestamp check; default: the wall clock.
    max_bytes
        Payload size limit that overrides ``limits.max_payload_bytes`` when set.

    Raises
    ------
    InvalidEvent
        When any rule of ``docs/events.md`` fails; the reason names the field and value.
    """
    limits = _with_max_bytes(limits, max_bytes)
    return product_created_from_dict(_decode(raw, limits), limits=limits, now_ms=now_ms)


def parse_user_behaviour(raw: bytes, *, limits: EventLimits = DEFAULT_LIMITS,
                         now_ms: int | None = None, max_bytes: int | None = None) -> UserBehaviour:
    """Parse and validate a user-behaviour event; see :func:`parse_product_created`."""
    limits = _with_max_bytes(limits, max_bytes)
    return user_behaviour_from_dict(_decode(raw, limits), limits=limits, now_ms=now_ms)


def product_created_from_dict(obj: dict[str, Any], *, limits: EventLimits = DEFAULT_LIMITS,
                              now_ms: int | None = None) -> ProductCreated:
    """Validate an already decoded product-created event (all rules but the payload ones)."""
    _check_object(obj)
    title = _text(_required(obj, "title"), "title", max_chars=limits.max_title_chars)
    brand = _optional(obj, "brand")
    description = _optional(obj, "description")
    price = _optional(obj, "price")
    currency = _optional(obj, "currency")
    review_count = _optional(obj, "review_count", 0)
    language = _optional(obj, "language", "en")
    if type(review_count) is not int or not 0 <= review_count <= limits.max_review_count:
        raise InvalidEvent(f"review_count must be an integer in [0, {limits.max_review_count}], "
                           f"got {_describe_value(review_count)}", field="review_count")
    if language not in LANGUAGES:
        raise InvalidEvent(f"language must be one of {list(LANGUAGES)}, "
                           f"got {_describe_value(language)}", field="language")
    if currency is not None and not (isinstance(currency, str) and _CURRENCY.fullmatch(currency)):
        raise InvalidEvent(f"currency must be an ISO 4217 code such as 'USD', "
                           f"got {_describe_value(currency)}", field="currency")
    return ProductCreated(
        event_id=_identifier(obj, "event_id", limits),
        item_id=_identifier(obj, "item_id", limits),
        title=title,
        brand=None if brand is None else _text(brand, "brand", max_chars=limits.max_brand_chars),
        category=_category_path(_optional(obj, "category", []), limits),
        attributes=_attributes(_optional(obj, "attributes", {}), limits),
        price=None if price is None else _price(price, limits),
        currency=currency,
        description=None if description is None else _text(
            description, "description", max_chars=limits.max_description_chars,
            multiline=True, allow_empty=True),
        review_count=review_count,
        language=language,
        created_at_ms=_timestamp(_required(obj, "created_at_ms"), "created_at_ms", limits, now_ms),
    )


def user_behaviour_from_dict(obj: dict[str, Any], *, limits: EventLimits = DEFAULT_LIMITS,
                             now_ms: int | None = None) -> UserBehaviour:
    """Validate an already decoded user-behaviour event (all rules but the payload ones)."""
    _check_object(obj)
    event_type = _required(obj, "event_type")
    if not isinstance(event_type, str) or event_type not in DEFAULT_WEIGHTS:
        raise InvalidEvent(f"unknown event_type {_describe_value(event_type)}; expected one of "
                           f"{list(EVENT_TYPES)}", field="event_type")
    weight = _optional(obj, "weight")
    if weight is not None:
        if type(weight) not in (int, float) or not math.isfinite(weight) \
                or not 0 < weight <= limits.max_weight:
            raise InvalidEvent(f"weight must be a finite number in (0, {limits.max_weight}] or "
                               f"null, got {_describe_value(weight)}", field="weight")
        weight = float(weight)
    category = _optional(obj, "category")
    return UserBehaviour(
        event_id=_identifier(obj, "event_id", limits),
        user_id=_identifier(obj, "user_id", limits),
        item_id=_identifier(obj, "item_id", limits),
        event_type=event_type,
        timestamp_ms=_timestamp(_required(obj, "timestamp_ms"), "timestamp_ms", limits, now_ms),
        weight=weight,
        category=None if category is None else _text(
            category, "category", max_chars=limits.max_behaviour_category_chars),
    )


def _with_max_bytes(limits: EventLimits, max_bytes: int | None) -> EventLimits:
    if max_bytes is None:
        return limits
    return dataclasses.replace(limits, max_payload_bytes=max_bytes)


def _decode(raw: bytes, limits: EventLimits) -> dict[str, Any]:
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise InvalidEvent(f"event must be bytes, got {type(raw).__name__}")
    if len(raw) > limits.max_payload_bytes:
        raise InvalidEvent(f"payload is {len(raw)} bytes, max is {limits.max_payload_bytes}")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"payload is not valid UTF-8: {exc}") from exc
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"payload is not valid JSON: {exc}") from exc
    _check_object(obj)
    return obj


def _check_object(obj: Any) -> None:
    if not isinstance(obj, dict):
        raise InvalidEvent(f"payload must be a JSON object, got {_json_type(obj)}")


def _required(obj: dict[str, Any], name: str) -> Any:
    if name not in obj:
        raise InvalidEvent(f"missing required field {name!r}", field=name)
    return obj[name]


def _optional(obj: dict[str, Any], name: str, default: Any = None) -> Any:
    value = obj.get(name)
    return default if value is None else value


def _identifier(obj: dict[str, Any], name: str, limits: EventLimits) -> str:
    return _text(_required(obj, name), name, max_chars=limits.max_id_chars)


def _text(value: Any, name: str, *, max_chars: int, multiline: bool = False,
          allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidEvent(f"{name} must be a string, got {_describe_value(value)}", field=name)
    if not allow_empty and not value.strip():
        raise InvalidEvent(f"{name} must not be empty, got {value!r}", field=name)
    if len(value) > max_chars:
        raise InvalidEvent(f"{name} has {len(value)} characters, max is {max_chars}", field=name)
    control = (_CONTROL_MULTILINE if multiline else _CONTROL).search(value)
    if control:
        raise InvalidEvent(f"{name} contains control character {control.group()!r} at index "
                           f"{control.start()}", field=name)
    return value


def _category_path(value: Any, limits: EventLimits) -> list[str]:
    if not isinstance(value, list):
        raise InvalidEvent(f"category must be a list of strings, got {_describe_value(value)}",
                           field="category")
    if len(value) > limits.max_category_depth:
        raise InvalidEvent(f"category has {len(value)} levels, max is {limits.max_category_depth}",
                           field="category")
    return [_text(level, f"category[{i}]", max_chars=limits.max_category_level_chars)
            for i, level in enumerate(value)]


def _attributes(value: Any, limits: EventLimits) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidEvent(f"attributes must be an object of strings, got {_describe_value(value)}",
                           field="attributes")
    if len(value) > limits.max_attributes:
        raise InvalidEvent(f"attributes has {len(value)} entries, max is {limits.max_attributes}",
                           field="attributes")
    for key, item in value.items():
        _text(key, "attributes key", max_chars=limits.max_attribute_key_chars)
        _text(item, f"attributes[{key!r}]", max_chars=limits.max_attribute_value_chars,
              allow_empty=True)
    return dict(value)


def _price(value: Any, limits: EventLimits) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise InvalidEvent(f"price must be a finite number or null, got {_describe_value(value)}",
                           field="price")
    if value < 0:
        raise InvalidEvent(f"price must be >= 0, got {value}", field="price")
    if value > limits.max_price:
        raise InvalidEvent(f"price {value} is above the maximum {limits.max_price}", field="price")
    return float(value)


def _timestamp(value: Any, name: str, limits: EventLimits, now_ms: int | None) -> int:
    if type(value) is not int:
        raise InvalidEvent(f"{name} must be an integer (epoch milliseconds), "
                           f"got {_describe_value(value)}", field=name)
    if value < limits.min_timestamp_ms:
        hint = "; it looks like seconds, multiply by 1000" if 10**9 <= value < 10**11 else ""
        raise InvalidEvent(f"{name} {value} is before {_iso(limits.min_timestamp_ms)}{hint}",
                           field=name)
    reference_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    if value > reference_ms + limits.max_future_skew_ms:
        raise InvalidEvent(f"{name} {value} ({_iso(value)}) is more than "
                           f"{limits.max_future_skew_ms} ms after the current time "
                           f"{_iso(reference_ms)}", field=name)
    return value


def _iso(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _describe_value(value: Any) -> str:
    """Return the JSON type and a shortened repr of a value, for error messages."""
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{_json_type(value)} {shown}"
