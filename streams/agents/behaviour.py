"""Agent for ``user-behaviour``: micro-batch updates of the recommender, top-K out."""

from __future__ import annotations

import asyncio
import logging
import time

import faust

from models.features import category_tokens
from models.interaction_batch import decay_weights
from streams.agents.similar import publish_keyed, similar_items_records
from streams.deadletter import DeadLetterPolicy
from streams.delivery import withhold_acks
from streams.schemas import DEFAULT_WEIGHTS, parse_user_behaviour
from streams.settings import Settings
from streams.state import WorkerState
from streams.topics import Topics

logger = logging.getLogger(__name__)


def register_behaviour_agent(app: faust.App, *, topics: Topics, state: WorkerState,
                             dead_letter: DeadLetterPolicy, settings: Settings) -> faust.types.AgentT:
    """Register the agent that turns ``user-behaviour`` into ``recommendations``."""

    async def update_recommender(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.behaviour_batch_size,
                                               within=settings.behaviour_batch_timeout_s):
            with withhold_acks(events, agent="update-recommender"):
                batch: list[dict] = []
                inputs: list[faust.types.EventT] = []
                last_source: dict[str, tuple[str, str, int]] = {}
                for event in events:
                    message = event.message
                    try:
                        behaviour = parse_user_behaviour(event.value, max_bytes=settings.max_event_bytes)
                    except Exception as exc:  # InvalidEvent or a parser bug: dead-letter it, go on
                        await dead_letter.send_event(event, exc)
                        continue
                    record = _as_dict(behaviour)
                    batch.append(record)
                    inputs.append(event)
                    _, _, seen = last_source.get(record["user_id"], ("", "", 0))
                    last_source[record["user_id"]] = (f"{message.topic}/{message.partition}/{message.offset}",
                                                      record["event_id"], seen + 1)
                if not batch:
                    continue
                try:
                    await _update_and_publish(batch, last_source, topics=topics, state=state, settings=settings)
                except Exception as exc:  # an error must not leave the agent: Faust would commit past the batch
                    logger.exception("behaviour batch failed events=%d first_event_id=%s error=%s: %s; "
                                     "dead-lettering its inputs", len(batch), batch[0]["event_id"],
                                     type(exc).__name__, exc)
                    await dead_letter.send_batch(inputs, exc)

    return app.agent(topics.user_behaviour, name="update-recommender")(update_recommender)


async def _update_and_publish(batch: list[dict], last_source: dict[str, tuple[str, str, int]], *, topics: Topics,
                              state: WorkerState, settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    try:
        results = await loop.run_in_executor(
            state.recommender_executor, _fit_and_recommend, state, batch, settings)
    except Exception as exc:  # a bad batch must not stop the agent
        logger.exception("recommender update failed events=%d first_event_id=%s error=%s",
                         len(batch), batch[0]["event_id"], exc)
        return

    recommendations, similar = results
    model_version = state.recommender.version
    produced_at_ms = int(time.time() * 1000)
    records = []
    for user_id, items in recommendations.items():
        record_version, last_event_id, based_on_events = last_source[user_id]
        record = {
            "user_id": user_id,
            "items": [{"item_id": item_id, "score": round(float(score), 6)} for item_id, score in items],
            "model_version": model_version,
            "based_on_events": based_on_events,
            "last_event_id": last_event_id,
            "record_version": record_version,
            "produced_at_ms": produced_at_ms,
        }
        records.append(record)
    await publish_keyed(topics.recommendations, records, key_field="user_id")
    await publish_keyed(topics.similar_items,
                        similar_items_records(similar, model_version=model_version, trigger="behaviour",
                                              produced_at_ms=produced_at_ms),
                        key_field="item_id")
    logger.info("recommender batch events=%d users=%d similar_items=%d model_version=%s elapsed_s=%.2f",
                len(batch), len(recommendations), len(similar), model_version, time.perf_counter() - started)


def _fit_and_recommend(state: WorkerState, batch: list[dict], settings: Settings
                       ) -> tuple[dict[str, list[tuple[str, float]]], dict[str, list[tuple[str, float]]]]:
    """Fit on the micro-batch, then rank items for its users and neighbours for its items.

    Event weights decay with age before the newest event time seen so far
    (``settings.event_half_life_s``), so a replayed or late event counts less
    than a fresh one.

    Returns
    -------
    (dict, dict)
        user_id to top-k (item_id, score), and item_id to its most similar items
        (empty when ``settings.similar_items_k`` is 0).
    """
    recommender = state.recommender
    for event in batch:
        if event["item_id"] not in recommender.item_index:
            # An item seen in behaviour before its listing: identity and category only.
            tokens = category_tokens(event["category"]) if event.get("category") else []
            recommender.upsert_item(event["item_id"], tokens)
        state.interactions[event["item_id"]] += 1
    state.watermark_ms = max(state.watermark_ms, max(event["timestamp_ms"] for event in batch))
    weights = decay_weights(
        [float(event.get("weight") or DEFAULT_WEIGHTS[event["event_type"]]) for event in batch],
        [event["timestamp_ms"] for event in batch],
        reference_ms=state.watermark_ms, half_life_s=settings.event_half_life_s)
    interactions = [(event["user_id"], event["item_id"], float(weight))
                    for event, weight in zip(batch, weights.tolist())]
    recommender.fit_partial(interactions, epochs=settings.fit_epochs)

    users = [event["user_id"] for event in batch]
    recommendations = recommender.recommend_many(users, k=settings.recommendations_k,
                                                 exclude_seen=settings.exclude_seen)
    similar = {}
    if settings.similar_items_k > 0:
        similar = recommender.similar_items_many((event["item_id"] for event in batch),
                                                 k=settings.similar_items_k)
    return recommendations, similar


def _as_dict(event) -> dict:
    if isinstance(event, dict):
        return event
    return {name: getattr(event, name) for name in event.__slots__}
