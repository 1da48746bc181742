"""Kubernetes manifests (deploy/kubernetes): the example overlay and the base render with kustomize, every
object validates offline against the schemas of recent Kubernetes releases (kubernetes-validate bundles
them), and every probe path, port, command and environment name they use exists in the app.
"""

import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml

from service.config import Settings
from tests.test_deploy import (
    WORKER_COMMAND,
    app_get_paths,
    dockerfile_args,
    dockerfile_cmd,
    dockerfile_env,
    settings_from_env,
)

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAY = KUBERNETES / "overlays" / "example"
#: The oldest release the manifests are meant for (PreStop sleep hooks, autoscaling/v2) and the newest
#: whose schemas kubernetes-validate carries.
KUBERNETES_VERSIONS = ("1.31.0", kubernetes_validate.utils.latest_version())
KUBECTL = shutil.which("kubectl")

pytestmark = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl not installed: it renders the kustomizations (python-svc machines ship it)"
)

Doc = dict[str, Any]


def render(path: Path) -> list[Doc]:
    """``kubectl kustomize path``: the objects kubectl apply -k would send."""
    assert KUBECTL is not None
    result = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[Doc]:
    return render(OVERLAY)


def one(docs: list[Doc], kind: str, name_prefix: str) -> Doc:
    """The single object of ``kind`` whose name starts with ``name_prefix`` (generated names get a hash)."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name_prefix)]
    assert len(found) == 1, f"{kind} {name_prefix}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(deployment: Doc) -> Doc:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def pod_labels(workload: Doc) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def container_env(docs: list[Doc], spec: Doc) -> dict[str, str]:
    """The environment a container starts with: its ConfigMaps, then its own values and Secret keys."""
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        env.update(one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in spec.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            secret = one(docs, "Secret", ref["name"])
            assert ref["key"] in secret["data"], f"{item['name']}: no key {ref['key']} in {ref['name']}"
            env[item["name"]] = "from-secret"
    return env


def test_overlay_and_base_render_and_validate_against_kubernetes_schemas(rendered: list[Doc]) -> None:
    base = render(KUBERNETES / "base")
    redis = render(KUBERNETES / "redis")
    assert {d["kind"] for d in rendered} == {
        "Namespace", "ConfigMap", "Secret", "Service", "PersistentVolumeClaim", "Deployment", "StatefulSet",
        "PodDisruptionBudget", "HorizontalPodAutoscaler",
    }
    for doc in [*rendered, *base, *redis]:
        for version in KUBERNETES_VERSIONS:
            # strict: an unknown or misspelt field is an error, not silently dropped by the API server.
            kubernetes_validate.validate(doc, version, strict=True)
    assert all(d["metadata"].get("namespace") == "lstm-serve" for d in rendered if d["kind"] != "Namespace")


def test_validation_would_catch_a_misspelt_field(rendered: list[Doc]) -> None:
    """The validator is not vacuous: a probe field with a typo fails it."""
    api = one(rendered, "Deployment", "lstm-serve-api")
    broken = yaml.safe_load(yaml.safe_dump(api))
    container(broken)["readinessProbe"]["httpGett"] = container(broken)["readinessProbe"].pop("httpGet")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_api_probes_ports_and_command_exist_in_the_app(rendered: list[Doc], monkeypatch: pytest.MonkeyPatch) -> None:
    api = one(rendered, "Deployment", "lstm-serve-api")
    spec = container(api)
    assert spec["command"] == dockerfile_cmd()
    settings = settings_from_env({**dockerfile_env(), **container_env(rendered, spec)}, monkeypatch)
    ports = {port["name"]: port["containerPort"] for port in spec["ports"]}
    assert ports["http"] == settings.port and settings.host == "0.0.0.0"
    assert ports["grpc"] == settings.grpc_port
    routes = app_get_paths()
    probes = {kind: spec[kind] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    for kind, probe in probes.items():
        assert probe["httpGet"]["path"] in routes, kind
        assert probe["httpGet"]["port"] in ports, kind


def test_api_shuts_down_gracefully_and_has_resources(rendered: list[Doc]) -> None:
    api = one(rendered, "Deployment", "lstm-serve-api")
    pod = api["spec"]["template"]["spec"]
    spec = container(api)
    pre_stop = spec["lifecycle"]["preStop"]["sleep"]["seconds"]
    # The grace period covers the preStop pause and uvicorn's graceful shutdown (tests/e2e: under 30 s).
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + 30
    assert spec["resources"]["requests"]["cpu"] and spec["resources"]["requests"]["memory"]
    assert spec["resources"]["limits"]["memory"]
    assert api["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_services_pdb_and_hpa_point_at_the_api_pods(rendered: list[Doc]) -> None:
    api = one(rendered, "Deployment", "lstm-serve-api")
    labels = pod_labels(api)
    assert api["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {port["name"] for port in container(api)["ports"]}

    service = one(rendered, "Service", "lstm-serve")
    assert service["spec"]["selector"].items() <= labels.items()
    by_name = {port["name"]: port for port in service["spec"]["ports"]}
    assert set(by_name) == {"http", "grpc"}
    assert by_name["http"]["port"] == 8000 and by_name["grpc"]["port"] == 8001
    for port in by_name.values():
        assert port["targetPort"] in ports

    pdb = one(rendered, "PodDisruptionBudget", "lstm-serve-api")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 1 <= pdb["spec"]["minAvailable"] < api["spec"]["replicas"]

    hpa = one(rendered, "HorizontalPodAutoscaler", "lstm-serve-api")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", api["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert hpa["spec"]["minReplicas"] >= pdb["spec"]["minAvailable"] + 1
    assert container(api)["resources"]["requests"]["cpu"], "CPU utilization needs a CPU request"


def test_worker_runs_the_worker_command_with_the_same_image_settings_and_volume(
    rendered: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    api, worker = one(rendered, "Deployment", "lstm-serve-api"), one(rendered, "Deployment", "lstm-serve-worker")
    api_spec, worker_spec = container(api), container(worker)
    assert worker_spec["command"] == WORKER_COMMAND
    assert worker_spec["image"] == api_spec["image"]
    assert worker_spec["envFrom"] == api_spec["envFrom"]
    assert not pod_labels(worker).items() >= one(rendered, "Service", "lstm-serve")["spec"]["selector"].items(), (
        "workers serve no HTTP: the Service must not select them"
    )
    settings = {
        name: settings_from_env({**dockerfile_env(), **container_env(rendered, spec)}, monkeypatch)
        for name, spec in (("api", api_spec), ("worker", worker_spec))
    }
    assert settings["worker"].job_queue is not None
    assert settings["worker"].job_queue == settings["api"].job_queue
    assert settings["worker"].session_key_prefix == settings["api"].session_key_prefix
    claims = {}
    for name, deployment, spec in (("api", api, api_spec), ("worker", worker, worker_spec)):
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        (mount,) = [m for m in spec["volumeMounts"] if Path(m["mountPath"]) == settings[name].model_dir]
        claims[name] = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
    assert claims["api"] == claims["worker"]
    pvc = one(rendered, "PersistentVolumeClaim", claims["api"])
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "API pods and workers on any node share the models"


def test_every_env_name_is_a_setting_and_every_value_parses(rendered: list[Doc], monkeypatch: pytest.MonkeyPatch) -> None:
    fields = {name.upper() for name in Settings.model_fields}
    for workload in (d for d in rendered if d["kind"] == "Deployment"):
        env = container_env(rendered, container(workload))
        unknown = set(env) - fields
        assert not unknown, f"{workload['metadata']['name']}: names the service never reads: {unknown}"
        settings_from_env({**dockerfile_env(), **env}, monkeypatch)  # raises on a value Settings refuses
    config = one(rendered, "ConfigMap", "lstm-serve-settings")
    assert not set(config["data"]) - fields
    assert "API_KEY" not in config["data"], "the key belongs in the Secret"


def test_settings_name_the_bundled_redis_service(rendered: list[Doc], monkeypatch: pytest.MonkeyPatch) -> None:
    config = one(rendered, "ConfigMap", "lstm-serve-settings")["data"]
    settings = settings_from_env(config, monkeypatch)
    redis_service = one(rendered, "Service", "redis")
    redis_ports = {port["port"] for port in redis_service["spec"]["ports"]}
    for url in (settings.session_store, settings.job_queue):
        parsed = urlparse(url)
        assert parsed.hostname == redis_service["metadata"]["name"] and (parsed.port or 6379) in redis_ports


def test_redis_appends_every_write_to_a_persistent_volume(rendered: list[Doc]) -> None:
    redis = one(rendered, "StatefulSet", "redis")
    spec = container(redis)
    args = spec["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] in ("always", "everysec")
    data_dir = args[args.index("--dir") + 1]
    (template,) = redis["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in spec["volumeMounts"]}
    assert mounts[template["metadata"]["name"]] == data_dir
    service = one(rendered, "Service", "redis")
    assert service["spec"]["selector"].items() <= pod_labels(redis).items()


def test_pods_run_as_the_image_user(rendered: list[Doc]) -> None:
    (user,) = dockerfile_args("USER")
    uid = int(user.split(":")[0])
    for name in ("lstm-serve-api", "lstm-serve-worker"):
        pod = one(rendered, "Deployment", name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid
        assert pod["securityContext"]["fsGroup"] == uid, "the model volume must be writable by that user"
        assert container(one(rendered, "Deployment", name))["securityContext"]["allowPrivilegeEscalation"] is False
