"""Kubernetes and KServe manifests: rendered by `make k8s` / `make kserve-store` from the same config files the
native and Docker paths use, validated against the Kubernetes schemas (kubernetes-validate) and KServe's
API (the field tables of its published Python SDK), and the probe run against a real TorchServe.
"""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from harness.launcher import REPO, read_properties
from tools.server_config import properties

K8S_VERSION = "1.32.0"
ENVS = ("dev", "prod")


def make(*targets: str, **variables: str) -> subprocess.CompletedProcess:
    result = subprocess.run(["make", "--no-print-directory", *targets, *(f"{k}={v}" for k, v in variables.items())],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    """Every environment's documents, as `make k8s` renders them."""
    make("k8s")
    return {env: [d for d in yaml.safe_load_all((REPO / "deploy" / "rendered" / f"{env}.yaml").read_text()) if d]
            for env in ENVS}


def one(docs: list[dict], kind: str) -> dict:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def config_of(docs: list[dict]) -> dict[str, str]:
    text = one(docs, "ConfigMap")["data"]["config.properties"]
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


@pytest.mark.parametrize("env", ENVS)
def test_every_rendered_manifest_validates_against_the_kubernetes_schemas(rendered, env):
    kinds = sorted(d["kind"] for d in rendered[env])
    assert kinds == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "NetworkPolicy", "Service"]
    for doc in rendered[env]:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on any unknown or wrong field


