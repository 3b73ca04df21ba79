"""Our Docker images as a user builds and runs them: build, run, stop, and list what is inside.

    python -m harness.images                 # build the three images (make targets), then print their figures
                                             # (after make mar: the deployable image bakes model-store/ in)
    python -m harness.images --no-cache      # the same from an empty build cache (base images kept)

Used by tests/test_images.py (`make test-images`, which starts an engine and the stand-in bases first). DOCKER and
DOCKER_HOST come from the environment, as docker/engine.sh prints them. Each build writes a bill of materials
(CycloneDX JSON: the image's Python packages through cyclonedx-bom, plus its Debian packages) to logs/images/.
The last lines printed are `name: value` figures: what SIGTERM during a load (32 clients, docker stop 0.5 s in)
did to the requests sent before and after it, for the deployable and the KServe image; build seconds and size of
each image.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tools.server_config import ARCHIVE_NAME, MODEL_NAME, REPO

DOCKER = os.environ.get("DOCKER", "docker")
ARTIFACTS = REPO / "logs" / "images"
TORCHSERVE_PORTS = (8080, 8081, 8082)  # inference, management, metrics: the container config's
KSERVE_PORT = 8180  # make serve-kserve's
PROMPT = "hello there"  # what serve_engine's request asks
# make target -> the Makefile variable that names the image it builds (the Makefile is the one definition)
TARGETS = {"docker-build": "IMAGE", "docker-build-kserve": "KSERVE_IMAGE", "docker-runtime": "RUNTIME_IMAGE"}


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """The docker client, as the Makefile runs it."""
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
        raise RuntimeError(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return result


def make(checkout: Path, *arguments: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """The repo's Makefile in `checkout`, with this engine's client."""
    command = ["make", "--no-print-directory", "-C", str(checkout), f"DOCKER={DOCKER}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def make_variable(name: str, checkout: Path = REPO) -> str:
    """A variable's value as the Makefile defines it (make print-NAME)."""
    return make(checkout, "-s", f"print-{name}", timeout=60).stdout.strip()


def host_network() -> bool:
    """Whether the engine runs containers on the host's network (no bridge: docker/engine.sh's sandbox flags)."""
    return docker("network", "inspect", "bridge", check=False).returncode != 0


def user_checkout(destination: Path, mar: Path) -> Path:
    """A copy of this checkout as a user has it after `make mar`: the repo's files (as in the working tree), its
    virtual environments (links) and model-store/ holding `mar`."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    for name in listed:
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    for venv in (".venv", ".venv-kserve"):
        if (REPO / venv).exists():
            (destination / venv).symlink_to(REPO / venv)
    (destination / "model-store").mkdir(exist_ok=True)
    shutil.copy(mar, destination / "model-store" / mar.name)
    return destination


def build(checkout: Path, target: str, *arguments: str) -> float:
    """`make <target>` in `checkout`; the seconds it took. Writes the image's bill of materials to ARTIFACTS."""
    started = time.monotonic()
    result = make(checkout, target, *arguments)
    seconds = time.monotonic() - started
    if result.returncode:
        raise RuntimeError(f"make {target} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    image = make_variable(TARGETS[target], checkout)
    write_bill_of_materials(image, ARTIFACTS / f"{image.replace(':', '_').replace('/', '_')}.cdx.json")
    return seconds


def image_size_mb(image: str) -> float:
    return int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout) / 1e6


def python_packages(image: str) -> dict[str, str]:
    """{normalised name: version} of every Python package the image's `python` has."""
    listed = docker("run", "--rm", "--entrypoint", "python", image, "-m", "pip", "list", "--format", "json").stdout
    return {normalise(p["name"]): p["version"] for p in json.loads(listed)}


def debian_packages(image: str) -> dict[str, str]:
    """{name: version} of the image's installed Debian packages."""
    listed = docker("run", "--rm", "--entrypoint", "dpkg-query", image, "-W", "-f", "${Package}\t${Version}\n").stdout
    return dict(line.split("\t") for line in listed.splitlines() if "\t" in line)


def normalise(name: str) -> str:
    """PEP 503's form of a package name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(requirements: Path) -> dict[str, str]:
    """{normalised name: version} of a requirements file's name==version lines."""
    found = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", requirements.read_text(), re.MULTILINE)
    return {normalise(name): version for name, version in found}


