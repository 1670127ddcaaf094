"""Delivery policy of the agents: when inputs are acknowledged and how sends are retried.

Outputs are at-least-once: a batch's input offsets may be committed only after
every output of the batch is acknowledged by the broker. Two rules keep it so:

- :func:`withhold_acks` guards an agent's batch. Faust's ``take_events``
  acknowledges a batch when the agent requests the next one, and also when the
  agent body is cancelled (shutdown). When the body does not finish, the
  guard marks the batch's messages so that Faust cannot acknowledge them.
  Their offsets are then not committed by this consumer, and the events come
  back after a restart. An agent body that raises is restarted by Faust,
  which commits past the batch with the next acknowledgement, so the agents
  catch every error themselves (see streams/agents/product.py).
- :func:`send_acked` retries a send that fails with a broker or network error,
  with a growing pause, until it is acknowledged or the worker stops. A record
  that the broker rejects for good (too large for the topic) raises
  :class:`OutputRejected` at once, so the caller can dead-letter its input
  instead of blocking the partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence

import faust
from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError

logger = logging.getLogger(__name__)

# Errors that no retry can fix, because the broker rejects the record itself.
_RECORD_ERRORS = (MessageSizeTooLargeError, RecordTooLargeError)


class OutputRejected(Exception):
    """Output record that the broker rejects for good; the message names the topic, key and reason."""


@contextlib.contextmanager
def withhold_acks(events: Sequence[faust.types.EventT], *, agent: str) -> Iterator[None]:
    """Keep ``events`` unacknowledged when the guarded block does not finish.

    Faust acknowledges a message only while ``message.acked`` is false, so
    setting it keeps the offset out of every later commit of this consumer.

    NOTE: this relies on ``faust.types.Message.acked``, which is how Faust
    0.15 decides whether to acknowledge; check it when Faust is upgraded
    (tests/test_delivery.py covers it).
    """
    try:
        yield
    except BaseException as exc:
        for event in events:
            event.message.acked = True
        first = events[0].message if events else None
        log = logger.info if isinstance(exc, (asyncio.CancelledError, GeneratorExit)) else logger.error
        log("agent=%s batch not finished (%s); %d events stay unacknowledged from topic=%s partition=%s "
            "offset=%s", agent, type(exc).__name__, len(events), getattr(first, "topic", None),
            getattr(first, "partition", None), getattr(first, "offset", None))
        raise


async def send_acked(topic: faust.TopicT, *, key: bytes, value: bytes, max_pause_s: float = 30.0) -> None:
    """Send one record and wait for the broker's acknowledgement, retrying transient errors.

    Raises
    ------
    OutputRejected
        When the broker rejects the record itself (for example, larger than
        the topic's ``max.message.bytes``).
    asyncio.CancelledError
        When the worker stops while waiting; the caller's batch then stays
        unacknowledged (see :func:`withhold_acks`).
    """
    pause_s = 0.5
    attempt = 0
    while True:
        attempt += 1
        try:
            fut = await topic.send(key=key, value=value)
            await fut
            return
        except _RECORD_ERRORS as exc:
            raise OutputRejected(f"topic {topic.get_topic_name()} rejected the record for key {key!r} "
                                 f"({len(value)} bytes): {type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # broker or network trouble: wait and send again
            logger.warning("send failed topic=%s key=%r attempt=%d error=%s: %s; retrying in %.1f s",
                           topic.get_topic_name(), key, attempt, type(exc).__name__, exc, pause_s)
            await asyncio.sleep(pause_s)
            pause_s = min(max_pause_s, pause_s * 2)
