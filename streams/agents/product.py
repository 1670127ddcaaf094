"""Agent for ``product-created``: validate, enrich cold listings, publish every listing."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import faust
import orjson

from models.features import item_feature_tokens, listing_text_tokens
from streams.agents.similar import publish_keyed, similar_items_records
from streams.deadletter import DeadLetterPolicy
from streams.delivery import OutputRejected, send_acked, withhold_acks
from streams.enrichment import SourceRef, finish_record
from streams.schemas import parse_product_created
from streams.settings import Settings
from streams.state import WorkerState
from streams.topics import Topics

logger = logging.getLogger(__name__)


def register_product_agent(app: faust.App, *, topics: Topics, state: WorkerState,
                           dead_letter: DeadLetterPolicy, settings: Settings) -> faust.types.AgentT:
    """Register the agent that turns ``product-created`` into ``listings-enriched``."""

    async def enrich_listings(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.generation_batch_size,
                                               within=settings.generation_batch_timeout_s):
            with withhold_acks(events, agent="enrich-listings"):
                inputs: list[faust.types.EventT] = []
                listings: list[dict] = []
                sources: list[SourceRef] = []
                for event in events:
                    message = event.message
                    try:
                        listing = parse_product_created(event.value, max_bytes=settings.max_event_bytes)
                    except Exception as exc:  # InvalidEvent or a parser bug: dead-letter it, go on
                        await dead_letter.send_event(event, exc)
                        continue
                    source = SourceRef(topic=message.topic, partition=message.partition, offset=message.offset,
                                       timestamp_ms=int(message.timestamp * 1000))
                    listing = as_listing_dict(listing)
                    state.listing_versions[listing["item_id"]] = source.record_version
                    inputs.append(event)
                    listings.append(listing)
                    sources.append(source)
                if listings:
                    await enrich_or_dead_letter(listings, sources, inputs, topics=topics, state=state,
                                                dead_letter=dead_letter, settings=settings)

    return app.agent(topics.product_created, name="enrich-listings")(enrich_listings)


async def enrich_or_dead_letter(listings: list[dict], sources: list[SourceRef], inputs: list[faust.types.EventT],
                                *, topics: Topics, state: WorkerState, dead_letter: DeadLetterPolicy,
                                settings: Settings) -> None:
    """Run :func:`enrich_and_publish`; when it raises, dead-letter every input of the batch.

    Faust restarts an agent whose body raises and then acknowledges the next
    batches, which commits past the failed one, so an error must not leave
    the agent. The dead-letter records keep the original bytes for a replay.
    Some listings of the batch may have been published before the error.
    """
    try:
        await enrich_and_publish(listings, sources, inputs, topics=topics, state=state,
                                 dead_letter=dead_letter, settings=settings)
    except Exception as exc:  # a bug or bad data: keep the inputs, go on with the next batch
        logger.exception("batch failed items=%s first_source=%s error=%s: %s; dead-lettering its %d inputs",
                         [listing.get("item_id") for listing in listings], sources[0].record_version,
                         type(exc).__name__, exc, len(inputs))
        await dead_letter.send_batch(inputs, exc)


async def enrich_and_publish(listings: list[dict], sources: list[SourceRef], inputs: list[faust.types.EventT], *,
                             topics: Topics, state: WorkerState, dead_letter: DeadLetterPolicy,
                             settings: Settings) -> None:
    """Enrich ``listings``, publish one record per listing, then upsert them into the recommender.

    ``inputs`` are the consumed events of the listings, in the same order; an
    input whose output the broker rejects goes to the dead-letter topic. When
    generation fails or times out, the listings are published flagged, and
    each is queued on ``enrichment-retry`` while its attempt is below
    ``settings.generation_retries``.
    """
    started = time.perf_counter()
    records, failure = await _enrich(listings, sources, state=state, settings=settings)
    retries: list[tuple[dict, SourceRef]] = []
    if failure is not None:
        for listing, source, record in zip(listings, sources, records):
            if not record["cold"]:
                continue  # nothing to generate, so nothing failed
            record["enrichment_error"] = failure
            if source.attempt < settings.generation_retries:
                record["retry_scheduled"] = True
                retries.append((listing, source))

    published: list[dict] = []
    for record, event in zip(records, inputs):
        out = finish_record(record)
        try:
            await send_acked(topics.listings_enriched, key=out["item_id"].encode(), value=orjson.dumps(out))
        except OutputRejected as exc:
            await dead_letter.send_event(event, exc)
            continue
        published.append(record)
        logger.info("published listing item_id=%s event_id=%s cold=%s enriched=%s attempt=%d source=%s",
                    out["item_id"], out["event_id"], out["cold"], out["enriched"], out["enrichment_attempt"],
                    out["record_version"])
    for listing, source in retries:
        await schedule_retry(listing, source, reason=failure, topics=topics, settings=settings)

    similar = await _upsert(published, state=state, settings=settings)
    if similar:
        versions = {record["item_id"]: record["record_version"] for record in published}
        await publish_keyed(topics.similar_items,
                            similar_items_records(similar, model_version=state.recommender.version,
                                                  trigger="listing", record_versions=versions),
                            key_field="item_id")
    logger.info("batch done listings=%d similar_items=%d retries=%d elapsed_s=%.2f", len(published), len(similar),
                len(retries), time.perf_counter() - started)


async def _enrich(listings: list[dict], sources: list[SourceRef], *, state: WorkerState,
                  settings: Settings) -> tuple[list[dict], str | None]:
    """Run the enricher off the event loop; return the records and the failure reason, if any.

    While a timed-out call still occupies the generator thread, new batches skip
    generation at once instead of queueing behind it.
    """
    interactions = [state.interactions.get(listing["item_id"], 0) for listing in listings]
    item_ids = [listing["item_id"] for listing in listings]
    if state.stuck_generation is not None and not state.stuck_generation.done():
        failure = "generator busy with a timed-out call"
    else:
        state.stuck_generation = None
        call = state.generation_executor.submit(state.enricher.enrich_batch, listings, sources,
                                                interactions=interactions)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(call), timeout=settings.generation_timeout_s), None
        except asyncio.TimeoutError:
            state.stuck_generation = call
            failure = f"generation timed out after {settings.generation_timeout_s:g} s"
        except Exception as exc:  # the listings must still be published
            failure = f"{type(exc).__name__}: {exc}"
    logger.error("enrichment failed items=%s attempts=%s reason=%s; publishing listings unenriched",
                 item_ids, [source.attempt for source in sources], failure)
    # The same cold-start decision, with generation off, so nothing runs on the event loop.
    without_generation = dataclasses.replace(state.enricher, generator=None, language_generators={})
    return without_generation.enrich_batch(listings, sources, interactions=interactions), failure


async def schedule_retry(listing: dict, source: SourceRef, *, reason: str, topics: Topics,
                         settings: Settings) -> None:
    """Queue ``listing`` on ``enrichment-retry`` for attempt ``source.attempt + 1``."""
    due_ms = int(time.time() * 1000 + settings.generation_retry_delay_s * 1000)
    request = {
        "listing": listing,
        "source": {"topic": source.topic, "partition": source.partition, "offset": source.offset,
                   "timestamp_ms": source.timestamp_ms},
        "attempt": source.attempt + 1,
        "due_ms": due_ms,
        "reason": reason,
    }
    await send_acked(topics.enrichment_retry, key=listing["item_id"].encode(), value=orjson.dumps(request))
    logger.info("retry scheduled item_id=%s attempt=%d due_ms=%d source=%s", listing["item_id"],
                source.attempt + 1, due_ms, source.record_version)


async def _upsert(records: list[dict], *, state: WorkerState, settings: Settings) -> dict:
    if not records:
        return {}
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(state.recommender_executor, _upsert_items, state, records, settings)
    except Exception as exc:  # the listings are published; the model misses these items
        logger.exception("recommender upsert failed items=%s error=%s",
                         [record["item_id"] for record in records], exc)
        return {}


def item_tokens(record: dict, settings: Settings) -> list:
    """Return the recommender features of an enriched listing: structured tokens, then text tokens.

    Text tokens come from the title, the description and the reviews. Each weighs
    ``settings.text_weight``, times ``settings.synthetic_text_weight`` when the
    text was generated.
    """
    tokens: list = list(item_feature_tokens(record))
    if settings.text_features:
        text_tokens = listing_text_tokens(record, synthetic_weight=settings.synthetic_text_weight,
                                          max_tokens=settings.max_text_tokens)
        tokens.extend((token, weight * settings.text_weight) for token, weight in text_tokens)
    return tokens


def _upsert_items(state: WorkerState, records: list[dict],
                  settings: Settings) -> dict[str, list[tuple[str, float]]]:
    """Upsert the listings into the recommender and return the similar items of each."""
    for record in records:
        state.recommender.upsert_item(record["item_id"], item_tokens(record, settings))
    if settings.similar_items_k == 0:
        return {}
    return state.recommender.similar_items_many((record["item_id"] for record in records),
                                                k=settings.similar_items_k)


def as_listing_dict(listing) -> dict:
    """Return a parsed listing (a slotted ProductCreated or a dict) as a plain dict."""
    if isinstance(listing, dict):
        return listing
    return {name: getattr(listing, name) for name in listing.__slots__}
