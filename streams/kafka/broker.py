"""A real single-node Apache Kafka (KRaft, combined broker+controller) started and stopped by the project.

The jars come from Maven Central through ``deploy/kafka/pom.xml`` (``mvn dependency:copy-dependencies``) into a
cache directory outside git. Every start formats a fresh storage directory, binds 127.0.0.1 on free ports and
records its pid in a state file, so ``stop`` ends exactly the process it started and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from streams.kafka.config import MAX_MESSAGE_BYTES
from streams.settings import Settings

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_DEPLOY_DIR = Path(os.environ.get("DEFECTSTREAM_KAFKA_DEPLOY_DIR", REPO_ROOT / "deploy" / "kafka"))
STATE_FILE = "broker.json"
# The local broker also listens with SASL/SCRAM so that the clients' security settings meet a real server
# (tests/streams/kafka/test_security.py). The user is created at format time; its password is random per start and
# kept only in the run directory's state file.
SCRAM_MECHANISM = "SCRAM-SHA-512"
SCRAM_USER = "defectstream"


class BrokerError(RuntimeError):
    pass


@dataclass
class BrokerState:
    pid: int
    bootstrap: str
    cluster_id: str
    work_dir: str
    log_file: str
    started_at: float
    # SASL_PLAINTEXT listener with SCRAM_MECHANISM for SCRAM_USER (None in state files of older versions).
    sasl_bootstrap: str | None = None
    sasl_password: str | None = field(default=None, repr=False)

    @property
    def config_file(self) -> str:
        return str(Path(self.work_dir) / "server.properties")


def jar_dir(settings: Settings) -> Path:
    return settings.cache_dir / f"kafka-{settings.kafka_version}" / "libs"


def fetch_jars(settings: Settings) -> Path:
    """Resolve the broker jars with Maven once; later calls return the cached directory."""
    libs = jar_dir(settings)
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise BrokerError("Maven (mvn) is needed to fetch the Kafka jars from Maven Central; install it first")
    tmp = libs.with_name(libs.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(KAFKA_DEPLOY_DIR / "pom.xml"),
        f"-Dkafka.version={settings.kafka_version}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
    ]
    log.info("fetching Kafka %s jars: %s", settings.kafka_version, " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BrokerError(f"mvn failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    marker.touch()
    return libs


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        if (port := free_port()) not in ports:
            ports.append(port)
    return ports


def _server_properties(data_dir: Path, port: int, controller_port: int, sasl_port: int) -> str:
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": (
            f"PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port},CONTROLLER://127.0.0.1:{controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
        # SCRAM on the SASL listener only; its user is created by `StorageTool format --add-scram`.
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        f"listener.name.sasl_plaintext.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "log.dirs": str(data_dir),
        # Topics are declared in code (streams.kafka.topics); never let a typo create one.
        "auto.create.topics.enable": "false",
        # Camera frames: every size limit on the broker is raised together.
        "message.max.bytes": str(MAX_MESSAGE_BYTES),
        "replica.fetch.max.bytes": str(MAX_MESSAGE_BYTES),
        "socket.request.max.bytes": str(4 * MAX_MESSAGE_BYTES),
        # Single node: internal topics cannot have more than one replica.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # A fresh local broker serves one test or demo at a time: do not wait 3 s for more group members.
        "group.initial.rebalance.delay.ms": "0",
        "num.partitions": "1",
        "log.retention.hours": "6",
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerError("Java 17+ is needed to run the local Kafka broker")
    return java


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no broker log)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _pid_is_our_broker(state: BrokerState) -> bool:
    """True only if the pid still runs *our* broker (its command line names our server.properties)."""
    try:
        cmdline = Path(f"/proc/{state.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return state.config_file.encode() in cmdline and _pid_alive(state.pid)


def wait_until_ready(bootstrap: str, timeout_s: float, proc: subprocess.Popen | None = None) -> str:
    """Block until an AdminClient metadata call succeeds; return the cluster id."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while (remaining := deadline - time.monotonic()) > 0:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"broker process exited with status {proc.returncode}")
        try:
            md = admin.list_topics(timeout=min(2.0, remaining))
            if md.brokers:
                return md.cluster_id
        except Exception as exc:  # KafkaException while the listener is not up yet
            last_error = exc
        time.sleep(0.2)
    raise BrokerError(f"broker at {bootstrap} not ready after {timeout_s:.0f}s ({last_error})")