def drift(installed: dict[str, str], pinned: dict[str, str]) -> dict[str, str]:
    """{name: 'pinned X, installed Y'} for each pin the image does not hold (a local label such as +cpu aside)."""
    return {name: f"pinned {version}, installed {installed.get(name)}" for name, version in pinned.items()
            if installed.get(name, "").split("+")[0] != version}


def write_bill_of_materials(image: str, path: Path) -> dict:
    """A CycloneDX JSON SBOM of the image: cyclonedx-bom's from its `pip freeze`, plus its Debian packages."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        frozen = Path(tmp) / "frozen.txt"
        frozen.write_text("".join(f"{n}=={v}\n" for n, v in sorted(python_packages(image).items())))
        cyclonedx = Path(sys.executable).with_name("cyclonedx-py")
        subprocess.run([str(cyclonedx), "requirements", str(frozen), "--of", "JSON", "-o", str(path)],
                       check=True, capture_output=True, timeout=120)
    bom = json.loads(path.read_text())
    bom["metadata"]["component"] = {"type": "container", "name": image, "bom-ref": image}
    bom["components"] += [{"type": "library", "name": name, "version": version, "bom-ref": f"deb:{name}",
                           "purl": f"pkg:deb/debian/{name}@{version}"}
                          for name, version in sorted(debian_packages(image).items())]
    path.write_text(json.dumps(bom, indent=1))
    return bom


@dataclass
class Container:
    """A running container of ours."""

    name: str

    def inspect(self, template: str) -> str:
        return docker("inspect", "-f", template, self.name).stdout.strip()

    @property
    def running(self) -> bool:
        return self.inspect("{{.State.Running}}") == "true"

    def exec(self, *command: str, user: str | None = None) -> subprocess.CompletedProcess:
        return docker("exec", *(["-u", user] if user else []), self.name, *command, check=False)

    def logs(self) -> str:
        result = docker("logs", "--tail", "60", self.name, check=False)
        return result.stdout + result.stderr

    def stop(self, timeout: int = 30) -> tuple[float, int]:
        """`docker stop` (SIGTERM, then SIGKILL after `timeout` s): (seconds it took, the exit code)."""
        started = time.monotonic()
        docker("stop", "-t", str(timeout), self.name, timeout=timeout + 30)
        return time.monotonic() - started, int(self.inspect("{{.State.ExitCode}}"))

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)


def run_container(name: str, image: str, *arguments: str, options: tuple[str, ...] = ()) -> Container:
    """`docker run -d` of `image` (a container of that name is replaced); arguments follow the image name."""
    docker("rm", "-f", name, check=False)
    docker("run", "-d", "--name", name, *options, image, *arguments)
    return Container(name)


def wait_for(url: str, container: Container, timeout: float = 180) -> None:
    """Poll `url` until it answers 200, failing early (with the container's logs) if the container exits."""
    from harness.launcher import wait_for_url

    wait_for_url(url, lambda: None if container.running else container.logs(), container.name, timeout)


def burst_then_stop(container: Container, url: str, cases: list, clients: int = 32, seconds: float = 4) -> dict:
    """`clients` clients send `cases` for `seconds`; SIGTERM (docker stop) comes 0.5 s in. How long the stop took,
    its exit code, and what became of the requests sent before it (answered or lost) and after it (answered,
    refused or reset; a wrong reply counts apart)."""
    from harness.load import run_load

    results, stopped = [], {}
    sender = threading.Thread(target=lambda: results.extend(run_load(url, cases, clients, seconds)))
    sender.start()
    time.sleep(0.5)
    stopped["at"] = time.monotonic()
    stopped["stop_s"], stopped["exit_code"] = container.stop()
    sender.join()
    before = [r for r in results if r.start < stopped["at"]]
    after = [r for r in results if r.start >= stopped["at"]]
    return {"stop_s": round(stopped["stop_s"], 2), "exit_code": stopped["exit_code"],
            "before": len(before), "before_lost": sum(not r.correct for r in before),
            "after": len(after), "after_answered": sum(r.correct for r in after),
            "after_wrong": sum(r.status == 200 and not r.correct for r in after)}


def report(seconds: dict[str, float]) -> list[str]:
    """`name: value` lines: each image's build seconds and size."""
    lines = []
    for target, taken in seconds.items():
        image = make_variable(TARGETS[target])
        key = TARGETS[target].lower()
        lines += [f"{key}_build_s: {taken:.0f}", f"{key}_size_mb: {image_size_mb(image):.0f}"]
    return lines


def ready(container: Container, url: str) -> Container:
    """The container once `url` answers; removed (its logs in the error) if it never does."""
    try:
        wait_for(url, container)
    except BaseException:
        container.remove()
        raise
    return container


def run_torchserve(name: str, image: str, *options: str) -> Container:
    """A TorchServe image's container on this host's loopback, ready: its ports published on 127.0.0.1, or, on an
    engine without a bridge, on the host's network with TorchServe bound to 127.0.0.1 (docker/entrypoint.sh)."""
    reach = ("--network", "host", "-e", "TS_BIND_ADDRESS=127.0.0.1") if host_network() else \
        tuple(f"-p127.0.0.1:{port}:{port}" for port in TORCHSERVE_PORTS)
    return ready(run_container(name, image, options=(*options, *reach)),
                 f"http://127.0.0.1:{TORCHSERVE_PORTS[1]}/models/{MODEL_NAME}")


def run_kserve(name: str, image: str, model_store: Path, port: int, *options: str) -> Container:
    """The KServe image's container serving model_store's archive on 127.0.0.1:port, ready (published there, or on
    the host's network listening there)."""
    store = ("-v", f"{model_store}:/mnt/models/model-store:ro")
    if host_network():
        arguments = ("--mar", f"/mnt/models/model-store/{ARCHIVE_NAME}.mar", "--model-name", MODEL_NAME,
                     "--host", "127.0.0.1", "--http-port", str(port))
        reach = ("--network", "host")
    else:
        arguments, reach = (), ("-p", f"127.0.0.1:{port}:8080")
    return ready(run_container(name, image, *arguments, options=(*options, *store, *reach)),
                 f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}/ready")


def serve_engine(engine: str, name: str, model_store: Path, *options: str) -> tuple[Container, str, dict, str]:
    """The engine's image ("torchserve": the deployable one, "kserve") running and ready: (container, URL, a request
    of PROMPT, the reply it gives)."""
    import requests

    if engine == "torchserve":
        container = run_torchserve(name, make_variable("IMAGE"), *options)
        url, request = f"http://127.0.0.1:{TORCHSERVE_PORTS[0]}/predictions/{MODEL_NAME}", {"data": PROMPT.encode()}
    else:
        container = run_kserve(name, make_variable("KSERVE_IMAGE"), model_store, KSERVE_PORT, *options)
        url, request = f"http://127.0.0.1:{KSERVE_PORT}/v1/models/{MODEL_NAME}:predict", {
            "json": {"instances": [{"text": PROMPT}]}}
    reference = requests.post(url, timeout=30, **request)
    expected = reference.json()["predictions"][0]["reply"] if engine == "kserve" else reference.text.rstrip("\n")
    return container, url, request, expected


def stop_figures(model_store: Path) -> list[str]:
    """`name: value` lines of SIGTERM under load (burst_then_stop), for the deployable and the KServe image."""
    from harness.load import Case

    lines = []
    for engine, name in (("torchserve", "deployable"), ("kserve", "kserve")):
        container, url, request, expected = serve_engine(engine, "seq2seq-stop-under-load", model_store)
        try:
            figures = burst_then_stop(container, url, [Case("reply", request, reply=expected)])
        finally:
            container.remove()
        lines += [f"{name}_{key}: {value}" for key, value in figures.items()]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build our three images; print their build time and size, and what "
                                                 "a docker stop under load loses.")
    parser.add_argument("--no-cache", action="store_true", help="build without the build cache (bases kept)")
    parser.add_argument("--torch-wheels", default=os.environ.get("PIP_FIND_LINKS", ""),
                        help="make's TORCH_WHEELS for the KServe image (default: $PIP_FIND_LINKS)")
    args = parser.parse_args(argv)
    if args.no_cache:
        docker("builder", "prune", "-af", timeout=600)
    wheels = args.torch_wheels if list(Path(args.torch_wheels or "/nonexistent").glob("torch-*+cpu-*.whl")) else ""
    arguments = {"docker-build-kserve": [f"TORCH_WHEELS={wheels}"] if wheels else []}
    seconds = {target: build(REPO, target, *arguments.get(target, [])) for target in TARGETS}
    print("\n".join(stop_figures(REPO / "model-store") + report(seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
