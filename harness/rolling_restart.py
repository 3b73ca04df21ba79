"""A rolling restart as a pod sees it, on our images: what a replica being replaced loses, counted.

    python -m harness.rolling_restart                          # both engines, without and with the manifests' preStop
    python -m harness.rolling_restart --engines kserve --clients 32 --seconds 12 --lag 2
    python -m harness.rolling_restart --engines torchserve --drain-timeout 0   # TorchServe's own stop, no drain

When Kubernetes replaces a pod it removes the pod's endpoints and runs its preStop hook at about the same time; the
removal takes a while to reach every node's proxy (`--lag`), so requests keep arriving meanwhile; SIGTERM comes once
the preStop hook returns. Here: `--clients` keep-alive clients send back to back to one container of the image
(the deployable TorchServe image, the KServe image) for `--seconds`; halfway, the endpoints go (clients still send
for `--lag` s, then send elsewhere: not counted), and after the preStop pause SIGTERM goes to the container, which
then has terminationGracePeriodSeconds to exit before it is killed. The preStop pause, the drain timeout and the
grace period are the manifests' own (deploy/base/deployment.yaml, deploy/kserve/servingruntime.yaml); `--prestop 0`
runs without the hook too.

Counted per run (last lines `<engine>_prestop<N>_<count>: value`): accepted (sent before SIGTERM), completed
(answered correctly), lost (accepted, not completed), and of those sent after SIGTERM: answered, refused (503 or a
refused connection) and reset (the connection broke: a reset mid-reply); wrong (a 200 with another reply) anywhere;
exit_code and stop_s. Needs the images (make docker-build, make docker-build-kserve) and an engine (DOCKER,
DOCKER_HOST as docker/engine.sh prints them), after `make mar`.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

from harness import images
from tools.server_config import REPO


@dataclass
class Sent:
    """One request: when it was sent, and what came of it ("ok", "wrong", "refused", "reset" or "error")."""

    at: float
    outcome: str


@dataclass
class Pod:
    """How the manifests stop a pod: the preStop pause, the grace period, and the container's environment."""

    prestop_s: float
    grace_s: float
    env: dict


def manifest_pod(engine: str) -> Pod:
    """The stop settings of the engine's manifest."""
    path = REPO / ("deploy/base/deployment.yaml" if engine == "torchserve" else "deploy/kserve/servingruntime.yaml")
    document = next(d for d in yaml.safe_load_all(path.read_text()) if d)
    spec = document["spec"]["template"]["spec"] if engine == "torchserve" else document["spec"]
    [container] = spec["containers"]
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    prestop = float(command[-1]) if command[:1] == ["sleep"] else 0.0
    # the image's baked config stands in for the ConfigMap's (TS_CONFIG_FILE names where the pod mounts it)
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e and e["name"] != "TS_CONFIG_FILE"}
    return Pod(prestop, float(spec.get("terminationGracePeriodSeconds", 30)), env)


def classify(response: requests.Response | None, error: Exception | None, expected: str, engine: str) -> str:
    """What one request got."""
    if error is not None:
        text = repr(error)
        return "refused" if "refused" in text.lower() else "reset"
    if response.status_code == 503:
        return "refused"
    if response.status_code != 200:
        return "error"
    body = response.json()["predictions"][0]["reply"] if engine == "kserve" else response.text.rstrip("\n")
    return "ok" if body == expected else "wrong"


def drive(url: str, request: dict, expected: str, engine: str, clients: int, until: dict) -> list[Sent]:
    """`clients` keep-alive clients sending back to back while time.monotonic() < until["t"] (which may move)."""
    sent: list[Sent] = []

    def client() -> None:
        with requests.Session() as session:
            while time.monotonic() < until["t"]:
                at = time.monotonic()
                try:
                    response, error = session.post(url, timeout=60, **request), None
                except requests.RequestException as e:
                    response, error = None, e
                sent.append(Sent(at, classify(response, error, expected, engine)))
                if error is not None:
                    time.sleep(0.01)  # a refused connection answers at once: do not spin

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sent


