"""Every topic the system uses, declared once with its partitions and configs.

``defectstream topics create`` and the test fixtures create them from here; the broker itself never
auto-creates topics, so a typo in a topic name fails loudly instead of silently making a new topic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.kafka.config import MAX_MESSAGE_BYTES, admin_config
from streams.settings import Settings
from streams.worker import stats

log = logging.getLogger(__name__)

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class TopicSpec:
    role: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    purpose: str = ""


FRAMES = "frames"
RESULTS = "inspection-results"
REJECT_COMMANDS = "reject-commands"
LINE_STATS = "line-stats"
LINE_COUNTS = "line-counts"
RETRAINING_SAMPLES = "retraining-samples"
DEAD_LETTERS = "dead-letters"
LINE_HEARTBEATS = "line-heartbeats"

_large = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        FRAMES,
        # Partitions bound the number of workers in one consumer group; 6 leaves room to scale out.
        partitions=6,
        # Frames are large and only useful while the part is on the line: keep them for hours, not days.
        config={**_large, "retention.ms": str(6 * HOUR_MS), "segment.bytes": str(256 * 1024 * 1024)},
        purpose="camera frames: image bytes, metadata in headers",
    ),
    TopicSpec(
        RESULTS,
        partitions=6,
        config={"retention.ms": str(7 * DAY_MS)},
        purpose="one inspection result per frame",
    ),
    TopicSpec(
        REJECT_COMMANDS,
        # Keyed by gate; a few partitions keep each gate's commands ordered on one partition.
        partitions=3,
        config={"retention.ms": str(DAY_MS)},
        purpose="reject commands for reject-gate controllers",
    ),
    TopicSpec(
        LINE_STATS,
        partitions=3,
        config={"retention.ms": str(7 * DAY_MS)},
        purpose="windowed per-line statistics for dashboards",
    ),
    TopicSpec(
        LINE_COUNTS,
        # Keyed by line id and partitioned like the line-stats tables (their changelogs): each worker's line-stats
        # agent adds up the counts of the lines on its partitions. Kept as long as the table changelogs.
        partitions=6,
        config={"retention.ms": str(DAY_MS)},
        purpose="internal: one line's counts per inspected batch, for the line-stats tables",
    ),
    TopicSpec(
        RETRAINING_SAMPLES,
        partitions=3,
        config={**_large, "retention.ms": str(14 * DAY_MS)},
        purpose="low-confidence and audit frames for the next dataset",
    ),
    TopicSpec(
        DEAD_LETTERS,
        # Keyed by line id, like the results.
        partitions=6,
        config={**_large, "retention.ms": str(14 * DAY_MS)},
        purpose="frames that could not be processed, with the reason",
    ),
    TopicSpec(
        LINE_HEARTBEATS,
        # Keyed by gate like the reject commands. Gates read only the newest, so an hour is plenty.
        partitions=3,
        config={"retention.ms": str(HOUR_MS)},
        purpose="how far each line's inspection has got, for the gates' silence alarm",
    ),
)


def topic_spec(role: str) -> TopicSpec:
    for spec in TOPICS:
        if spec.role == role:
            return spec
    raise KeyError(f"no topic declared for role {role!r}")


def changelog_topics(settings: Settings) -> list[tuple[str, TopicSpec]]:
    """The changelog topics of the worker's line-stats tables (Faust names them ``<app id>-<table>-changelog``).

    Declared here because workers never create topics; partitions match the line-counts topic the tables read."""
    spec = TopicSpec(
        "changelog",
        partitions=topic_spec(LINE_COUNTS).partitions,
        # Windowed state: compacted per key, and old windows deleted after a day.
        config={"cleanup.policy": "compact,delete", "retention.ms": str(DAY_MS)},
        purpose="line-stats table changelog",
    )
    return [
        (f"{settings.app_id}-{stats.table_name(w)}-changelog", spec)
        for w in stats.parse_windows(settings.stats_windows_s)
    ]


def declared_topics(settings: Settings) -> list[tuple[str, TopicSpec]]:
    """Every topic this deployment needs, by full name: the roles under the prefix, then the table changelogs."""
    return [(settings.topic(spec.role), spec) for spec in TOPICS] + changelog_topics(settings)


def create_topics(settings: Settings, timeout_s: float = 30.0) -> dict[str, str]:
    """Create every declared topic that does not exist yet. Returns ``{topic: "created" | "exists"}``."""
    admin = AdminClient(admin_config(settings))
    existing = admin.list_topics(timeout=timeout_s).topics
    outcome: dict[str, str] = {}
    wanted = []
    for name, spec in declared_topics(settings):
        if name in existing:
            outcome[name] = "exists"
            have = len(existing[name].partitions)
            if have != spec.partitions:
                log.warning("topic %s has %d partitions, declared %d", name, have, spec.partitions)
        else:
            wanted.append(NewTopic(name, num_partitions=spec.partitions, replication_factor=-1, config=spec.config))
    if wanted:
        futures = admin.create_topics(wanted, operation_timeout=timeout_s, request_timeout=timeout_s)
        for name, future in futures.items():
            try:
                future.result()
                outcome[name] = "created"
            except KafkaException as exc:
                if exc.args[0].name() == "TOPIC_ALREADY_EXISTS":  # created concurrently by another process
                    outcome[name] = "exists"
                else:
                    raise
    return outcome


def topic_problems(settings: Settings, timeout_s: float = 10.0) -> list[str]:
    """What in the cluster's topics keeps a worker with these settings from working, each with its remedy: declared
    topics that do not exist, and table changelogs whose partitions differ from the line-counts topic's (over either,
    Faust stops the line-stats agent and the worker would go on inspecting without line stats). A topic the cluster
    lists with an error (say, no leader yet) is not judged. Raises KafkaException when the cluster does not answer
    within ``timeout_s``."""
    admin = AdminClient(admin_config(settings))
    existing = admin.list_topics(timeout=timeout_s).topics
    problems = [
        f"topic {name} does not exist (or this client may not describe it): `defectstream topics create` with the "
        "worker's settings creates it"
        for name, _spec in declared_topics(settings)
        if name not in existing
    ]
    source = existing.get(settings.topic(LINE_COUNTS))
    if source is None or source.error is not None:
        return problems
    for name, _spec in changelog_topics(settings):
        changelog = existing.get(name)
        if changelog is None or changelog.error is not None or len(changelog.partitions) == len(source.partitions):
            continue
        problems.append(
            f"topic {name} has {len(changelog.partitions)} partitions, its table's source {source.topic} "
            f"{len(source.partitions)}, and Faust needs them equal: delete the changelog (the table's windows, "
            "rebuilt from new counts) and run `defectstream topics create`, which leaves existing topics alone"
        )
    return problems
