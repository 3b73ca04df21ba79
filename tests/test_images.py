"""Our three images, built with the Makefile's targets and run as real containers (`make test-images`).

- `make serve` in Docker mode, as a user types it, then `make stop`;
- the deployable image (`make docker-build`): archive and config baked in, non-root, loopback only, no registration;
- the KServe image (`make docker-build-kserve`): v1, v2, OpenAI and metrics, CPU torch only, the same replies as
  the TorchServe image for the parity suite's cases;
- every image stops on SIGTERM in under 5 s with exit code 0, the requests sent before it answered;
- a worker killed inside the container is replaced; the stand-in bases hold requirements-image.txt's versions;
- each image's bill of materials (logs/images/*.cdx.json) matches the requirements file that pins it.

Needs a Docker engine and the base images: `make test-images` starts one (docker/engine.sh) and provides the bases
(docker/standin/bases.sh). `make test` leaves these tests out (marker `images`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest
import requests
from test_parity import REPLIES, on_kserve, on_torchserve

from harness import images
from harness.launcher import TorchServe, free_ports
from harness.load import Case
from tools.server_config import MODEL_NAME, REPO, render

pytestmark = pytest.mark.images
HELLO = REPO / "hello.txt"
TS_PORTS = dict(zip(("inference", "management", "metrics"), images.TORCHSERVE_PORTS))  # the container config's
STOP_LIMIT_S = 5
BASE_LABEL = "{{index .Config.Labels \"seq2seq.standin\"}}"


@pytest.fixture(scope="module")
def engine():
    if images.docker("info", check=False).returncode:
        pytest.skip("no Docker engine answers: run `make test-images`, which starts one")
    return images.host_network()


@pytest.fixture(scope="module")
def checkout(engine, seq2seq_mar, tmp_path_factory) -> Path:
    """A user's checkout after `make mar`, with the session's tiny archive."""
    return images.user_checkout(tmp_path_factory.mktemp("checkout"), seq2seq_mar)


def container_server() -> TorchServe:
    """The URLs of a TorchServe container on the host's loopback (ports as the container config has them)."""
    return TorchServe(Path("/nonexistent"), dict(TS_PORTS), token_auth=False)


def reply_to_hello(server: TorchServe) -> requests.Response:
    return requests.put(server.predictions_url, data=HELLO.read_bytes(), timeout=30)  # curl -T hello.txt


def processes_of(container: images.Container) -> list[psutil.Process]:
    """The container's processes, as this host sees them (its PID 1 and every descendant)."""
    root = psutil.Process(int(container.inspect("{{.State.Pid}}")))
    return [root, *root.children(recursive=True)]


# ---------------------------------------------------------------- the bases


def test_the_torchserve_base_holds_the_versions_requirements_image_pins(engine):
    base = "pytorch/torchserve:0.12.0-gpu"
    installed = images.python_packages(base)
    pinned = {k: v for k, v in images.pins(REPO / "requirements-image.txt").items() if k != "tokenizers"}
    assert images.drift(installed, pinned) == {}
    probe = images.docker("run", "--rm", "--entrypoint", "bash", base, "-c",
                          "id -u; python --version; java -version 2>&1 | head -1; command -v python").stdout
    uid, python, java, where = probe.splitlines()
    assert uid == "1000" and python.startswith("Python 3.9.") and '"17.' in java and where == "/home/venv/bin/python"
    if images.docker("image", "inspect", "-f", BASE_LABEL, base).stdout.strip():  # a stand-in: says what it is
        assert "stand-in" in (REPO / "docs" / "DEPLOY.md").read_text()


# ---------------------------------------------------------------- make serve (Docker mode) and make stop