class LocalKafka:
    """Start/stop/status of one local broker whose state lives in ``run_dir``."""

    def __init__(self, settings: Settings, run_dir: Path | None = None):
        self.settings = settings
        self.run_dir = Path(run_dir) if run_dir else settings.broker_run_dir
        self.state_path = self.run_dir / STATE_FILE

    def state(self) -> BrokerState | None:
        try:
            return BrokerState(**json.loads(self.state_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def status(self) -> BrokerState | None:
        """The running broker's state, or None. Clears a stale state file left by a dead broker."""
        state = self.state()
        if state is None:
            return None
        if not _pid_is_our_broker(state):
            self._cleanup(state)
            return None
        return state

    def start(self, timeout_s: float = 90.0, heap: str = "768m") -> BrokerState:
        running = self.status()
        if running is not None:
            return running
        libs = fetch_jars(self.settings)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="kafka-", dir=self.run_dir))
        data = work / "data"
        port, controller_port, sasl_port = _distinct_free_ports(3)
        sasl_password = secrets.token_urlsafe(18)
        config_file = work / "server.properties"
        config_file.write_text(_server_properties(data, port, controller_port, sasl_port))
        log_file = work / "broker.log"
        classpath = f"{libs}/*"
        cluster_id = new_cluster_id()
        java = _java()
        fmt = subprocess.run(
            [
                java,
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(config_file),
                "--add-scram",
                f"{SCRAM_MECHANISM}=[name={SCRAM_USER},password={sasl_password}]",
            ],
            capture_output=True,
            text=True,
        )
        if fmt.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise BrokerError(f"formatting KRaft storage failed:\n{fmt.stdout}\n{fmt.stderr}")
        cmd = [
            java,
            f"-Xmx{heap}",
            f"-Xms{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={KAFKA_DEPLOY_DIR / 'log4j2.yaml'}",
            f"-Dkafka.logs.dir={work}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(config_file),
        ]
        with open(log_file, "ab") as out:
            # A new session: Ctrl-C in the terminal that ran `broker start` must not kill a detached broker;
            # foreground users (demo, tests) stop it explicitly in a finally block.
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        state = BrokerState(
            pid=proc.pid,
            bootstrap=f"127.0.0.1:{port}",
            cluster_id=cluster_id,
            work_dir=str(work),
            log_file=str(log_file),
            started_at=time.time(),
            sasl_bootstrap=f"127.0.0.1:{sasl_port}",
            sasl_password=sasl_password,
        )
        self.state_path.write_text(json.dumps(asdict(state)))
        self.state_path.chmod(0o600)  # it holds the SCRAM password
        try:
            ready_id = wait_until_ready(state.bootstrap, timeout_s, proc)
        except BrokerError as exc:
            tail = _log_tail(log_file)
            self._terminate(state, proc)
            self._cleanup(state)
            raise BrokerError(f"{exc}\n--- broker log tail ({log_file}) ---\n{tail}") from None
        except BaseException:  # Ctrl-C while waiting: the detached JVM would outlive us otherwise
            self._terminate(state, proc)
            self._cleanup(state)
            raise
        if ready_id != cluster_id:
            self._terminate(state, proc)
            self._cleanup(state)
            raise BrokerError(f"{state.bootstrap} answered with cluster id {ready_id}, expected {cluster_id}")
        self._proc = proc
        log.info("Kafka %s ready at %s (pid %d)", self.settings.kafka_version, state.bootstrap, proc.pid)
        return state

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker this run dir started. Returns False when none was running."""
        state = self.state()
        if state is None:
            return False
        was_running = _pid_is_our_broker(state)
        if was_running:
            self._terminate(state, getattr(self, "_proc", None), timeout_s)
        self._cleanup(state)
        return was_running

    def _terminate(self, state: BrokerState, proc: subprocess.Popen | None, timeout_s: float = 30.0) -> None:
        if not _pid_is_our_broker(state):
            return
        os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.2)
            else:
                time.sleep(0.2)
            if not _pid_alive(state.pid):
                return
        log.warning("broker pid %d ignored SIGTERM for %.0fs; killing it", state.pid, timeout_s)
        os.kill(state.pid, signal.SIGKILL)
        if proc is not None:
            proc.wait(timeout=10)

    def _cleanup(self, state: BrokerState) -> None:
        shutil.rmtree(state.work_dir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()


def new_cluster_id(draw: Callable[[], uuid.UUID] = uuid.uuid4) -> str:
    """A random cluster id that never starts with '-': the storage tool would read it as an option (1 draw in 64),
    which is also why Kafka's own ``Uuid.randomUuid`` draws again in that case."""
    while (cluster_id := uuid_to_kafka_id(draw())).startswith("-"):
        pass
    return cluster_id


def uuid_to_kafka_id(value: uuid.UUID) -> str:
    """Kafka cluster ids are URL-safe base64 of the 16 UUID bytes without padding."""
    import base64

    return base64.urlsafe_b64encode(value.bytes).decode().rstrip("=")


@dataclass
class Cluster:
    bootstrap: str
    local: BrokerState | None  # None when an external cluster (KAFKA_BOOTSTRAP_SERVERS) is used


@contextlib.contextmanager
def kafka_cluster(settings: Settings, run_dir: Path | None = None) -> Iterator[Cluster]:
    """Use ``settings.kafka_bootstrap_servers`` if set (start nothing); otherwise start a local broker
    for the duration of the block and stop it afterwards, also on errors and Ctrl-C."""
    if settings.kafka_bootstrap_servers:
        yield Cluster(settings.kafka_bootstrap_servers, None)
        return
    broker = LocalKafka(settings, run_dir)
    if broker.status() is not None:
        raise BrokerError(
            f"a local broker from {broker.run_dir} is already running; stop it (`defectstream broker stop`) "
            "or point KAFKA_BOOTSTRAP_SERVERS at it"
        )
    state = broker.start()
    try:
        yield Cluster(state.bootstrap, state)
    finally:
        broker.stop()
