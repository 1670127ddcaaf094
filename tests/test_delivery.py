"""Delivery policy: unfinished batches stay unacknowledged, failed sends are retried."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from faust.types.tuples import ConsumerMessage

from streams.delivery import OutputRejected, send_acked, withhold_acks


class RecordingConsumer:
    """Stands in for Faust's consumer: records which messages reached their final ack."""

    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, message: ConsumerMessage) -> bool:
        self.acked.append(message.offset)
        return True


def event_at(offset: int) -> SimpleNamespace:
    message = ConsumerMessage("product-created", 0, offset, 0.0, 0, None, b"k", b"v", None)
    message.incref()  # one stream references it, as when Faust delivers it to an agent
    return SimpleNamespace(message=message)


def test_withheld_events_cannot_be_acknowledged():
    consumer = RecordingConsumer()
    done, failed = [event_at(1), event_at(2)], [event_at(3), event_at(4)]
    with withhold_acks(done, agent="test"):
        pass
    with pytest.raises(RuntimeError), withhold_acks(failed, agent="test"):
        raise RuntimeError("send failed")
    # What take_events does for every batch once the agent body is left.
    for event in done + failed:
        event.message.ack(consumer)
    assert consumer.acked == [1, 2]


def test_cancelled_batch_is_withheld():
    consumer = RecordingConsumer()
    events = [event_at(7)]

    async def body() -> None:
        with withhold_acks(events, agent="test"):
            await asyncio.sleep(10)

    async def cancel() -> None:
        task = asyncio.ensure_future(body())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel())
    events[0].message.ack(consumer)
    assert consumer.acked == []


class FlakyTopic:
    """A topic whose sends fail with the given errors first, then succeed."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = list(errors)
        self.attempts = 0

    def get_topic_name(self) -> str:
        return "listings-enriched"

    async def send(self, *, key: bytes, value: bytes):
        self.attempts += 1
        future = asyncio.get_running_loop().create_future()
        if self.errors:
            future.set_exception(self.errors.pop(0))
        else:
            future.set_result(None)
        return future


def test_send_acked_retries_transient_errors():
    topic = FlakyTopic([KafkaTimeoutError(), KafkaTimeoutError()])
    asyncio.run(send_acked(topic, key=b"k", value=b"v", max_pause_s=0.01))
    assert topic.attempts == 3


def test_send_acked_raises_on_rejected_record():
    topic = FlakyTopic([MessageSizeTooLargeError()])
    with pytest.raises(OutputRejected, match="listings-enriched rejected the record for key b'k'"):
        asyncio.run(send_acked(topic, key=b"k", value=b"v"))
    assert topic.attempts == 1


def test_dead_letter_batch_sends_every_event():
    from streams.deadletter import DeadLetterPolicy

    topic = FlakyTopic([KafkaTimeoutError()])
    policy = DeadLetterPolicy(topic=topic)
    events = [event_at(1), event_at(2)]
    for event in events:
        event.key, event.value = b"k", b"{}"
    asyncio.run(policy.send_batch(events, RuntimeError("batch failed")))
    assert policy.count == 2
    assert topic.attempts == 3  # the first send failed once and was sent again
