"""Create the Kafka topics declared in ``infra/topics.toml``.

Provisioning creates the topics that are missing, with their partition count,
replication factor and configs, and leaves existing topics unchanged. An
existing topic with another partition count or ``cleanup.policy`` raises
:class:`TopicMismatchError`, because the stream processor relies on both
(keys map to partitions, and output topics must be compacted).

Command line::

    python -m infra.provision --bootstrap-servers 127.0.0.1:9092 [--prefix t-1234.]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError, for_code

logger = logging.getLogger(__name__)

DEFAULT_SPEC_PATH = Path(__file__).with_name("topics.toml")

# Kafka's rule for topic names (org.apache.kafka.common.internals.Topic).
_TOPIC_NAME_PATTERN = re.compile(r"[a-zA-Z0-9._-]+")
_MAX_TOPIC_NAME_LENGTH = 249
_ROLES = ("input", "output", "internal")
_FIELDS = ("name", "role", "key", "value", "purpose", "partitions", "replication_factor", "configs")


class TopicProvisionError(RuntimeError):
    """Creating or inspecting a topic failed on the broker."""


class TopicMismatchError(TopicProvisionError):
    """An existing topic differs from its declaration in partitions or cleanup.policy."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic declaration of ``topics.toml``, where ``name`` is the logical name."""

    name: str
    role: str
    key: str
    value: str
    purpose: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]


@dataclass(frozen=True)
class ProvisionReport:
    """Outcome of one provisioning run.

    ``topics`` maps each logical name to its real name (prefix + name), and
    ``created`` and ``existing`` list real names.
    """

    topics: dict[str, str]
    created: list[str]
    existing: list[str]


def _check_topic_name(name: str, *, source: str) -> None:
    if not name or len(name) > _MAX_TOPIC_NAME_LENGTH or not _TOPIC_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"invalid topic name {name!r} ({source}): Kafka topic names are 1 to "
            f"{_MAX_TOPIC_NAME_LENGTH} characters from a-z, A-Z, 0-9, '.', '_' and '-'"
        )


def _parse_topic(entry: Any, *, index: int, spec_path: Path) -> TopicSpec:
    where = f"[[topic]] number {index + 1} in {spec_path}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is not a table")
    missing = [field for field in _FIELDS if field not in entry]
    if missing:
        raise ValueError(f"{where} is missing the field(s) {', '.join(missing)}")
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {', '.join(unknown)}; "
                         f"expected only {', '.join(_FIELDS)}")

    for field in ("name", "role", "key", "value", "purpose"):
        if not isinstance(entry[field], str) or not entry[field].strip():
            raise ValueError(f"{where}: {field} must be a non-empty string, got {entry[field]!r}")
    _check_topic_name(entry["name"], source=where)
    if entry["role"] not in _ROLES:
        raise ValueError(f"{where}: invalid role {entry['role']!r}, expected one of {_ROLES}")
    for field in ("partitions", "replication_factor"):
        count = entry[field]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"{where}: {field} must be a positive integer, got {count!r}")

    configs = entry["configs"]
    if not isinstance(configs, dict):
        raise ValueError(f"{where}: configs must be a table, got {configs!r}")
    for config_name, config_value in configs.items():
        if not isinstance(config_value, str):
            raise ValueError(f"{where}: config {config_name} = {config_value!r} must be a "
                             f"string, as Kafka receives it; quote the value")

    return TopicSpec(
        name=entry["name"],
        role=entry["role"],
        key=entry["key"],
        value=entry["value"],
        purpose=entry["purpose"],
        partitions=entry["partitions"],
        replication_factor=entry["replication_factor"],
        configs=dict(configs),
    )


