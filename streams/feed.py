"""Feed input events into Kafka: simulator output, dataset loaders or raw bytes.

Events are ``(topic, key, value)`` tuples as returned by
:meth:`streams.simulator.Simulator.events` and
:meth:`streams.loaders.LoadedEvents.events`. A dict value is serialized with
orjson and a bytes value is sent unchanged, so invalid events can be fed too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sized
from typing import Any, Callable, Iterable, Mapping

import orjson
from aiokafka import AIOKafkaProducer
from tqdm import tqdm

logger = logging.getLogger(__name__)

# AIOKafkaProducer arguments that `security` may set; every other setting is fixed here.
SECURITY_OPTIONS = frozenset({
    "security_protocol", "ssl_context", "sasl_mechanism", "sasl_plain_username",
    "sasl_plain_password", "sasl_kerberos_service_name", "sasl_kerberos_domain_name",
    "sasl_oauth_token_provider",
})
MAX_PENDING_SENDS = 1000  # delivery futures awaited in one go
PROGRESS_MIN_EVENTS = 1000  # shorter feeds of known length show no progress bar

Event = tuple[str, str | bytes | None, dict | bytes]


async def produce_events(bootstrap_servers: str, events: Iterable[Event], *,
                         rate_per_s: float | None = None,
                         security: Mapping[str, Any] | None = None,
                         topic_names: Mapping[str, str] | None = None,
                         linger_ms: int = 5,
                         show_progress: bool | None = None,
                         producer_factory: Callable[..., Any] = AIOKafkaProducer) -> int:
    """Send events to Kafka and wait until the broker has acknowledged all of them.

    The producer uses ``acks="all"`` and idempotence, so a retried send is
    written once per partition.

    Parameters
    ----------
    bootstrap_servers
        Broker list, e.g. ``"127.0.0.1:9092"``.
    events
        ``(topic, key, value)`` tuples. A ``str`` key is UTF-8 encoded; a dict
        value is serialized with orjson, a bytes value is sent as is.
    rate_per_s
        Maximum send rate in events per second; ``None`` sends as fast as possible.
    security
        Kafka client security options passed unchanged to the producer, e.g.
        ``{"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", ...}``.
        Allowed keys: :data:`SECURITY_OPTIONS`.
    topic_names
        Logical topic name -> real topic name (for example with a prefix);
        names not in the mapping are used as they are.
    linger_ms
        How long the producer waits to fill a batch.
    show_progress
        ``True`` or ``False`` forces the tqdm bar on or off. ``None`` shows it on
        a terminal for feeds of unknown length or of at least 1000 events.
    producer_factory
        Called with the producer arguments; tests pass a fake producer here.

    Returns
    -------
    int
        Number of events acknowledged by the broker.

    Raises
    ------
    ValueError
        For a non-positive rate, an unknown security option or an unsupported value type.
    aiokafka.errors.KafkaError
        When a send fails after the producer's retries.
    """
    if rate_per_s is not None and not (math.isfinite(rate_per_s) and rate_per_s > 0):
        raise ValueError(f"rate_per_s must be a positive number or None, got {rate_per_s!r}")
    security = dict(security or {})
    unknown = sorted(set(security) - SECURITY_OPTIONS)
    if unknown:
        raise ValueError(f"unknown security options {unknown}; allowed: {sorted(SECURITY_OPTIONS)}")

    total = len(events) if isinstance(events, Sized) else None
    if show_progress is None:
        disable = None if total is None or total >= PROGRESS_MIN_EVENTS else True
    else:
        disable = not show_progress
    producer = producer_factory(bootstrap_servers=bootstrap_servers, acks="all",
                                enable_idempotence=True, linger_ms=linger_ms, **security)
    await producer.start()
    logger.info("producing to %s events=%s rate_per_s=%s", bootstrap_servers,
                total if total is not None else "unknown", rate_per_s)
    progress = tqdm(total=total, unit="event", desc="produce", disable=disable)
    started = time.monotonic()
    count = 0
    pending: list[asyncio.Future] = []
    try:
        for topic, key, value in events:
            if rate_per_s is not None:
                delay_s = started + count / rate_per_s - time.monotonic()
                if delay_s > 0:
                    await asyncio.sleep(delay_s)
            real_topic = topic_names.get(topic, topic) if topic_names else topic
            pending.append(await producer.send(real_topic, value=_value_bytes(value, topic),
                                               key=_key_bytes(key)))
            count += 1
            if len(pending) >= MAX_PENDING_SENDS:
                await asyncio.gather(*pending)
                progress.update(len(pending))
                pending.clear()
        await asyncio.gather(*pending)
        progress.update(len(pending))
    finally:
        progress.close()
        await producer.stop()
    elapsed_s = time.monotonic() - started
    logger.info("produced events=%d elapsed_s=%.2f", count, elapsed_s)
    return count


def produce_events_sync(bootstrap_servers: str, events: Iterable[Event], **options: Any) -> int:
    """Run :func:`produce_events` in a new event loop; takes the same keyword options."""
    return asyncio.run(produce_events(bootstrap_servers, events, **options))


def _value_bytes(value: Any, topic: str) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):
        return orjson.dumps(value)
    raise ValueError(f"event value for topic {topic!r} must be a dict or bytes, "
                     f"got {type(value).__name__}")


def _key_bytes(key: str | bytes | None) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return str(key).encode("utf-8")