@pytest.fixture(scope="module")
def make_serve(checkout, engine):
    made = images.make(checkout, "serve")
    container = images.Container("seq2seq-torchserve")
    try:
        assert made.returncode == 0, made.stdout + made.stderr
        yield made, container
    finally:
        stopped = images.make(checkout, "stop")
        container.remove()
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def test_make_serve_runs_the_makefiles_container_and_answers(make_serve, serving_chatbot):
    made, container = make_serve
    assert "Serving in a container on the CPU" in made.stdout and "TorchServe is up" in made.stdout
    assert container.running
    server = container_server()
    reply = reply_to_hello(server)
    assert reply.status_code == 200 and reply.text == serving_chatbot.reply(HELLO.read_text()).text + "\n"
    models = requests.get(server.url("management", "/models"), timeout=10).json()
    assert [m["modelName"] for m in models["models"]] == [MODEL_NAME]
    metrics = requests.get(server.url("metrics", "/metrics"), timeout=10).text
    assert "\nts_inference_requests_total{" in metrics and "\nseq2seq_" in metrics


def test_the_openai_route_streams_in_the_container(make_serve, serving_chatbot):
    body = {"model": MODEL_NAME, "stream": True, "messages": [{"role": "user", "content": "how are you ?"}]}
    with requests.post(container_server().openai_url + "/chat/completions", json=body, stream=True,
                       timeout=30) as response:
        events = [line for line in response.iter_lines() if line.startswith(b"data: ")]
    assert response.headers["Content-Type"].startswith("text/event-stream") and events[-1] == b"data: [DONE]"
    pieces = [json.loads(e[6:])["choices"][0]["delta"].get("content") or "" for e in events[:-1]
              if json.loads(e[6:])["choices"]]
    assert len(pieces) > 1 and "".join(pieces) == serving_chatbot.reply("how are you ?").text


def test_the_container_runs_unprivileged_on_tcmalloc(make_serve):
    _, container = make_serve
    workers = [p for p in processes_of(container) if "model_service_worker" in " ".join(p.cmdline())]
    java = [p for p in processes_of(container) if p.name() == "java"]
    assert workers and java and {p.uids().real for p in workers + java} == {1000}
    assert all("libtcmalloc" in Path(f"/proc/{p.pid}/maps").read_text() for p in workers + java)


def test_a_worker_killed_in_the_container_is_replaced(make_serve, serving_chatbot):
    _, container = make_serve
    [worker] = [p for p in processes_of(container) if "model_service_worker" in " ".join(p.cmdline())]
    worker.kill()
    deadline, reply = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        reply = reply_to_hello(container_server())
        if reply.status_code == 200:
            break
        time.sleep(0.5)
    assert reply.status_code == 200 and reply.text == serving_chatbot.reply(HELLO.read_text()).text + "\n"
    assert not worker.is_running()