def load_topic_specs(spec_path: Path | None = None) -> list[TopicSpec]:
    """Read and validate the topic declarations.

    Parameters
    ----------
    spec_path : Path or None
        TOML file with a ``[[topic]]`` array; None reads ``infra/topics.toml``.

    Returns
    -------
    list of TopicSpec
        In file order.

    Raises
    ------
    FileNotFoundError
        If ``spec_path`` does not exist.
    ValueError
        If the file is not valid TOML or a declaration is incomplete or invalid.
    """
    path = Path(spec_path) if spec_path is not None else DEFAULT_SPEC_PATH
    try:
        with path.open("rb") as spec_file:
            document = tomllib.load(spec_file)
    except FileNotFoundError:
        raise FileNotFoundError(f"topic spec {path} not found; pass the path of a topics.toml") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"invalid TOML in topic spec {path}: {error}") from error

    entries = document.get("topic")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"topic spec {path} declares no topics: expected a [[topic]] array")
    specs = [_parse_topic(entry, index=index, spec_path=path) for index, entry in enumerate(entries)]

    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"topic spec {path} declares {', '.join(duplicates)} more than once")
    return specs


def _real_names(specs: list[TopicSpec], prefix: str) -> dict[str, str]:
    names = {spec.name: prefix + spec.name for spec in specs}
    for real_name in names.values():
        _check_topic_name(real_name, source=f"prefix {prefix!r}")
    return names


def topic_names(prefix: str = "", *, spec_path: Path | None = None) -> dict[str, str]:
    """Map each logical topic name to its real name, ``prefix + name``.

    Parameters
    ----------
    prefix : str
        Prepended to every topic name, for example ``"t-1a2b3c4d."`` to keep
        one test's records apart from another's.
    spec_path : Path or None
        Topic declarations; None reads ``infra/topics.toml``.

    Raises
    ------
    ValueError
        If a prefixed name is not a valid Kafka topic name.
    """
    return _real_names(load_topic_specs(spec_path), prefix)


def _describe_error(error_code: int | None, message: str | None = None) -> str:
    if error_code is None:
        return "topic missing from the metadata response"
    text = f"error {error_code} ({for_code(error_code).__name__})"
    return f"{text}: {message}" if message else text


def _cleanup_policy(value: str | None) -> frozenset[str]:
    # "compact,delete" and "delete,compact" are the same policy.
    if value is None:
        return frozenset({"delete"})
    return frozenset(part.strip() for part in value.split(",") if part.strip())


async def _create_missing(admin: AIOKafkaAdminClient, missing: list[tuple[TopicSpec, str]], *,
                          timeout_ms: int) -> tuple[list[str], list[str]]:
    """Create topics and return the real names (created, already existing)."""
    new_topics = [
        NewTopic(real_name, spec.partitions, spec.replication_factor, topic_configs=spec.configs)
        for spec, real_name in missing
    ]
    response = await admin.create_topics(new_topics, timeout_ms=timeout_ms)
    created, raced, failures = [], [], []
    for topic_error in response.to_object()["topic_errors"]:
        real_name, error_code = topic_error["topic"], topic_error["error_code"]
        if error_code == 0:
            created.append(real_name)
        elif error_code == TopicAlreadyExistsError.errno:
            # Another client created it between list_topics and create_topics.
            logger.info("topic %s was created concurrently by another client", real_name)
            raced.append(real_name)
        else:
            failures.append(f"{real_name}: {_describe_error(error_code, topic_error['error_message'])}")
    if failures:
        for failure in failures:
            logger.error("creating topic failed: %s", failure)
        raise TopicProvisionError("creating Kafka topics failed: " + "; ".join(failures))
    return created, raced


