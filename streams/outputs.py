"""Read output topics back: used by the demo, the replay checks and the tests."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import orjson
from aiokafka import AIOKafkaConsumer

logger = logging.getLogger(__name__)


@dataclass
class Collected:
    """Records read per topic, in the order they were read."""

    records: dict[str, list[dict]] = field(default_factory=dict)

    def latest_by_key(self, topic: str, key_field: str) -> dict[str, dict]:
        """Return the last record per key, as a compacted topic would keep it."""
        return {record[key_field]: record for record in self.records.get(topic, [])}


async def collect(bootstrap_servers: str, topics: list[str], *,
                  done: Callable[[Collected], bool], timeout_s: float = 600.0,
                  security: Mapping[str, Any] | None = None) -> Collected:
    """Read ``topics`` from the beginning until ``done(collected)`` or the timeout.

    Returns what was read, also on timeout (the caller decides whether that
    is a failure). Values that are not JSON are kept as ``{"_raw": bytes}``.
    """
    collected = Collected(records={topic: [] for topic in topics})
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, **dict(security or {}))
    await consumer.start()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            for partition, messages in batches.items():
                for message in messages:
                    try:
                        value = orjson.loads(message.value)
                    except orjson.JSONDecodeError:
                        logger.warning("non-JSON record topic=%s partition=%d offset=%d",
                                       partition.topic, partition.partition, message.offset)
                        value = {"_raw": message.value}
                    collected.records[partition.topic].append(value)
            if done(collected):
                return collected
        logger.warning("collect timed out after %.0f s: %s", timeout_s,
                       {topic: len(records) for topic, records in collected.records.items()})
        return collected
    finally:
        await consumer.stop()


def collect_sync(bootstrap_servers: str, topics: list[str], **kwargs: Any) -> Collected:
    return asyncio.run(collect(bootstrap_servers, topics, **kwargs))