def test_make_stop_stops_the_container_gracefully_and_leaves_nothing(checkout, make_serve):
    _, container = make_serve
    processes = processes_of(container)
    started = time.monotonic()
    stopped = images.make(checkout, "stop")
    assert time.monotonic() - started < STOP_LIMIT_S + 1  # docker stop, plus make's and docker inspect's own
    assert stopped.returncode == 0 and "(exit code 0)" in stopped.stdout, stopped.stdout + stopped.stderr
    assert images.docker("ps", "-aq", "--filter", "name=^seq2seq-torchserve$").stdout.strip() == ""
    psutil.wait_procs(processes, timeout=5)
    assert not [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_make_serve_passes_the_gpus_only_where_the_engine_has_the_nvidia_runtime(checkout, tmp_path):
    """The choice itself, with a stand-in docker client that reports the runtimes each way."""
    for runtimes, expected in (('{"runc":{}}', "on the CPU"), ('{"nvidia":{},"runc":{}}', "on the GPUs")):
        fake = tmp_path / "docker"
        fake.write_text(f"""#!/bin/sh
case "$1" in info) [ "$2" = -f ] && echo '{runtimes}'; exit 0 ;; run) echo "run $*" >> {tmp_path}/runs ;;
inspect) echo false ;; esac
exit 0
""")
        fake.chmod(0o755)
        made = images.make(checkout, "serve", f"DOCKER={fake}", timeout=60)
        run_line = (tmp_path / "runs").read_text().splitlines()[-1]
        assert expected in made.stdout and ("--gpus all" in run_line) == (expected == "on the GPUs")


# ---------------------------------------------------------------- the deployable image


@pytest.fixture(scope="module")
def deployable(checkout, engine):
    images.build(checkout, "docker-build")
    container = images.run_torchserve("seq2seq-test-deployable", images.make_variable("IMAGE", checkout))
    try:
        images.wait_for(container_server().url("inference", "/ping"), container)
        yield container
    finally:
        container.remove()


def test_the_deployable_image_serves_its_baked_archive_unprivileged_on_loopback(deployable, serving_chatbot):
    assert deployable.inspect("{{.Config.User}}") == "model-server" and deployable.inspect("{{len .Mounts}}") == "0"
    reply = reply_to_hello(container_server())
    assert reply.status_code == 200 and reply.text == serving_chatbot.reply(HELLO.read_text()).text + "\n"
    java = next(p for p in processes_of(deployable) if p.name() == "java")
    listening = {c.laddr for c in java.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    assert {a.port for a in listening} >= set(TS_PORTS.values())
    assert {a.ip.removeprefix("::ffff:") for a in listening} == {"127.0.0.1"}  # Java's IPv4 on a dual-stack socket
    register = requests.post(container_server().url("management", "/models?url=seq2seq.mar"), timeout=10)
    assert register.status_code == 405


def test_the_deployable_image_answers_what_it_accepted_before_sigterm(deployable, serving_chatbot):
    case = Case("hello", {"data": HELLO.read_bytes()}, reply=serving_chatbot.reply(HELLO.read_text()).text)
    outcome = images.burst_then_stop(deployable, container_server().predictions_url, [case])
    assert outcome["stop_s"] < STOP_LIMIT_S and outcome["exit_code"] == 0, outcome
    assert outcome["before"] > 0 and outcome["before_lost"] == 0 and outcome["after_wrong"] == 0, outcome


@pytest.mark.parametrize("server", ["torchserve", "kserve"])
def test_a_rolling_restart_with_the_manifests_prestop_loses_nothing(deployable, kserve_image, checkout, server):
    """harness/rolling_restart.py, short: the endpoints go, requests still arrive for 0.5 s, the manifest's preStop
    pauses, SIGTERM: every request sent before it is answered, none reset, and the pod exits 0 well within its
    grace period."""
    from harness.rolling_restart import manifest_pod, restart

    deployable.remove()  # the image is built; its ports are the restarted pod's now
    pod = manifest_pod(server)
    assert pod.prestop_s >= 1 and (server == "kserve" or pod.env["DRAIN_TIMEOUT_S"])
    found = restart(server, pod, clients=8, seconds=4, lag=0.5, model_store=checkout / "model-store")
    assert found["accepted"] > 0 and found["lost"] == 0 and found["reset"] == 0 and found["wrong"] == 0, found
    assert found["exit_code"] == 0 and found["stop_s"] < pod.grace_s - pod.prestop_s, found


# ---------------------------------------------------------------- the KServe image


@pytest.fixture(scope="module")
def kserve_image(checkout, engine):
    import os

    wheels = os.environ.get("PIP_FIND_LINKS", "")  # a local folder of CPU torch wheels, where this machine has one
    local = [f"TORCH_WHEELS={wheels}"] if wheels and list(Path(wheels).glob("torch-*+cpu-*.whl")) else []
    images.build(checkout, "docker-build-kserve", *local)
    port = free_ports(1)[0]
    container = images.run_kserve("seq2seq-test-kserve", images.make_variable("KSERVE_IMAGE", checkout),
                                  checkout / "model-store", port)
    try:
        yield container, KServeContainer(port)
    finally:
        container.remove()


class KServeContainer:
    """The URLs of the KServe image's container (as harness.kserve.KServe has them)."""

    def __init__(self, port: int):
        self.port = port

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    predict_url = property(lambda self: self.url(f"/v1/models/{MODEL_NAME}:predict"))
    infer_url = property(lambda self: self.url(f"/v2/models/{MODEL_NAME}/infer"))
    openai_url = property(lambda self: self.url("/openai/v1"))


def test_the_kserve_image_answers_as_the_torchserve_image_does(kserve_image, torchserve_container):
    container, server = kserve_image
    for body in REPLIES:
        assert on_kserve(server, body) == on_torchserve(torchserve_container, body)
    v2 = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["how are you ?"]}]}
    outputs = requests.post(server.infer_url, json=v2, timeout=30).json()["outputs"]
    assert {o["name"]: o["data"] for o in outputs}["reply"] == [on_torchserve(torchserve_container,
                                                                              {"text": "how are you ?"})[1]["reply"]]
    chat = requests.post(server.openai_url + "/chat/completions", timeout=30, json={
        "model": MODEL_NAME, "messages": [{"role": "user", "content": "how are you ?"}]}).json()
    assert chat["choices"][0]["message"]["content"] == on_torchserve(torchserve_container,
                                                                     {"text": "how are you ?"})[1]["reply"]
    assert "\nseq2seq_" in requests.get(server.url("/metrics"), timeout=10).text


