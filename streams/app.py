"""The Faust app of a shopsynth worker: topics, shared state and agents."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from pathlib import Path

import faust

from models.recommender import IncrementalRecommender
from streams import snapshots
from streams.agents.behaviour import register_behaviour_agent
from streams.agents.product import register_product_agent
from streams.agents.retry import register_retry_agent
from streams.cold_start import ColdStartPolicy
from streams.deadletter import DeadLetterPolicy
from streams.enrichment import Enricher, gate_from_settings, near_duplicates_from_settings
from streams.settings import Settings
from streams.state import WorkerState
from streams.topics import declare_topics

logger = logging.getLogger(__name__)


def create_app(settings: Settings) -> tuple[faust.App, WorkerState]:
    """Build the Faust app with both agents registered on it.

    The consumer group is ``<app_id>`` with the topic prefix, so a replay into
    another prefix never shares offsets with the live worker.
    """
    data_dir = _faust_data_dir(settings)
    data_dir.parent.mkdir(parents=True, exist_ok=True)  # Faust creates only the last folder
    app = faust.App(
        f"{settings.topic_prefix}{settings.app_id}",
        broker=[f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",")],
        store="memory://",
        topic_partitions=4,
        # Our topics exist already (run_worker provisions them); Faust declares
        # only its own internal assignor topic.
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=False,
        stream_wait_empty=False,
        broker_credentials=_credentials(settings),
        # Tables live in memory; Faust still creates its data folder, so keep it out of the working directory.
        datadir=str(data_dir),
    )
    state = WorkerState(
        enricher=Enricher(
            generator=_default_generator(settings),
            language_generators=_language_generators(settings),
            policy=ColdStartPolicy(min_description_words=settings.cold_min_description_words,
                                   min_reviews=settings.cold_min_reviews,
                                   min_interactions=settings.cold_min_interactions),
            max_new_tokens=settings.max_new_tokens,
            review_max_new_tokens=settings.review_max_new_tokens,
            review_ratings=settings.synthetic_review_ratings,
            max_regenerations=settings.max_regenerations,
            gate=gate_from_settings(settings),
            near_duplicates=near_duplicates_from_settings(settings),
            seed=settings.generation_seed,
        ),
        recommender=IncrementalRecommender(no_components=settings.no_components,
                                           learning_rate=settings.learning_rate,
                                           random_state=settings.random_state),
        snapshot_dir=_snapshot_dir(settings),
        snapshots_kept=settings.snapshots_kept,
    )
    snapshot = snapshots.restore_latest(state.snapshot_dir)
    if snapshot is not None:
        state.restore(snapshot)
    topics = declare_topics(app, settings)
    dead_letter = DeadLetterPolicy(topic=topics.dead_letter)
    register_product_agent(app, topics=topics, state=state, dead_letter=dead_letter, settings=settings)
    register_behaviour_agent(app, topics=topics, state=state, dead_letter=dead_letter, settings=settings)
    register_retry_agent(app, topics=topics, state=state, dead_letter=dead_letter, settings=settings)

    @app.timer(interval=settings.snapshot_interval_s)
    async def _save_snapshot() -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(state.recommender_executor, state.save_snapshot)
        except Exception as exc:  # the next timer tick retries
            logger.error("periodic snapshot failed dir=%s error=%s: %s", state.snapshot_dir,
                         type(exc).__name__, exc)

    @app.on_before_shutdown.connect
    async def _close_state(app: faust.App, **kwargs) -> None:
        state.close()

    return app, state


def _snapshot_dir(settings: Settings) -> Path:
    if settings.snapshot_dir:
        return Path(settings.snapshot_dir).expanduser()
    return snapshots.default_snapshot_dir(topic_prefix=settings.topic_prefix, app_id=settings.app_id)


def _faust_data_dir(settings: Settings) -> Path:
    """Return ``<cache dir>/faust/<topic_prefix><app_id>``; see ``models.base.resolve_cache_dir``."""
    from models.base import resolve_cache_dir

    name = f"{settings.topic_prefix}{settings.app_id}".replace(os.sep, "_") or "default"
    return resolve_cache_dir() / "faust" / name


def _default_generator(settings: Settings):
    """Return the generator of ``settings.generator_factory``, else the ONNX one of ``generator_dir``."""
    if settings.generator_factory is None:
        return _load_generator(settings.generator_dir, settings=settings)
    module_name, _, name = settings.generator_factory.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), name)
        generator = factory(settings)
    except Exception as exc:  # a broken factory must not stop listings from flowing
        logger.error("generator factory %s failed (%s: %s); cold listings are published without generated "
                     "text and flagged", settings.generator_factory, type(exc).__name__, exc)
        return None
    logger.info("generator created by %s version=%s", settings.generator_factory,
                getattr(generator, "version", None))
    return generator


def _load_generator(generator_dir: str | None, *, settings: Settings, variable: str = "SHOPSYNTH_GENERATOR_DIR"):
    if generator_dir is None:
        logger.warning("no generator configured (%s unset): cold listings are published without "
                       "generated text", variable)
        return None
    from export.runtime import OnnxGenerator

    try:
        generator = OnnxGenerator(Path(generator_dir), intra_op_num_threads=settings.intra_op_num_threads)
    except Exception as exc:  # a broken model must not stop listings from flowing
        logger.error("generator failed to load from %s (%s: %s); cold listings are published "
                     "without generated text and flagged", generator_dir, type(exc).__name__, exc)
        return None
    logger.info("generator loaded version=%s provider=%s dir=%s",
                generator.version, generator.provider, generator_dir)
    return generator


def _language_generators(settings: Settings) -> dict:
    if settings.generator_dir_zh is None:
        return {}
    generator = _load_generator(settings.generator_dir_zh, settings=settings, variable="SHOPSYNTH_GENERATOR_DIR_ZH")
    return {"zh": generator} if generator is not None else {}


def _credentials(settings: Settings):
    security = dict(settings.security)
    protocol = security.get("security_protocol", "PLAINTEXT").upper()
    if protocol == "PLAINTEXT":
        return None
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        import ssl

        return faust.SASLCredentials(
            username=security.get("sasl_plain_username"),
            password=security.get("sasl_plain_password"),
            mechanism=security.get("sasl_mechanism", "PLAIN"),
            ssl_context=ssl.create_default_context() if protocol == "SASL_SSL" else None,
        )
    raise ValueError(f"unsupported security_protocol {protocol!r}; use PLAINTEXT, SASL_PLAINTEXT or SASL_SSL")


def run_worker(settings: Settings) -> None:
    """Provision the topics, then run the worker in this process until SIGTERM or SIGINT."""
    from infra.provision import provision_topics

    asyncio.run(provision_topics(settings.bootstrap_servers, prefix=settings.topic_prefix,
                                 client_options=dict(settings.security) or None))
    app, state = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    exit_code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        exit_code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        raise
    finally:
        stuck = state.stuck_generation
        if stuck is not None and not stuck.done():
            # Python joins executor threads at exit, which would wait for the timed-out call. Faust
            # has stopped by now: it committed the acknowledged offsets and the shutdown hook saved the snapshot.
            logger.warning("a timed-out generation call is still running; exiting without waiting for it")
            logging.shutdown()
            os._exit(exit_code)
