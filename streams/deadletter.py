"""Dead-letter policy: invalid events go to a topic with the reason and the bytes."""

from __future__ import annotations

import base64
import logging
import time

import faust
import orjson

from streams.schemas import InvalidEvent

logger = logging.getLogger(__name__)


class DeadLetterPolicy:
    """Send an event that cannot be processed to the dead-letter topic.

    The record keeps the original bytes (base64) so that the event can be
    fixed and replayed, and the agent goes on with the next event.
    """

    def __init__(self, *, topic: faust.TopicT) -> None:
        self._topic = topic
        self.count = 0

    async def send_event(self, event: faust.types.EventT, error: Exception) -> None:
        """Dead-letter a consumed event that failed with ``error``.

        An ``InvalidEvent`` is the expected case; any other error is a bug in
        the parser, logged with its traceback, and the event is kept the same way.
        """
        message = event.message
        if not isinstance(error, InvalidEvent):
            logger.error("unexpected error while parsing topic=%s partition=%s offset=%s",
                         message.topic, message.partition, message.offset, exc_info=error)
        await self.send(raw=event.value, key=event.key, reason=str(error) or repr(error),
                        error_type=type(error).__name__, source_topic=message.topic,
                        partition=message.partition, offset=message.offset)

    async def send(self, *, raw: bytes | None, reason: str, error_type: str,
                   source_topic: str, partition: int | None, offset: int | None,
                   key: bytes | None = None) -> None:
        record = {
            "reason": reason,
            "error_type": error_type,
            "source_topic": source_topic,
            "partition": partition,
            "offset": offset,
            "original_key": base64.b64encode(key).decode("ascii") if key else None,
            "original_bytes": base64.b64encode(raw or b"").decode("ascii"),
            "failed_at_ms": int(time.time() * 1000),
        }
        dead_letter_key = f"{source_topic}:{partition}:{offset}".encode()
        fut = await self._topic.send(key=dead_letter_key, value=orjson.dumps(record))
        await fut
        self.count += 1
        logger.warning("dead-lettered topic=%s partition=%s offset=%s error_type=%s reason=%s",
                       source_topic, partition, offset, error_type, reason)
