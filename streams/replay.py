"""Replay a range of input topics into another topic prefix for a backfill.

A worker started with ``SHOPSYNTH_TOPIC_PREFIX=<target prefix>`` then consumes
the copy in its own consumer group and writes its own output topics, so the
live worker and its outputs are untouched. Each record keeps its partition,
key, value and timestamp, so per-partition order is the same as in the source.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from infra.provision import provision_topics

logger = logging.getLogger(__name__)

INPUT_TOPICS = ("product-created", "user-behaviour")


@dataclass(frozen=True, kw_only=True)
class ReplayRange:
    """Start and stop positions of a replay, the same in every partition.

    Offsets win over timestamps when both are given. With neither start
    option the replay starts at the beginning, and with neither stop option
    it stops at the end offsets read when the replay starts.
    """

    from_offset: int | None = None
    to_offset: int | None = None  # exclusive
    from_timestamp_ms: int | None = None
    to_timestamp_ms: int | None = None  # exclusive

    def validate(self) -> None:
        for name in ("from_offset", "to_offset", "from_timestamp_ms", "to_timestamp_ms"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
        if self.from_offset is not None and self.to_offset is not None and self.to_offset < self.from_offset:
            raise ValueError(f"--to-offset {self.to_offset} is before --from-offset {self.from_offset}")
        if (self.from_timestamp_ms is not None and self.to_timestamp_ms is not None
                and self.to_timestamp_ms < self.from_timestamp_ms):
            raise ValueError(f"--to-timestamp-ms {self.to_timestamp_ms} is before "
                             f"--from-timestamp-ms {self.from_timestamp_ms}")


async def replay(bootstrap_servers: str, *, source_prefix: str, target_prefix: str,
                 replay_range: ReplayRange = ReplayRange(), topics: tuple[str, ...] = INPUT_TOPICS,
                 security: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Copy ``topics`` from ``source_prefix`` to ``target_prefix`` within ``replay_range``.

    Returns the number of records copied per logical topic.
    """
    replay_range.validate()
    if source_prefix == target_prefix:
        raise ValueError(f"target prefix {target_prefix!r} equals the source prefix; a backfill needs "
                         "its own namespace, for example --target-prefix backfill-1.")
    options = dict(security or {})
    await provision_topics(bootstrap_servers, prefix=target_prefix, client_options=options or None)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                                group_id=None, **options)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all",
                                enable_idempotence=True, **options)
    partitions = await _fetch_partitions(bootstrap_servers, [source_prefix + t for t in topics], options)
    missing = [topic for topic, found in partitions.items() if not found]
    if missing:
        raise ValueError(f"source topics {missing} do not exist; check the source prefix "
                         f"({source_prefix!r}, from --topic-prefix or SHOPSYNTH_TOPIC_PREFIX)")
    await consumer.start()
    await producer.start()
    copied: dict[str, int] = {}
    try:
        for topic in topics:
            copied[topic] = await _copy_topic(consumer, producer, source=source_prefix + topic,
                                              partitions=partitions[source_prefix + topic],
                                              target=target_prefix + topic, replay_range=replay_range)
            logger.info("replayed topic=%s records=%d target=%s", source_prefix + topic, copied[topic],
                        target_prefix + topic)
        await producer.flush()
    finally:
        await producer.stop()
        await consumer.stop()
    return copied


async def _copy_topic(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, *, source: str,
                      partitions: set[int], target: str, replay_range: ReplayRange) -> int:
    assigned = [TopicPartition(source, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    starts = await _start_offsets(consumer, assigned, replay_range)
    stops = await _stop_offsets(consumer, assigned, replay_range)
    copied = 0
    for tp in assigned:
        start, stop = starts[tp], stops[tp]
        if start >= stop:
            continue
        consumer.seek(tp, start)
        position = start
        while position < stop:
            batches = await consumer.getmany(tp, timeout_ms=1000, max_records=500)
            messages = batches.get(tp, [])
            if not messages:
                break
            for message in messages:
                if message.offset >= stop:
                    position = stop
                    break
                await producer.send(target, key=message.key, value=message.value, partition=tp.partition,
                                    timestamp_ms=message.timestamp)
                copied += 1
                position = message.offset + 1
    return copied


async def _fetch_partitions(bootstrap_servers: str, topics: list[str],
                            options: Mapping[str, Any]) -> dict[str, set[int]]:
    """Return the partitions of each existing topic; a missing topic maps to an empty set."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **dict(options))
    await admin.start()
    try:
        # Listing before describing matters: describing a missing topic creates
        # it on a broker with auto.create.topics.enable=true.
        existing = set(await admin.list_topics())
        found = [topic for topic in topics if topic in existing]
        partitions = {topic: set() for topic in topics}
        for description in await admin.describe_topics(found) if found else []:
            partitions[description["topic"]] = {p["partition"] for p in description["partitions"]}
        return partitions
    finally:
        await admin.close()


async def _start_offsets(consumer, assigned, replay_range: ReplayRange) -> dict[TopicPartition, int]:
    beginnings = await consumer.beginning_offsets(assigned)
    if replay_range.from_offset is not None:
        return {tp: max(beginnings[tp], replay_range.from_offset) for tp in assigned}
    if replay_range.from_timestamp_ms is not None:
        ends = await consumer.end_offsets(assigned)
        found = await consumer.offsets_for_times({tp: replay_range.from_timestamp_ms for tp in assigned})
        return {tp: found[tp].offset if found[tp] is not None else ends[tp] for tp in assigned}
    return beginnings


async def _stop_offsets(consumer, assigned, replay_range: ReplayRange) -> dict[TopicPartition, int]:
    ends = await consumer.end_offsets(assigned)
    if replay_range.to_offset is not None:
        return {tp: min(ends[tp], replay_range.to_offset) for tp in assigned}
    if replay_range.to_timestamp_ms is not None:
        found = await consumer.offsets_for_times({tp: replay_range.to_timestamp_ms for tp in assigned})
        return {tp: found[tp].offset if found[tp] is not None else ends[tp] for tp in assigned}
    return ends