async def _wait_for_metadata(admin: AIOKafkaAdminClient, real_names: list[str], *, timeout_s: float) -> None:
    """Wait until the broker's metadata lists each topic with a leader for every partition.

    A topic reaches the broker's metadata shortly after CreateTopics returns.
    Until then, describe requests for it fail and clients cannot use it.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pending = set(real_names)
    while True:
        # None lists all topics: a request that names a topic missing from
        # the metadata makes a broker with auto.create.topics.enable=true create it.
        for entry in await admin.describe_topics(None):
            partitions = entry["partitions"]
            if (entry["topic"] in pending and entry["error_code"] == 0 and partitions
                    and all(partition["leader"] >= 0 for partition in partitions)):
                pending.discard(entry["topic"])
        if not pending:
            return
        if loop.time() >= deadline:
            raise TopicProvisionError(f"timed out after {timeout_s} s waiting for the broker metadata "
                                      f"to list the topics {', '.join(sorted(pending))}")
        await asyncio.sleep(0.1)


async def _check_existing(admin: AIOKafkaAdminClient, existing: list[tuple[TopicSpec, str]]) -> None:
    """Compare existing topics with their declarations and raise on a partition or cleanup.policy mismatch."""
    real_names = [real_name for _, real_name in existing]
    # Describe only topics known to exist: a metadata request for a missing
    # topic makes a broker with auto.create.topics.enable=true create it.
    descriptions = {entry["topic"]: entry for entry in await admin.describe_topics(real_names)}
    resources = [ConfigResource(ConfigResourceType.TOPIC, real_name) for real_name in real_names]
    configs_by_topic: dict[str, dict[str, str | None]] = {}
    for response in await admin.describe_configs(resources):
        for resource in response.to_object()["resources"]:
            if resource["error_code"] != 0:
                error_text = _describe_error(resource["error_code"], resource["error_message"])
                raise TopicProvisionError(
                    f"describing the configs of topic {resource['resource_name']} failed: {error_text}")
            configs_by_topic[resource["resource_name"]] = {
                entry["config_names"]: entry["config_value"] for entry in resource["config_entries"]
            }

    mismatches = []
    for spec, real_name in existing:
        description = descriptions.get(real_name)
        if description is None or description["error_code"] != 0:
            error_code = None if description is None else description["error_code"]
            raise TopicProvisionError(f"describing topic {real_name} failed: {_describe_error(error_code)}")

        partition_count = len(description["partitions"])
        if partition_count != spec.partitions:
            mismatches.append(f"topic {real_name} has {partition_count} partitions, "
                              f"but {spec.partitions} are declared")
        replication_factor = len(description["partitions"][0]["replicas"]) if partition_count else 0
        if replication_factor != spec.replication_factor:
            logger.warning("topic %s has replication factor %d, but %d is declared",
                           real_name, replication_factor, spec.replication_factor)

        actual_configs = configs_by_topic.get(real_name, {})
        actual_policy = actual_configs.get("cleanup.policy")
        declared_policy = spec.configs.get("cleanup.policy")
        if _cleanup_policy(actual_policy) != _cleanup_policy(declared_policy):
            mismatches.append(f"topic {real_name} has cleanup.policy={actual_policy}, "
                              f"but {declared_policy or 'delete'} is declared")
        for config_name, declared_value in spec.configs.items():
            if config_name == "cleanup.policy":
                continue
            if actual_configs.get(config_name) != declared_value:
                logger.warning("topic %s has %s=%s, but %s is declared; provisioning leaves it unchanged",
                               real_name, config_name, actual_configs.get(config_name), declared_value)

    if mismatches:
        for mismatch in mismatches:
            logger.error("existing topic differs from its declaration: %s", mismatch)
        raise TopicMismatchError(
            "existing Kafka topics differ from their declarations: " + "; ".join(mismatches)
            + ". Provisioning never changes existing topics: delete them (on the development "
            "broker, infra/kafka.sh reset deletes all data), alter them with Kafka's admin "
            "tools, or provision under another prefix."
        )


async def provision(bootstrap_servers: str, *, prefix: str = "", spec_path: Path | None = None,
                    request_timeout_s: float = 30.0,
                    client_options: Mapping[str, Any] | None = None) -> ProvisionReport:
    """Create the missing declared topics and check the existing ones.

    Parameters
    ----------
    bootstrap_servers : str
        Comma-separated ``host:port`` list, e.g. ``"127.0.0.1:9092"``.
    prefix : str
        Prepended to every topic name.
    spec_path : Path or None
        Topic declarations; None reads ``infra/topics.toml``.
    request_timeout_s : float
        Timeout of each admin request, of topic creation on the broker, and
        of the wait until new topics appear in the broker's metadata.
    client_options : Mapping or None
        Extra keyword arguments for ``aiokafka.admin.AIOKafkaAdminClient``,
        such as ``security_protocol`` and the SASL settings.

    Returns
    -------
    ProvisionReport
        Real topic names, and which of them this call created. Every topic
        is in the broker's metadata with a leader for each partition.

    Raises
    ------
    ConnectionError
        If no broker accepts a connection at ``bootstrap_servers``.
    TopicMismatchError
        If an existing topic has another partition count or cleanup.policy.
    TopicProvisionError
        If the broker rejects a topic creation or a describe request, or new
        topics do not appear in its metadata within ``request_timeout_s``.
    """
    if request_timeout_s <= 0:
        raise ValueError(f"request_timeout_s must be positive, got {request_timeout_s}")
    specs = load_topic_specs(spec_path)
    names = _real_names(specs, prefix)
    timeout_ms = int(request_timeout_s * 1000)

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="shopsynth-provision",
                                request_timeout_ms=timeout_ms, **dict(client_options or {}))
    try:
        try:
            await admin.start()
        except KafkaConnectionError as error:
            raise ConnectionError(
                f"cannot reach Kafka at {bootstrap_servers}: {error}. Start the development "
                f"broker with infra/kafka.sh start, or pass the right bootstrap servers"
            ) from error

        present = set(await admin.list_topics())
        missing = [(spec, names[spec.name]) for spec in specs if names[spec.name] not in present]
        existing = [(spec, names[spec.name]) for spec in specs if names[spec.name] in present]

        # Check before creating, so that a mismatch leaves the cluster unchanged.
        if existing:
            await _check_existing(admin, existing)
        created: list[str] = []
        if missing:
            created, raced = await _create_missing(admin, missing, timeout_ms=timeout_ms)
            await _wait_for_metadata(admin, [real_name for _, real_name in missing],
                                     timeout_s=request_timeout_s)
            raced_topics = [(spec, real_name) for spec, real_name in missing if real_name in raced]
            if raced_topics:
                await _check_existing(admin, raced_topics)
            existing += raced_topics
        for spec, real_name in missing:
            if real_name in created:
                logger.info("created topic %s (partitions=%d, replication_factor=%d, configs=%s)",
                            real_name, spec.partitions, spec.replication_factor, spec.configs)
    finally:
        await admin.close()

    existing_names = [real_name for _, real_name in existing]
    logger.info("provisioned %d topics on %s: %d created, %d already present",
                len(names), bootstrap_servers, len(created), len(existing_names))
    return ProvisionReport(topics=names, created=created, existing=existing_names)


async def provision_topics(bootstrap_servers: str, *, prefix: str = "", spec_path: Path | None = None,
                           request_timeout_s: float = 30.0,
                           client_options: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Create the missing declared topics and return logical name -> real name.

    Same parameters and errors as :func:`provision`, which also reports which
    topics it created.
    """
    report = await provision(bootstrap_servers, prefix=prefix, spec_path=spec_path,
                             request_timeout_s=request_timeout_s, client_options=client_options)
    return report.topics


