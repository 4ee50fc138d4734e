"""Kubernetes manifests: built by the real kustomize, validated strictly and offline.

Built-in kinds are validated by kubernetes-validate (bundled Kubernetes schemas, strict: unknown fields fail).
KEDA's ScaledObject/TriggerAuthentication and the Prometheus Operator's ServiceMonitor are validated against their
published CRD schemas, vendored in crd_schemas/ (see each file's header), made strict the same way. No cluster is
involved: whether KEDA, the operator and the NVIDIA device plugin accept them at run time is for a real cluster.
"""

from __future__ import annotations

import copy
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from streams.kafka import topics
from tests.deploy.checks import ROOT, env_file_keys, unknown_settings

K8S = ROOT / "deploy/k8s"
OVERLAYS = ["cpu", "gpu"]
# The oldest Kubernetes minor the manifests are meant for, and the newest whose schemas the package bundles.
K8S_VERSIONS = ["1.29.0", latest_version()]
CRD_DIR = Path(__file__).parent / "crd_schemas"
# KEDA's Kafka scaler names the SASL mechanisms its own way.
KEDA_SASL = {"SCRAM-SHA-512": "scram_sha512", "SCRAM-SHA-256": "scram_sha256", "PLAIN": "plaintext"}


def build(kustomize: Path, path: Path) -> list[dict]:
    proc = subprocess.run([str(kustomize), "build", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def _strict(schema: dict) -> dict:
    """Reject unknown fields, as the API server's strict field validation does for structural CRD schemas."""
    schema = copy.deepcopy(schema)

    def visit(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


@cache
def crd_validators() -> dict[tuple[str, str], jsonschema.Draft4Validator]:
    validators = {}
    for path in CRD_DIR.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        schema = _strict(doc["openAPIV3Schema"])
        jsonschema.Draft4Validator.check_schema(schema)
        validators[(doc["apiVersion"], doc["kind"])] = jsonschema.Draft4Validator(schema)
    return validators


def validate(resource: dict, version: str) -> None:
    """Raise jsonschema.ValidationError (or kubernetes_validate's) if the resource is not valid for `version`."""
    validator = crd_validators().get((resource["apiVersion"], resource["kind"]))
    if validator is None:
        kubernetes_validate.validate(resource, version, strict=True)
        return
    validator.validate(resource)
    # A CRD schema leaves metadata open; hold it to ObjectMeta like every built-in kind.
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": resource["metadata"]}, version, True
    )


def by_kind(resources: list[dict], kind: str) -> list[dict]:
    return [r for r in resources if r["kind"] == kind]


def one(resources: list[dict], kind: str) -> dict:
    (resource,) = by_kind(resources, kind)
    return resource


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request, kustomize) -> tuple[str, list[dict]]:
    return request.param, build(kustomize, K8S / "overlays" / request.param)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_is_valid(overlay, version):
    _, resources = overlay
    kinds = {r["kind"] for r in resources}
    assert {"Deployment", "Service", "ServiceMonitor", "PodDisruptionBudget", "ScaledObject", "ConfigMap"} <= kinds
    for resource in resources:
        validate(resource, version)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_hpa_alternative_is_valid(version):
    hpa = yaml.safe_load((K8S / "examples/worker-hpa.yaml").read_text())
    validate(hpa, version)
    assert hpa["spec"]["maxReplicas"] == topics.topic_spec(topics.FRAMES).partitions


def test_vendored_crd_schemas_cover_the_custom_kinds(overlay):
    _, resources = overlay
    native = {"v1", "apps/v1", "policy/v1", "batch/v1", "autoscaling/v2"}
    custom = {(r["apiVersion"], r["kind"]) for r in resources if r["apiVersion"] not in native}
    assert custom == set(crd_validators())


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("ScaledObject", ["spec", "maxReplicas"], 6),  # maxReplicaCount misspelt
        ("ScaledObject", ["spec", "minReplicaCount"], "1"),
        ("ServiceMonitor", ["spec", "endpoints", 0, "intervall"], "5s"),
        ("TriggerAuthentication", ["spec", "secretTargetRef", 0, "parameters"], "username"),
        ("ScaledObject", ["metadata", "lables"], {"a": "b"}),
        ("Deployment", ["spec", "template", "spec", "containers", 0, "livenessprobe"], {}),
    ],
)
def test_strict_validation_catches_mistakes(kustomize, kind, path, value):
    resource = copy.deepcopy(one(build(kustomize, K8S / "overlays/cpu"), kind))
    node = resource
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(resource, K8S_VERSIONS[0])


