"""Agent for ``enrichment-retry``: enrich again the listings whose generation failed.

The product agent publishes such a listing flagged (``retry_scheduled``) and
queues it here with the time the retry is due. This agent waits until then,
skips the request when a newer ``product-created`` event of the item arrived
meanwhile, and runs the same enrichment. The retry's output carries
``record_version`` ``<source>/retry-<n>``, so consumers keep it as a newer
version of the flagged record. A retry that fails again is queued once more,
until ``settings.generation_retries`` is reached.
"""

from __future__ import annotations

import asyncio
import logging
import time

import faust
import orjson

from streams.agents.product import as_listing_dict, enrich_or_dead_letter
from streams.deadletter import DeadLetterPolicy
from streams.delivery import withhold_acks
from streams.enrichment import SourceRef
from streams.schemas import InvalidEvent, parse_product_created
from streams.settings import Settings
from streams.state import WorkerState
from streams.topics import Topics

logger = logging.getLogger(__name__)


def parse_retry_request(raw: bytes) -> tuple[dict, SourceRef]:
    """Return the listing and the source (with its attempt) of a retry request.

    Raises
    ------
    InvalidEvent
        When ``raw`` is not a retry request written by the product agent.
    """
    try:
        request = orjson.loads(raw)
        listing, source = request["listing"], request["source"]
        ref = SourceRef(topic=str(source["topic"]), partition=int(source["partition"]),
                        offset=int(source["offset"]), timestamp_ms=source.get("timestamp_ms"),
                        attempt=int(request["attempt"]))
        due_ms = int(request["due_ms"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidEvent(f"invalid retry request: {type(exc).__name__}: {exc}") from exc
    if ref.attempt < 1:
        raise InvalidEvent(f"invalid retry request: attempt {ref.attempt} < 1")
    # The listing must pass the product-created schema again; it may have been written by hand.
    checked = as_listing_dict(parse_product_created(orjson.dumps(listing)))
    checked["_due_ms"] = due_ms
    return checked, ref


def register_retry_agent(app: faust.App, *, topics: Topics, state: WorkerState,
                         dead_letter: DeadLetterPolicy, settings: Settings) -> faust.types.AgentT:
    """Register the agent that enriches the listings queued on ``enrichment-retry``."""

    async def retry_enrichment(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.generation_batch_size,
                                               within=settings.generation_batch_timeout_s):
            with withhold_acks(events, agent="retry-enrichment"):
                inputs, listings, sources = [], [], []
                for event in events:
                    try:
                        listing, source = parse_retry_request(event.value)
                    except InvalidEvent as exc:
                        await dead_letter.send_event(event, exc)
                        continue
                    if _superseded(listing, source, state):
                        continue
                    inputs.append(event)
                    listings.append(listing)
                    sources.append(source)
                if not listings:
                    continue
                # Requests are queued in order with the same delay, so the last one is due last.
                due_ms = [listing.pop("_due_ms") for listing in listings]
                wait_s = max(due_ms) / 1000 - time.time()
                if wait_s > 0:
                    logger.info("retry batch waits wait_s=%.1f items=%s", wait_s,
                                [listing["item_id"] for listing in listings])
                    await asyncio.sleep(min(wait_s, settings.generation_retry_delay_s))
                await enrich_or_dead_letter(listings, sources, inputs, topics=topics, state=state,
                                            dead_letter=dead_letter, settings=settings)

    return app.agent(topics.enrichment_retry, name="retry-enrichment")(retry_enrichment)


def _superseded(listing: dict, source: SourceRef, state: WorkerState) -> bool:
    """Return whether a newer product-created event of the item has been seen by this worker."""
    first_version = SourceRef(topic=source.topic, partition=source.partition, offset=source.offset).record_version
    newest = state.listing_versions.get(listing["item_id"])
    if newest is not None and newest != first_version:
        logger.info("retry skipped item_id=%s attempt=%d source=%s newer=%s", listing["item_id"], source.attempt,
                    first_version, newest)
        return True
    return False