def _default_bootstrap_servers() -> str:
    if os.environ.get("SHOPSYNTH_BOOTSTRAP_SERVERS"):
        return os.environ["SHOPSYNTH_BOOTSTRAP_SERVERS"]
    return f"127.0.0.1:{os.environ.get('SHOPSYNTH_KAFKA_PORT', '9092')}"


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m infra.provision",
        description="Create the Kafka topics declared in infra/topics.toml that do not exist yet.",
    )
    parser.add_argument("--bootstrap-servers", default=_default_bootstrap_servers(),
                        help="comma-separated host:port list (default: $SHOPSYNTH_BOOTSTRAP_SERVERS, "
                             "else 127.0.0.1:$SHOPSYNTH_KAFKA_PORT, else 127.0.0.1:9092)")
    parser.add_argument("--prefix", default="", help="prepended to every topic name (default: none)")
    parser.add_argument("--spec", type=Path, default=None,
                        help="topic declarations in TOML (default: infra/topics.toml)")
    parser.add_argument("--timeout-s", type=float, default=30.0,
                        help="timeout of each admin request in seconds (default: 30)")
    parser.add_argument("--log-level", default="WARNING", help="Python log level (default: WARNING)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        report = asyncio.run(provision(args.bootstrap_servers, prefix=args.prefix, spec_path=args.spec,
                                       request_timeout_s=args.timeout_s))
    except (ConnectionError, TopicProvisionError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    for real_name in report.topics.values():
        status = "created" if real_name in report.created else "exists"
        print(f"{status:8} {real_name}")
    print(f"{len(report.created)} of {len(report.topics)} topics created on {args.bootstrap_servers}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