def terminate(container: images.Container, removed_at: float, pod: Pod, stopped: dict) -> None:
    """The kubelet's side: the preStop pause from the endpoints' removal, SIGTERM, then SIGKILL after the grace
    period; records when SIGTERM went and how long the container took to exit."""
    time.sleep(max(0.0, removed_at + pod.prestop_s - time.monotonic()))
    stopped["term"] = time.monotonic()
    images.docker("kill", "-s", "TERM", container.name)
    deadline = stopped["term"] + pod.grace_s - pod.prestop_s
    while container.running and time.monotonic() < deadline:
        time.sleep(0.05)
    if container.running:
        images.docker("kill", "-s", "KILL", container.name, check=False)
    stopped["stop_s"] = time.monotonic() - stopped["term"]
    stopped["exit_code"] = int(container.inspect("{{.State.ExitCode}}"))


def restart(engine: str, pod: Pod, clients: int, seconds: float, lag: float, model_store: Path) -> dict:
    """One rolling restart of one pod under load: the counts of the module's docstring."""
    env = [arg for name, value in pod.env.items() for arg in ("-e", f"{name}={value}")]
    container, url, request, expected = images.serve_engine(engine, "seq2seq-rolling", model_store, *env)
    try:
        removed_at = time.monotonic() + seconds / 2
        until, stopped = {"t": removed_at + lag}, {}
        killer = threading.Thread(target=terminate, args=(container, removed_at, pod, stopped))
        killer.start()
        sent = drive(url, request, expected, engine, clients, until)
        killer.join()
    finally:
        container.remove()
    return count(sent, stopped)


def count(sent: list[Sent], stopped: dict) -> dict:
    """accepted/completed/lost before SIGTERM, answered/refused/reset after it, wrong anywhere."""
    before = [s for s in sent if s.at < stopped["term"]]
    after = [s for s in sent if s.at >= stopped["term"]]
    completed = sum(s.outcome == "ok" for s in before)
    return {"accepted": len(before), "completed": completed, "lost": len(before) - completed,
            "after_sigterm": len(after), "answered": sum(s.outcome == "ok" for s in after),
            "refused": sum(s.outcome == "refused" for s in after), "reset": sum(s.outcome == "reset" for s in after),
            "wrong": sum(s.outcome == "wrong" for s in sent), "exit_code": stopped["exit_code"],
            "stop_s": round(stopped["stop_s"], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", nargs="+", default=["torchserve", "kserve"], choices=["torchserve", "kserve"])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10, help="the load's length; the endpoints go halfway")
    parser.add_argument("--lag", type=float, default=1.0, help="seconds requests still arrive after the removal")
    parser.add_argument("--prestop", nargs="+", default=["0", "manifest"],
                        help="preStop pauses to run: seconds, or 'manifest' (the manifest's)")
    parser.add_argument("--drain-timeout", default=None,
                        help="TorchServe's DRAIN_TIMEOUT_S instead of the manifest's (0: TorchServe's own stop alone)")
    parser.add_argument("--model-store", type=Path, default=REPO / "model-store", help="the KServe image's store")
    args = parser.parse_args(argv)
    lines = []
    for engine, prestop in itertools.product(args.engines, args.prestop):
        pod = manifest_pod(engine)
        if args.drain_timeout is not None and engine == "torchserve":
            pod.env["DRAIN_TIMEOUT_S"] = args.drain_timeout
        if prestop != "manifest":
            pod = Pod(float(prestop), pod.grace_s, pod.env)
        figures = restart(engine, pod, args.clients, args.seconds, args.lag, args.model_store)
        lines += [f"{engine}_prestop{pod.prestop_s:g}_{key}: {value}" for key, value in figures.items()]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
