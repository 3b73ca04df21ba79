"""Start and stop the KServe runtime (python -m kserve_runtime, in .venv-kserve) on a free loopback port: used by
the tests and the benchmarks, beside harness.launcher's TorchServe.

`start_kserve(workdir, mar)` is a context manager that always stops the server, even when startup or the caller
fails.
"""
from __future__ import annotations

import atexit
import os
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.launcher import STOP_TIMEOUT_S, free_ports, wait_for_url
from tools.server_config import MODEL_NAME, REPO, preload_env

PYTHON = REPO / ".venv-kserve" / "bin" / "python"  # make install-kserve (requirements-kserve.txt)


@dataclass
class KServe:
    """A running KServe runtime: its URLs and process."""

    workdir: Path
    port: int
    process: subprocess.Popen | None = None

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def predict_url(self) -> str:
        """KServe's v1 predict route."""
        return self.url(f"/v1/models/{MODEL_NAME}:predict")

    @property
    def infer_url(self) -> str:
        """KServe's v2 infer route."""
        return self.url(f"/v2/models/{MODEL_NAME}/infer")

    @property
    def openai_url(self) -> str:
        """The OpenAI API's base URL (an SDK's base_url)."""
        return self.url("/openai/v1")

    def log_tail(self, lines: int = 40) -> str:
        path = self.workdir / "kserve.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S. Idempotent."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def wait_until_ready(server: KServe) -> None:
    """Poll KServe's v2 model readiness until the model is ready."""
    wait_for_url(server.url(f"/v2/models/{MODEL_NAME}/ready"), lambda: None if server.process.poll() is None else
                 f"{server.process.returncode}\n{server.log_tail()}", "the KServe runtime")


@contextmanager
def start_kserve(workdir: Path, mar: Path, python: Path = PYTHON):
    """The KServe runtime serving `mar` as MODEL_NAME on a free loopback port; always stopped."""
    if not python.exists():
        raise RuntimeError(f"{python} not found: make install-kserve")
    workdir.mkdir(parents=True, exist_ok=True)
    server = KServe(workdir, free_ports(1)[0])
    atexit.register(server.stop)
    env = preload_env({**os.environ, "PYTHONPATH": str(REPO)})  # kserve_runtime from the repo; model, serving: .mar
    with open(workdir / "kserve.log", "wb") as log:
        server.process = subprocess.Popen(
            [str(python), "-m", "kserve_runtime", "--mar", str(mar), "--model-name", MODEL_NAME,
             "--http-port", str(server.port), "--unpack-dir", str(workdir / "archive")],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_ready(server)
        yield server
    finally:
        server.stop()
