"""Agent for ``product-created``: validate, enrich cold listings, publish every listing."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time

import faust
import orjson

from models.features import item_feature_tokens, listing_text_tokens
from streams.agents.similar import publish_keyed, similar_items_records
from streams.deadletter import DeadLetterPolicy
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
            listings: list[dict] = []
            sources: list[SourceRef] = []
            for event in events:
                message = event.message
                source = SourceRef(topic=message.topic, partition=message.partition, offset=message.offset,
                                   timestamp_ms=int(message.timestamp * 1000))
                try:
                    listing = parse_product_created(event.value, max_bytes=settings.max_event_bytes)
                except Exception as exc:  # InvalidEvent or a parser bug: dead-letter it, go on
                    await dead_letter.send_event(event, exc)
                    continue
                listings.append(_as_dict(listing))
                sources.append(source)
            if listings:
                await _enrich_and_publish(listings, sources, topics=topics, state=state, settings=settings)

    return app.agent(topics.product_created, name="enrich-listings")(enrich_listings)


async def _enrich_and_publish(listings: list[dict], sources: list[SourceRef], *, topics: Topics,
                              state: WorkerState, settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    interactions = [state.interactions.get(listing["item_id"], 0) for listing in listings]
    started = time.perf_counter()
    try:
        records = await asyncio.wait_for(
            loop.run_in_executor(state.generation_executor, functools.partial(
                state.enricher.enrich_batch, listings, sources, interactions=interactions)),
            timeout=settings.generation_timeout_s,
        )
    except (asyncio.TimeoutError, Exception) as exc:  # the listing must still be published
        reason = "generation timed out" if isinstance(exc, asyncio.TimeoutError) else f"{type(exc).__name__}: {exc}"
        logger.error("enrichment failed items=%s reason=%s; publishing listings unenriched",
                     [listing["item_id"] for listing in listings], reason)
        # NOTE: a timed-out generation keeps its executor thread busy until it
        # ends, so the next batch waits behind it.
        records = dataclasses.replace(state.enricher, generator=None).enrich_batch(
            listings, sources, interactions=interactions)
        for record in records:
            record["enrichment_error"] = reason

    for record in records:
        out = finish_record(record)
        fut = await topics.listings_enriched.send(key=out["item_id"].encode(), value=orjson.dumps(out))
        await fut
        logger.info("published listing item_id=%s event_id=%s cold=%s enriched=%s source=%s",
                    out["item_id"], out["event_id"], out["cold"], out["enriched"], out["record_version"])

    try:
        similar = await loop.run_in_executor(state.recommender_executor, _upsert_items, state, records, settings)
    except Exception as exc:  # the listings are published; the model misses these items
        logger.exception("recommender upsert failed items=%s error=%s",
                         [record["item_id"] for record in records], exc)
        similar = {}
    if similar:
        versions = {record["item_id"]: record["record_version"] for record in records}
        await publish_keyed(topics.similar_items,
                            similar_items_records(similar, model_version=state.recommender.version,
                                                  trigger="listing", record_versions=versions),
                            key_field="item_id")
    logger.info("batch done listings=%d similar_items=%d elapsed_s=%.2f", len(records), len(similar),
                time.perf_counter() - started)


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


def _as_dict(listing) -> dict:
    if isinstance(listing, dict):
        return listing
    return {name: getattr(listing, name) for name in listing.__slots__}
