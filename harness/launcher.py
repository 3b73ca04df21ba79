"""Start and stop a native TorchServe on free loopback ports: used by the tests, benchmarks and soak.

`start_torchserve(workdir, model_store)` is a context manager that always stops the Java process
and its Python workers, even when startup or the caller fails.
"""
from __future__ import annotations

import atexit
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from tools.server_config import (
    ARCHIVE_NAME,
    MODEL_NAME,
    MODEL_VERSION,
    REPO,
    model_config,
    preload_env,
    read_properties,
    render,
)

STARTUP_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30
METRICS_INTERVAL_S = float(model_config()["handler"]["metrics_interval_s"])  # how late the worker's counters may be


def build_mar(checkpoint: Path, export_path: Path, config_file: Path | None = None) -> Path:
    """python -m tools.build_mar, as `make mar` runs it; returns the .mar path."""
    command = [sys.executable, "-m", "tools.build_mar", "--checkpoint", str(checkpoint),
               "--export-path", str(export_path)]
    if config_file is not None:
        command += ["--config-file", str(config_file)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return export_path / f"{ARCHIVE_NAME}.mar"


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that are free on 127.0.0.1 right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class TorchServe:
    """A running native TorchServe: its URLs, files and processes."""

    workdir: Path
    ports: dict[str, int]
    token_auth: bool
    process: subprocess.Popen | None = None
    pids: list[int] = field(default_factory=list)  # launcher, java and workers seen while running

    def url(self, api: str, path: str = "") -> str:
        """URL on the 'inference', 'management' or 'metrics' port."""
        return f"http://127.0.0.1:{self.ports[api]}{path}"

    @property
    def predictions_url(self) -> str:
        return self.url("inference", f"/predictions/{MODEL_NAME}")

    @property
    def openai_url(self) -> str:
        """The OpenAI-compatible API's base URL (an SDK's base_url)."""
        return self.url("inference", f"/predictions/{MODEL_NAME}/{MODEL_VERSION}/v1")

    def keys(self) -> dict:
        """key_file.json (token mode): {"inference": {"key": ...}, "management": {...}, "API": {...}}."""
        return json.loads((self.workdir / "key_file.json").read_text())

    def headers(self, api: str) -> dict:
        """The Authorization header the 'inference' or 'management' API needs ({} without token auth)."""
        return {"Authorization": f"Bearer {self.keys()[api]['key']}"} if self.token_auth else {}

    def metric_values(self, name: str) -> dict[str, float]:
        """{label string: value} of one metric from the Prometheus endpoint."""
        text = requests.get(self.url("metrics", "/metrics"), timeout=10).text
        return {m.group(1): float(m.group(2))
                for m in re.finditer(rf"^{re.escape(name)}\{{(.*?)\}} (\S+)$", text, re.MULTILINE)}

    def batches_of_more_than_one(self, above: float | None = None) -> float:
        """How many batches the handler decoded with more than one request (its seq2seq_batch_size buckets).

        The worker hands its counters over within the model-config's metrics_interval_s: with `above`, waits (up
        to 10 s) for the count to pass it; without, first waits out one interval, so that every batch decoded
        before the call is counted.
        """
        if above is None:
            time.sleep(METRICS_INTERVAL_S + 0.3)
        deadline = time.monotonic() + 10
        while True:
            buckets = self.metric_values("seq2seq_batch_size_bucket")
            count = sum(v for k, v in buckets.items() if 'le="+Inf"' in k) - \
                sum(v for k, v in buckets.items() if 'le="1"' in k)
            if above is None or count > above or time.monotonic() > deadline:
                return count
            time.sleep(0.1)

    def java_process(self) -> psutil.Process:
        """The TorchServe frontend (Java) this launcher started; a child that exits meanwhile is passed over."""
        for child in psutil.Process(self.process.pid).children(recursive=True):
            with suppress(psutil.Error):
                if child.name() == "java":
                    return child
        raise LookupError(f"no Java frontend under pid {self.process.pid}: see {self.workdir / 'logs'}")

    def worker_processes(self) -> list[psutil.Process]:
        """The Python model workers alive now (one that exits while they are listed is left out).

        Read from the live process tree, never from pids recorded earlier: TorchServe replaces a worker that dies,
        and a recorded pid may be gone or, on a busy machine, already someone else's.
        """
        workers = []
        for child in self.java_process().children():
            with suppress(psutil.Error):
                if "model_service_worker" in " ".join(child.cmdline()):
                    workers.append(child)
        return workers

    def log_tail(self, lines: int = 40) -> str:
        log = self.workdir / "logs" / "ts_log.log"
        return "\n".join(log.read_text().splitlines()[-lines:]) if log.exists() else "(no ts_log.log)"

    def remember_pids(self) -> None:
        """Record the launcher's process tree, so stop() can make sure every one of them is gone."""
        try:
            tree = [psutil.Process(self.process.pid)]
            tree += tree[0].children(recursive=True)
        except psutil.NoSuchProcess:
            return
        self.pids = sorted(set(self.pids) | {p.pid for p in tree})

    def leftover_processes(self) -> list[psutil.Process]:
        """Processes of this server still running (zombies count as gone)."""
        alive = []
        for pid in self.pids:
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        return alive

    def stop(self) -> None:
        """SIGTERM to Java (it shuts its workers down), then SIGKILL whatever is left. Idempotent."""
        if self.process is None:
            return
        self.remember_pids()
        processes = self.leftover_processes()
        for p in processes:
            with suppress(psutil.NoSuchProcess):
                if p.name() == "java":
                    p.terminate()
        _, alive = psutil.wait_procs(processes, timeout=STOP_TIMEOUT_S)
        for p in alive:
            with suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=10)
        self.process.wait(timeout=10)


