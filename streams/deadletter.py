"""Dead-letter policy: invalid events go to a topic with the reason and the bytes."""

from __future__ import annotations

import logging

import faust

from streams.delivery import OutputRejected, send_acked
from streams.schemas import DeadLetter, InvalidEvent, to_bytes

logger = logging.getLogger(__name__)


class DeadLetterPolicy:
    """Send an event that cannot be processed to the dead-letter topic.

    The record keeps the original bytes (base64, cut at ``max_original_bytes``)
    so that the event can be fixed and replayed, and the agent goes on with
    the next event.
    """

    def __init__(self, *, topic: faust.TopicT, max_original_bytes: int = 256 * 1024) -> None:
        self._topic = topic
        self._max_original_bytes = max_original_bytes
        self.count = 0

    async def send_event(self, event: faust.types.EventT, error: Exception, *, log_traceback: bool = True) -> None:
        """Dead-letter a consumed event that failed with ``error``.

        An ``InvalidEvent`` is the expected case, and an ``OutputRejected``
        (the broker rejected the event's output) the other expected one. Any
        other error is a bug: it is logged with its traceback, unless
        ``log_traceback`` is false because the caller logged it already, and
        the event is kept the same way. Sends are retried as described in
        :mod:`streams.delivery`.
        """
        message = event.message
        if log_traceback and not isinstance(error, (InvalidEvent, OutputRejected)):
            logger.error("unexpected error topic=%s partition=%s offset=%s",
                         message.topic, message.partition, message.offset, exc_info=error)
        record = DeadLetter.from_error(error, raw=event.value, key=event.key, source_topic=message.topic,
                                       partition=message.partition, offset=message.offset,
                                       max_original_bytes=self._max_original_bytes)
        dead_letter_key = f"{message.topic}:{message.partition}:{message.offset}".encode()
        try:
            await send_acked(self._topic, key=dead_letter_key, value=to_bytes(record))
        except OutputRejected as exc:
            # The record is too large for the dead-letter topic: keep the reason, size and hash only.
            logger.error("dead-letter record rejected topic=%s partition=%s offset=%s size=%s error=%s; "
                         "sending it without the original bytes", message.topic, message.partition,
                         message.offset, record.original_size, exc)
            record.original_bytes = ""
            record.original_truncated = True
            try:
                await send_acked(self._topic, key=dead_letter_key, value=to_bytes(record))
            except OutputRejected as again:  # nothing smaller to send; the log line keeps the ids and hash
                logger.critical("dead-letter send failed topic=%s partition=%s offset=%s size=%s sha256=%s "
                                "reason=%s error=%s", message.topic, message.partition, message.offset,
                                record.original_size, record.original_sha256, record.reason, again)
                return
        self.count += 1
        logger.warning("dead-lettered topic=%s partition=%s offset=%s error_type=%s reason=%s",
                       message.topic, message.partition, message.offset, record.error_type, record.reason)

    async def send_batch(self, events: list[faust.types.EventT], error: Exception) -> None:
        """Dead-letter every event of a batch that failed with ``error``; the caller logs the traceback once."""
        for event in events:
            await self.send_event(event, error, log_traceback=False)
