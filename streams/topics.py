"""Faust topic objects for the logical topics of ``infra/topics.toml``."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from streams.settings import Settings

PRODUCT_CREATED = "product-created"
USER_BEHAVIOUR = "user-behaviour"
LISTINGS_ENRICHED = "listings-enriched"
RECOMMENDATIONS = "recommendations"
SIMILAR_ITEMS = "similar-items"
DEAD_LETTER = "dead-letter"
ENRICHMENT_RETRY = "enrichment-retry"


@dataclass(frozen=True)
class Topics:
    product_created: faust.TopicT
    user_behaviour: faust.TopicT
    listings_enriched: faust.TopicT
    recommendations: faust.TopicT
    similar_items: faust.TopicT
    dead_letter: faust.TopicT
    enrichment_retry: faust.TopicT


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    """Declare the topics on ``app`` with raw bytes keys and values.

    Values stay raw so that the agents decode them with orjson themselves and
    can send the original bytes of an invalid event to the dead-letter topic.
    Topics are created by ``infra/provision.py``, not by Faust.
    """

    def topic(name: str) -> faust.TopicT:
        return app.topic(settings.topic(name), key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw",
                         internal=False)

    return Topics(
        product_created=topic(PRODUCT_CREATED),
        user_behaviour=topic(USER_BEHAVIOUR),
        listings_enriched=topic(LISTINGS_ENRICHED),
        recommendations=topic(RECOMMENDATIONS),
        similar_items=topic(SIMILAR_ITEMS),
        dead_letter=topic(DEAD_LETTER),
        enrichment_retry=topic(ENRICHMENT_RETRY),
    )
