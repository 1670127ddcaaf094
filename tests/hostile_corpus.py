"""A deterministic corpus of hostile input events, each one invalid for a known reason.

Every entry is ``(logical_topic, raw_value, case)``. ``raw_value`` is the exact
message value, ``None`` for a tombstone. The cases cover malformed payloads,
schema violations and out-of-range values for both input topics.
"""

from __future__ import annotations

import random

import orjson

PRODUCT = "product-created"
BEHAVIOUR = "user-behaviour"
NOW_MS = 1_700_000_000_000

VALID_PRODUCT = {
    "event_id": "p-0", "item_id": "item-0", "title": "Canvas tote bag", "brand": "Acme",
    "category": ["Bags", "Totes"], "attributes": {"colour": "navy"}, "price": 24.5, "currency": "USD",
    "description": "A roomy canvas tote.", "review_count": 2, "language": "en", "created_at_ms": NOW_MS,
}
VALID_BEHAVIOUR = {
    "event_id": "b-0", "user_id": "user-0", "item_id": "item-0", "event_type": "purchase",
    "timestamp_ms": NOW_MS, "weight": 2.0,
}
WRONG_TYPES = [[], {}, 3.5, True, "text", [1, 2]]


def _dump(obj) -> bytes:
    return orjson.dumps(obj)


def _with(base: dict, **changes) -> dict:
    out = dict(base)
    for name, value in changes.items():
        if value is _DROP:
            out.pop(name, None)
        else:
            out[name] = value
    return out


_DROP = object()


def _schema_cases(rng: random.Random) -> list[tuple[str, bytes | None, str]]:
    cases: list[tuple[str, bytes | None, str]] = []
    for topic, base, required in (
        (PRODUCT, VALID_PRODUCT, ("event_id", "item_id", "title")),
        (BEHAVIOUR, VALID_BEHAVIOUR, ("event_id", "user_id", "item_id", "event_type", "timestamp_ms")),
    ):
        for name in required:
            cases.append((topic, _dump(_with(base, **{name: _DROP})), f"missing {name}"))
        for name in base:
            for wrong in WRONG_TYPES:
                if _accepts(topic, name, wrong):
                    continue
                cases.append((topic, _dump(_with(base, **{name: wrong})), f"wrong type {name}"))
        for cut in sorted(rng.sample(range(1, len(_dump(base)) - 1), 40)):
            cases.append((topic, _dump(base)[:cut], "truncated JSON"))
        for value in (b"", b"null", b"[]", b"42", b'"a string"', b"{'single': 'quotes'}", b"{,}",
                      b'{"a": NaN}', b'{"a": 1e999}', b"\x00\x01\x02"):
            cases.append((topic, value, "not a JSON object"))
        for _ in range(30):
            junk = bytes(rng.randrange(0x80, 0x100) for _ in range(rng.randrange(1, 40)))
            cases.append((topic, b'{"event_id": "' + junk + b'"}', "invalid UTF-8"))
        cases.append((topic, None, "tombstone"))
        cases.append((topic, _dump(_with(base, event_id="x" * 70_000)), "oversized payload"))
        for char in ("\x00", "\x07", "\x1b", "\x7f", "\x85"):
            text_field = "title" if topic == PRODUCT else "user_id"
            cases.append((topic, _dump(_with(base, **{text_field: f"bad{char}value"})), "control character"))
    return cases


def _accepts(topic: str, name: str, value) -> bool:
    """Return True where a 'wrong' value is in fact valid: the field's own JSON type."""
    base = VALID_PRODUCT if topic == PRODUCT else VALID_BEHAVIOUR
    expected = base[name]
    if isinstance(value, bool) or isinstance(expected, bool):
        return False
    if value == [1, 2]:
        return False  # a list, but of numbers where strings are required
    if name in ("event_type", "currency", "language"):
        return False  # "text" is not one of the allowed codes
    numbers = (int, float)
    if isinstance(expected, numbers) and not isinstance(expected, bool):
        return isinstance(value, numbers) and value >= 0 and name != "created_at_ms" and name != "timestamp_ms"
    return type(value) is type(expected)


def _range_cases() -> list[tuple[str, bytes, str]]:
    cases = []
    for price in (-0.01, -1, -1e9, 1e12, 1e300):
        cases.append((PRODUCT, _dump(_with(VALID_PRODUCT, price=price)), "price out of range"))
    for created in (NOW_MS * 10, 10**15, -1, 0, 946_684_799_999):
        cases.append((PRODUCT, _dump(_with(VALID_PRODUCT, created_at_ms=created)), "timestamp out of range"))
        cases.append((BEHAVIOUR, _dump(_with(VALID_BEHAVIOUR, timestamp_ms=created)), "timestamp out of range"))
    for title in ("", "   ", "\n\t"):
        cases.append((PRODUCT, _dump(_with(VALID_PRODUCT, title=title)), "empty title"))
    for event_type in ("teleport", "VIEW", "buy", "", "purchase "):
        cases.append((BEHAVIOUR, _dump(_with(VALID_BEHAVIOUR, event_type=event_type)), "unknown event type"))
    for weight in (0, -1, 1e6):
        cases.append((BEHAVIOUR, _dump(_with(VALID_BEHAVIOUR, weight=weight)), "weight out of range"))
    cases.append((PRODUCT, _dump(_with(VALID_PRODUCT, attributes={f"k{i}": "v" for i in range(500)})),
                  "too many attributes"))
    cases.append((PRODUCT, _dump(_with(VALID_PRODUCT, review_count=-3)), "negative review count"))
    cases.append((PRODUCT, _dump(_with(VALID_PRODUCT, language="fr")), "unsupported language"))
    return cases


def hostile_events(*, seed: int = 0, min_count: int = 1000) -> list[tuple[str, bytes | None, str]]:
    """Return at least ``min_count`` hostile events (cases repeat with new event ids to fill up)."""
    rng = random.Random(seed)
    base = _schema_cases(rng) + _range_cases()
    events = list(base)
    round_number = 1
    while len(events) < min_count:
        for topic, raw, case in base:
            if raw and raw.startswith(b"{") and b'"event_id":"' in raw:
                raw = raw.replace(b'"event_id":"', f'"event_id":"r{round_number}-'.encode(), 1)
            events.append((topic, raw, case))
            if len(events) >= min_count:
                break
        round_number += 1
    return events