def test_a_wrong_field_is_caught_by_the_validation(rendered):
    """The check above can fail."""
    broken = yaml.safe_load(yaml.safe_dump(one(rendered["dev"], "Deployment")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["commands"] = ["x"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize("env, token_off", [("dev", "true"), ("prod", "false")])
def test_the_configmap_is_the_container_config_with_management_on_the_pods_loopback(rendered, env, token_off):
    docker = properties("container")
    config = config_of(rendered[env])
    changed = {k: (docker.get(k), v) for k, v in config.items() if docker.get(k) != v}
    expected = {"management_address": ("http://0.0.0.0:8081", "http://127.0.0.1:8081")}
    if token_off == "false":
        expected["disable_token_authorization"] = ("true", "false")
    assert changed == expected and config.keys() == docker.keys()


@pytest.mark.parametrize("env", ENVS)
def test_the_management_api_never_leaves_the_pod(rendered, env):
    container = one(rendered[env], "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert sorted(p["containerPort"] for p in container["ports"]) == [8080, 8082]
    assert [p["targetPort"] for p in one(rendered[env], "Service")["spec"]["ports"]] == ["inference"]
    allowed = one(rendered[env], "NetworkPolicy")["spec"]["ingress"][0]["ports"]
    assert sorted(p["port"] for p in allowed) == [8080, 8082]


@pytest.mark.parametrize("env", ENVS)
def test_the_pod_is_probed_unprivileged_scraped_and_sized(rendered, env):
    deployment = one(rendered[env], "Deployment")
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["exec"]["command"] == ["python", "/etc/torchserve/probe.py"]
    assert container["livenessProbe"]["exec"]["command"] == ["python", "/etc/torchserve/probe.py"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"]
    assert not container["securityContext"]["allowPrivilegeEscalation"]
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8082"
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys() <= container["resources"]["limits"].keys() | {
        "nvidia.com/gpu"}
    gpus = container["resources"]["limits"].get("nvidia.com/gpu", 0)
    assert (env, gpus, deployment["spec"]["replicas"]) in (("dev", 0, 1), ("prod", 1, 3))
    images = {"dev": "seq2seq-torchserve:1.0", "prod": "registry.example.com/seq2seq-torchserve:1.0"}
    assert container["image"] == images[env]


def test_the_hpa_scales_on_queue_latency_with_a_cpu_fallback(rendered):
    prod, dev = (one(rendered[e], "HorizontalPodAutoscaler") for e in ("prod", "dev"))
    assert prod["apiVersion"] == "autoscaling/v2"
    assert prod["spec"]["metrics"][0]["pods"]["metric"]["name"] == "ts_queue_latency_seconds_per_second"
    assert dev["spec"]["metrics"][0]["resource"]["name"] == "cpu"


@pytest.mark.parametrize("token_auth", [False, True])
def test_the_probe_is_healthy_against_a_real_server_in_both_token_modes(torchserve_factory, token_auth):
    server = torchserve_factory(token_auth=token_auth)
    probe = [sys.executable, str(REPO / "deploy" / "base" / "probe.py"), server.url("inference", "/ping"),
             str(server.workdir / "key_file.json")]
    assert subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    if token_auth:  # the key is what makes it pass: without one, token mode refuses /ping
        assert subprocess.run(probe[:-1] + ["/nonexistent.json"], capture_output=True, timeout=30).returncode == 1


# ---------------------------------------------------------------- KServe


def kserve_fields(module: str, class_name: str) -> tuple[dict, dict]:
    """(openapi_types, attribute_map) of a model of KServe's SDK, read from its source without importing it."""
    spec = importlib.util.find_spec("kserve")
    if spec is None:
        pytest.fail("the kserve SDK is not installed: pip install --no-deps kserve==0.21.0 (make install does)")
    root = Path(next(iter(spec.submodule_search_locations)))
    path = next(p for p in (root / "models" / f"{module}.py", root / f"{module}.py") if p.exists())
    tree = ast.parse(path.read_text())
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if isinstance(item, ast.Assign) and item.targets[0].id in ("openapi_types", "attribute_map"):
                    found[item.targets[0].id] = ast.literal_eval(item.value)
    return found["openapi_types"], found["attribute_map"]


def check_kserve(value, type_name: str, where: str) -> None:
    """Every key of `value` must be a field of KServe's `type_name` (recursing into KServe's own types)."""
    if type_name.startswith("list[") and isinstance(value, list):
        for i, item in enumerate(value):
            check_kserve(item, type_name[5:-1], f"{where}[{i}]")
        return
    if not (type_name.startswith("V1beta1") or type_name.startswith("V1alpha1")) or not isinstance(value, dict):
        return  # a Kubernetes core type (kubernetes-validate's job) or a scalar
    module = "v1beta1_" if type_name.startswith("V1beta1") else "v1alpha1_"
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in type_name[len(module) - 1:]).lstrip("_")
    types, names = kserve_fields(module + snake, type_name)
    by_json = {json: python for python, json in names.items()}
    for key, item in value.items():
        assert key in by_json, f"{where}.{key} is not a field of KServe's {type_name}"
        check_kserve(item, types[by_json[key]], f"{where}.{key}")


@pytest.mark.parametrize("file, type_name", [("inferenceservice.yaml", "V1beta1InferenceService"),
                                              ("servingruntime.yaml", "V1alpha1ServingRuntime"),
                                              ("torchserve-runtime.yaml", "V1alpha1ServingRuntime")])
def test_the_kserve_manifests_use_only_kserves_fields(file, type_name):
    doc = yaml.safe_load((REPO / "deploy" / "kserve" / file).read_text())
    check_kserve(doc, type_name, doc["kind"])
    with pytest.raises(AssertionError, match="not a field"):  # the check can fail
        check_kserve({**doc, "spec": {**doc["spec"], "predictorr": {}}}, type_name, doc["kind"])


def test_the_inference_service_runs_the_archive_on_our_kserve_runtime_scraped_by_prometheus():
    folder = REPO / "deploy" / "kserve"
    service, runtime, legacy = (yaml.safe_load((folder / f).read_text()) for f in
                                ("inferenceservice.yaml", "servingruntime.yaml", "torchserve-runtime.yaml"))
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"] == "seq2seq-kserve"
    assert model["modelFormat"]["name"] in [f["name"] for f in runtime["spec"]["supportedModelFormats"]]
    assert model["modelFormat"]["name"] == "seq2seq-chatbot" and model["protocolVersion"] in \
        runtime["spec"]["protocolVersions"]
    container = runtime["spec"]["containers"][0]
    assert container["image"] == "seq2seq-kserve:1.0" and "--mar" in container["args"]
    port = str(container["ports"][0]["containerPort"])
    assert runtime["spec"]["annotations"] == {"prometheus.kserve.io/port": port,
                                              "prometheus.kserve.io/path": "/metrics"}
    assert service["metadata"]["annotations"]["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert container["securityContext"]["runAsNonRoot"] and not container["securityContext"]["allowPrivilegeEscalation"]
    assert legacy["spec"]["containers"][0]["image"] == "pytorch/torchserve-kfs:0.12.0"  # the legacy one, pinned


def test_make_kserve_store_lays_out_config_and_model_store_from_the_archive(seq2seq_mar, tmp_path):
    make("kserve-store", MAR=str(seq2seq_mar), KSERVE_STORE=str(tmp_path / "store"))
    assert (tmp_path / "store" / "model-store" / "seq2seq.mar").read_bytes() == seq2seq_mar.read_bytes()
    config = read_properties(tmp_path / "store" / "config" / "config.properties")
    assert config["model_store"] == "/mnt/models/model-store" and config["service_envelope"] == "kserve"
    assert config["inference_address"] == config["management_address"] == "http://127.0.0.1:8085"
    assert "load_models" not in config and '"batchSize":1' in config["model_snapshot"]
    docker = properties("container")
    assert {k: config[k] for k in ("enable_model_api", "max_request_size", "disable_token_authorization")} == \
        {k: docker[k] for k in ("enable_model_api", "max_request_size", "disable_token_authorization")}


def test_the_servers_preload_tcmalloc_where_installed_and_malloc_chooses_otherwise(tmp_path, monkeypatch):
    """tools/server_config.py's malloc_library: the one decision `make serve`, `make serve-kserve` and the harness
    take (LD_PRELOAD); tcmalloc where its library is, $MALLOC when set, nothing (glibc's malloc) else."""
    from tools import server_config

    monkeypatch.delenv("MALLOC", raising=False)
    monkeypatch.setattr(server_config, "LIBRARY_DIRS", (str(tmp_path / "none"), str(tmp_path)))
    assert server_config.malloc_library() == ""
    (tmp_path / server_config.TCMALLOC).write_bytes(b"")
    assert server_config.malloc_library() == str(tmp_path / server_config.TCMALLOC)
    assert server_config.preload_env({"LD_PRELOAD": "/old.so", "A": "1"}) == \
        {"A": "1", "LD_PRELOAD": str(tmp_path / server_config.TCMALLOC)}
    assert server_config.preload_env({"LD_PRELOAD": "/old.so", "A": "1"}, malloc=False) == {"A": "1"}
    monkeypatch.setenv("MALLOC", "")
    assert server_config.malloc_library() == "" and server_config.preload_env({"A": "1"}) == {"A": "1"}
    monkeypatch.setenv("MALLOC", "/opt/libjemalloc.so.2")
    assert server_config.malloc_library() == "/opt/libjemalloc.so.2"
