"""Agent for ``user-behaviour``: micro-batch updates of the recommender, top-K out."""

from __future__ import annotations

import asyncio
import logging
import time

import faust
import orjson

from models.features import category_tokens
from streams.deadletter import DeadLetterPolicy
from streams.schemas import DEFAULT_WEIGHTS, InvalidEvent, parse_user_behaviour
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
            batch: list[dict] = []
            last_source: dict[str, tuple[str, str, int]] = {}
            for event in events:
                message = event.message
                try:
                    behaviour = parse_user_behaviour(event.value, max_bytes=settings.max_event_bytes)
                except InvalidEvent as exc:
                    await dead_letter.send(raw=event.value, key=event.key, reason=str(exc),
                                           error_type=type(exc).__name__, source_topic=message.topic,
                                           partition=message.partition, offset=message.offset)
                    continue
                record = _as_dict(behaviour)
                batch.append(record)
                _, _, seen = last_source.get(record["user_id"], ("", "", 0))
                last_source[record["user_id"]] = (f"{message.topic}/{message.partition}/{message.offset}",
                                                  record["event_id"], seen + 1)
            if batch:
                await _update_and_publish(batch, last_source, topics=topics, state=state, settings=settings)

    return app.agent(topics.user_behaviour, name="update-recommender")(update_recommender)


async def _update_and_publish(batch: list[dict], last_source: dict[str, tuple[str, str, int]], *, topics: Topics,
                              state: WorkerState, settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    try:
        recommendations = await loop.run_in_executor(
            state.recommender_executor, _fit_and_recommend, state, batch, settings)
    except Exception as exc:  # a bad batch must not stop the agent
        logger.exception("recommender update failed events=%d first_event_id=%s error=%s",
                         len(batch), batch[0]["event_id"], exc)
        return

    model_version = state.recommender.version
    produced_at_ms = int(time.time() * 1000)
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
        fut = await topics.recommendations.send(key=user_id.encode(), value=orjson.dumps(record))
        await fut
    logger.info("recommender batch events=%d users=%d model_version=%s elapsed_s=%.2f",
                len(batch), len(recommendations), model_version, time.perf_counter() - started)


def _fit_and_recommend(state: WorkerState, batch: list[dict],
                       settings: Settings) -> dict[str, list[tuple[str, float]]]:
    """Fit on the micro-batch, then score every item for the users in it."""
    recommender = state.recommender
    interactions = []
    for event in batch:
        if event["item_id"] not in recommender.item_index:
            # An item seen in behaviour before its listing: identity and category only.
            tokens = category_tokens(event["category"]) if event.get("category") else []
            recommender.upsert_item(event["item_id"], tokens)
        weight = event.get("weight") or DEFAULT_WEIGHTS[event["event_type"]]
        interactions.append((event["user_id"], event["item_id"], float(weight)))
        state.interactions[event["item_id"]] += 1
    recommender.fit_partial(interactions, epochs=settings.fit_epochs)

    users = list(dict.fromkeys(event["user_id"] for event in batch))
    return {user: recommender.recommend(user, k=settings.recommendations_k, exclude_seen=settings.exclude_seen)
            for user in users}


def _as_dict(event) -> dict:
    if isinstance(event, dict):
        return event
    return {name: getattr(event, name) for name in event.__slots__}
