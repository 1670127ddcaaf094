"""Publishing of ``similar-items`` records, shared by the product and behaviour agents."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import faust
import orjson

from streams.delivery import send_acked

logger = logging.getLogger(__name__)


def similar_items_records(similar: Mapping[str, list[tuple[str, float]]], *, model_version: str,
                          trigger: str, record_versions: Mapping[str, str] | None = None,
                          produced_at_ms: int | None = None) -> list[dict]:
    """Build ``SimilarItems`` dicts (see ``streams.schemas.SimilarItems``) from ranked neighbours."""
    produced_at_ms = int(time.time() * 1000) if produced_at_ms is None else produced_at_ms
    record_versions = record_versions or {}
    return [
        {
            "item_id": item_id,
            "items": [{"item_id": other, "score": round(float(score), 6)} for other, score in neighbours],
            "model_version": model_version,
            "trigger": trigger,
            "record_version": record_versions.get(item_id),
            "produced_at_ms": produced_at_ms,
        }
        for item_id, neighbours in similar.items()
    ]


async def publish_keyed(topic: faust.TopicT, records: list[dict], *, key_field: str) -> None:
    """Send records keyed by ``record[key_field]`` and wait until the broker acknowledges all of them.

    The records are sent together; one that fails is sent again on its own
    with :func:`streams.delivery.send_acked`, which retries until the broker
    acknowledges it. Each key occurs once per call, so the retry cannot
    reorder two records of one key.
    """
    sent = [(record, await topic.send(key=record[key_field].encode(), value=orjson.dumps(record)))
            for record in records]
    results = await asyncio.gather(*(future for _, future in sent), return_exceptions=True)
    for (record, _), result in zip(sent, results):
        if isinstance(result, asyncio.CancelledError):
            raise result
        if isinstance(result, BaseException):
            logger.warning("send failed topic=%s key=%s error=%s: %s; sending again", topic.get_topic_name(),
                           record[key_field], type(result).__name__, result)
            await send_acked(topic, key=record[key_field].encode(), value=orjson.dumps(record))