def test_environment_names_only_settings(overlay):
    _, resources = overlay
    settings_map = one(resources, "ConfigMap")
    assert settings_map["metadata"]["name"].startswith("defectstream-settings-")
    assert unknown_settings(settings_map["data"]) == []
    secret_keys = env_file_keys(K8S / "base/kafka-credentials.example.env")
    assert unknown_settings(secret_keys) == []
    for workload in by_kind(resources, "Deployment") + by_kind(resources, "Job"):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            assert unknown_settings(e["name"] for e in container.get("env", [])) == [], container["name"]
            sources = {s.get("configMapRef", s.get("secretRef"))["name"] for s in container["envFrom"]}
            assert sources == {settings_map["metadata"]["name"], "defectstream-kafka-credentials"}
    auth = one(resources, "TriggerAuthentication")
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["name"] == "defectstream-kafka-credentials" and ref["key"] in secret_keys


def test_autoscaling_follows_the_settings_and_the_partitions(overlay):
    _, resources = overlay
    settings = one(resources, "ConfigMap")["data"]
    scaled = one(resources, "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["bootstrapServers"] == settings["KAFKA_BOOTSTRAP_SERVERS"]
    assert meta["consumerGroup"] == settings["DEFECTSTREAM_APP_ID"]
    assert meta["topic"] == f"{settings['DEFECTSTREAM_TOPIC_PREFIX']}.{topics.FRAMES}"
    # A worker beyond the frames topic's partitions would own none.
    assert scaled["spec"]["maxReplicaCount"] == topics.topic_spec(topics.FRAMES).partitions
    assert meta["allowIdleConsumers"] == "false"
    protocol, mechanism = (
        settings["DEFECTSTREAM_KAFKA_SECURITY_PROTOCOL"],
        settings["DEFECTSTREAM_KAFKA_SASL_MECHANISM"],
    )
    assert meta["sasl"] == KEDA_SASL[mechanism]
    assert (meta["tls"] == "enable") == protocol.endswith("SSL")
    deployment = one(resources, "Deployment")
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert trigger["authenticationRef"]["name"] == one(resources, "TriggerAuthentication")["metadata"]["name"]
    # KEDA owns the replica count.
    assert "replicas" not in deployment["spec"]


def test_worker_deployment_is_safe_to_run_and_to_stop(overlay):
    name, resources = overlay
    deployment = one(resources, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (worker,) = pod["containers"]
    settings = one(resources, "ConfigMap")["data"]
    # Longer than one batch plus its delivery: the worker finishes the batch in flight on SIGTERM.
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert (
        worker["securityContext"]["readOnlyRootFilesystem"]
        and not worker["securityContext"]["allowPrivilegeEscalation"]
    )
    (port,) = worker["ports"]
    assert port["containerPort"] == int(settings["DEFECTSTREAM_WEB_PORT"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert worker[probe]["httpGet"] == {"path": "/healthz", "port": port["name"]}, probe
    assert {"cpu", "memory"} <= set(worker["resources"]["requests"]) and {"cpu", "memory"} <= set(
        worker["resources"]["limits"]
    )
    mounts = {m["mountPath"] for m in worker["volumeMounts"]}
    assert settings["DEFECTSTREAM_MODEL_PATH"].startswith("/models/") and "/models" in mounts
    assert "/var/cache/defectstream" in mounts  # Faust's data dir on a read-only root filesystem
    if name == "gpu":
        assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1 == worker["resources"]["requests"]["nvidia.com/gpu"]
        assert settings["DEFECTSTREAM_DEVICE"] == "cuda" and worker["image"].endswith("-cuda")
        assert settings["DEFECTSTREAM_DECODE_THREADS"] == "2"  # one cannot feed a GPU
        assert settings["DEFECTSTREAM_MAX_BATCHES_IN_FLIGHT"] == "8"  # two per stage thread: none waits
        # No surge pod waiting for a GPU that the pod it replaces still holds.
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    else:
        assert "nvidia.com/gpu" not in worker["resources"]["limits"] and worker["image"].endswith("-cpu")


def test_service_monitor_and_pdb_select_the_workers(overlay):
    _, resources = overlay
    pod_labels = one(resources, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = one(resources, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = one(resources, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    # job="worker" as in the compose stack, which the alert rules select on.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "worker"
    pdb = one(resources, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