@pytest.fixture(scope="module")
def torchserve_container(checkout, engine):
    """A TorchServe container of the same archive, for the KServe image's replies to be compared with."""
    image = images.make_variable("RUNTIME_IMAGE", checkout)
    store = f"{checkout / 'model-store'}:/home/model-server/model-store:ro"
    config = REPO / "logs" / "images" / "container-config.properties"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(render("container", False, {}))
    container = images.run_torchserve("seq2seq-test-runtime", image, "-v", store,
                                      "-v", f"{config}:/home/model-server/config.properties:ro",
                                      "-v", f"{REPO / 'handler' / 'metrics.yaml'}:/home/model-server/metrics.yaml:ro")
    try:
        yield container_server()
    finally:
        container.remove()


def test_the_kserve_image_runs_unprivileged_with_cpu_torch_only(kserve_image):
    container, _ = kserve_image
    assert {p.uids().real for p in processes_of(container)} == {1000}
    probe = container.exec("python", "-c", "import torch, importlib.metadata as m; print(torch.version.cuda); "
                           "print(sorted(d.metadata['Name'] for d in m.distributions() "
                           "if d.metadata['Name'].startswith(('nvidia', 'triton'))))")
    assert probe.stdout.split("\n")[:2] == ["None", "[]"], probe.stdout + probe.stderr
    libraries = container.exec("sh", "-c", "find / -xdev -name 'libcudart*' -o -xdev -name 'libcublas*' | head -3")
    assert libraries.stdout.strip() == ""


def test_the_kserve_image_stops_on_sigterm_answering_what_it_accepted(kserve_image, serving_chatbot):
    container, server = kserve_image
    case = Case("hello", {"json": {"instances": [{"text": "how are you ?"}]}},
                reply=serving_chatbot.reply("how are you ?").text)
    outcome = images.burst_then_stop(container, server.predict_url, [case])
    assert outcome["stop_s"] < STOP_LIMIT_S and outcome["exit_code"] == 0, outcome
    assert outcome["before"] > 0 and outcome["before_lost"] == 0 and outcome["after_wrong"] == 0, outcome


@pytest.mark.parametrize("variable, requirements", [("RUNTIME_IMAGE", "requirements-image.txt"),
                                                    ("IMAGE", "requirements-image.txt"),
                                                    ("KSERVE_IMAGE", "requirements-kserve.txt")])
def test_each_images_bill_of_materials_matches_the_file_that_pins_it(engine, make_serve, kserve_image, variable,
                                                                    requirements):
    """The image's SBOM (logs/images/, as its build writes it) lists its Python packages at the versions pinned,
    and its Debian packages."""
    image = images.make_variable(variable)
    path = images.ARTIFACTS / f"{image.replace(':', '_').replace('/', '_')}.cdx.json"
    bom = images.write_bill_of_materials(image, path)
    python = {images.normalise(c["name"]): c["version"] for c in bom["components"]
              if c.get("purl", "").startswith("pkg:pypi/")}
    assert images.drift(python, images.pins(REPO / requirements)) == {}
    debian = {c["name"] for c in bom["components"] if c.get("purl", "").startswith("pkg:deb/")}
    assert "libtcmalloc-minimal4" in debian and len(debian) > 50
    if variable == "KSERVE_IMAGE":
        assert python["torch"].endswith("+cpu") and not [n for n in python if n.startswith("nvidia-")]