def write_config(server: TorchServe, model_store: Path, overrides: dict[str, str]) -> Path:
    """The repo's config.properties (tools.server_config's local variant) with this server's ports, paths and
    options."""
    text = render("local", server.token_auth, {
        "inference_address": server.url("inference"),
        "management_address": server.url("management"),
        "metrics_address": server.url("metrics"),
        "model_store": str(model_store),
        "metrics_config": str(REPO / read_properties()["metrics_config"]),
        # gRPC listens too (7070/7071 by default): free ports, so servers never clash.
        "grpc_inference_port": str(server.ports["grpc_inference"]),
        "grpc_management_port": str(server.ports["grpc_management"]),
        **overrides,
    })
    path = server.workdir / "config.properties"
    path.write_text(text)
    return path


def launch(server: TorchServe, config: Path, python: Path | None = None, malloc: bool = True) -> None:
    """Start TorchServe in the foreground (so we own the process) from the server's workdir.

    python: the interpreter of the environment whose torchserve runs the server and its workers
    (default: this one); the Python 3.9 / torch 2.4 serving-image runtime test passes its own.
    malloc: preload the allocator `make serve` preloads (tools/server_config.py's malloc_library); False: glibc's.
    """
    tmp = server.workdir / "tmp"  # pid file, unix sockets and unpacked models: private per server
    tmp.mkdir()
    bin_dir = Path(python or sys.executable).absolute().parent  # absolute, not resolved: a venv python is a link
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # workers must import the .mar's model
    env = preload_env(env, malloc)
    env.update(TMPDIR=str(tmp), TEMP=str(tmp), PATH=f"{bin_dir}{os.pathsep}{env['PATH']}")
    torchserve = bin_dir / "torchserve"
    server.process = subprocess.Popen(
        [str(torchserve), "--start", "--foreground", "--ncs", "--ts-config", str(config)],
        cwd=server.workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)


def wait_for_url(url: str, died: Callable[[], str | None], what: str, timeout: float = STARTUP_TIMEOUT_S) -> None:
    """Poll `url` until it answers 200. died(): why the server is gone (its exit and log), or None while it runs;
    then, or after `timeout` s, RuntimeError naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reason = died()
        if reason is not None:
            raise RuntimeError(f"{what} exited: {reason}")
        try:
            if requests.get(url, timeout=5).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f} s: {died() or 'still running'}")


def wait_until_ready(server: TorchServe, workers: int = 1) -> None:
    """Poll the management API until `workers` workers of the model are READY."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        server.remember_pids()
        if server.process.poll() is not None:
            raise RuntimeError(f"TorchServe exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            reply = requests.get(server.url("management", f"/models/{MODEL_NAME}"),
                                 headers=server.headers("management"), timeout=5)
            if reply.ok and sum(w["status"] == "READY" for w in reply.json()[0]["workers"]) >= workers:
                server.remember_pids()
                return
        except (requests.ConnectionError, FileNotFoundError, KeyError, ValueError):
            pass  # not listening yet, or the key file is not (fully) written yet
        time.sleep(0.5)
    raise RuntimeError(f"TorchServe was not ready after {STARTUP_TIMEOUT_S}s:\n{server.log_tail()}")


@contextmanager
def start_torchserve(workdir: Path, model_store: Path, token_auth: bool = False,
                     config_overrides: dict[str, str] | None = None, ready_workers: int = 1,
                     python: Path | None = None, malloc: bool = True):
    """A native TorchServe serving model_store/<ARCHIVE_NAME>.mar as MODEL_NAME on free ports; always stopped.

    ready_workers: READY workers to wait for; 0 returns once the model is registered (a model whose
    workers fail to load never gets one). python, malloc: see launch().
    """
    workdir.mkdir(parents=True, exist_ok=True)
    apis = ("inference", "management", "metrics", "grpc_inference", "grpc_management")
    server = TorchServe(workdir, dict(zip(apis, free_ports(len(apis)))), token_auth)
    atexit.register(server.stop)  # last resort if pytest itself is interrupted; stop() is idempotent
    try:
        launch(server, write_config(server, model_store, config_overrides or {}), python, malloc)
        wait_until_ready(server, ready_workers)
        yield server
    finally:
        server.stop()
