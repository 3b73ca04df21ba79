"""Two native TorchServe replicas behind HAProxy (health checks on /ping); one is killed under load.

    python -m harness.failover --checkpoint runs/demo/best_checkpoint.tar      # make soak runs it
    python -m harness.failover --clients 8 --seconds 12 --kill-after 4

What a Kubernetes Service over two pods does, on this machine: Debian's haproxy balances round-robin
over two replicas of the same archive, checks GET /ping every 200 ms and marks a replica down after two
failed checks, and retries a refused connection on the other one (`option redispatch`). Under a
bounded loopback load the first replica's Java frontend and workers get SIGKILL. Requests in flight
on it may fail, visibly (HAProxy answers 502/503); none may fail once HAProxy has marked it down;
every 200 reply must equal the chatbot's reply to the same text alone.
Last lines: failover_* `name: value` figures; exit status 0 when every check holds.
"""
from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psutil

from harness.launcher import MODEL_NAME, TorchServe, build_mar, free_ports, start_torchserve
from harness.load import Case, run_load
from harness.soak import load_cases, served_quantize
from model import load_chatbot
from train.runs import add_checkpoint_flags, parse_with_checkpoint

HEALTH_INTERVAL_MS = 200
FALL = 2  # failed checks before a replica is marked down

HAPROXY_CONFIG = """global
    stats socket {socket} mode 600 level admin
    maxconn 512
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 35s
    retries 2
    option redispatch
frontend chat
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /ping
    http-check expect status 200
    default-server inter {interval}ms fall {fall} rise 2
{servers}
"""


def write_haproxy_config(workdir: Path, port: int, replicas: list[TorchServe]) -> Path:
    servers = "\n".join(f"    server r{i} {r.url('inference').removeprefix('http://')} check"
                        for i, r in enumerate(replicas))
    path = workdir / "haproxy.cfg"
    path.write_text(HAPROXY_CONFIG.format(socket=workdir / "admin.sock", port=port, interval=HEALTH_INTERVAL_MS,
                                          fall=FALL, servers=servers))
    return path


def server_states(admin_socket: Path) -> dict[str, str]:
    """{server name: UP/DOWN/...} of the backend, from HAProxy's stats socket."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(admin_socket))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:] if line]
    return {r["svname"]: r["status"] for r in rows if r["pxname"] == "replicas" and r["svname"] not in ("BACKEND",)}


@contextmanager
def haproxy(workdir: Path, replicas: list[TorchServe]):
    """HAProxy in the foreground on a free loopback port; yields (URL of the predictions API, admin socket)."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    port = free_ports(1)[0]
    config = write_haproxy_config(workdir, port, replicas)
    process = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if set(server_states(workdir / "admin.sock").values()) == {"UP"}:
                    break
            except OSError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"haproxy exited: {process.stderr.read().decode()[-500:]}")
            time.sleep(0.1)
        else:
            raise RuntimeError("haproxy never saw both replicas UP")
        yield f"http://127.0.0.1:{port}/predictions/{MODEL_NAME}", workdir / "admin.sock"
    finally:
        process.kill()
        process.wait()


def kill_replica(server: TorchServe) -> None:
    """SIGKILL the replica's Java frontend and its Python workers at once (a node or pod dying)."""
    root = psutil.Process(server.process.pid)
    for process in [*root.children(recursive=True), root]:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def watch_down(admin_socket: Path, name: str, stop: threading.Event, marks: dict) -> None:
    """Record the first time HAProxy reports `name` as DOWN."""
    while not stop.is_set():
        try:
            if server_states(admin_socket).get(name, "").startswith("DOWN"):
                marks["down"] = time.monotonic()
                return
        except OSError:
            pass
        time.sleep(0.02)


def failover(url: str, admin_socket: Path, victim: TorchServe, cases: list[Case], clients: int, seconds: float,
             kill_after: float) -> dict:
    """Load through HAProxy, kill `victim` kill_after seconds in; the figures of what happened."""
    marks: dict[str, float] = {}
    stop = threading.Event()

    def kill() -> None:
        marks["kill"] = time.monotonic()
        kill_replica(victim)
        watch_down(admin_socket, "r0", stop, marks)

    timer = threading.Timer(kill_after, kill)
    timer.start()
    try:
        results = run_load(url, cases, clients, seconds)
    finally:
        timer.cancel()
        stop.set()
    failed = [r for r in results if not r.correct]
    kill_at, down_at = marks.get("kill"), marks.get("down")
    late = [r for r in failed if down_at is None or r.start > down_at]
    return {
        "requests": len(results), "failed": len(failed),
        "failed_statuses": sorted({str(r.status) for r in failed}),
        "wrong_replies": sum(r.status == 200 and not r.correct for r in results),
        "failed_after_marked_down": len(late),
        "marked_down_after_s": None if down_at is None or kill_at is None else round(down_at - kill_at, 3),
        "failure_window_s": round(max(r.end for r in failed) - kill_at, 3) if failed and kill_at else 0.0,
        "answered_by_survivor_after_kill": sum(r.correct and kill_at is not None and r.start > kill_at
                                               for r in results),
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.failover", description=__doc__.splitlines()[0])
    add_checkpoint_flags(p, "the checkpoint both replicas serve")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default: 16)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the load (default: 20)")
    p.add_argument("--kill-after", type=float, default=6.0, help="seconds into the load to kill replica 0")
    return parse_with_checkpoint(p, argv)


def run(checkpoint: Path, clients: int, seconds: float, kill_after: float, workdir: Path) -> dict:
    """Build the archive, start two replicas and HAProxy, run the failover; its figures."""
    chatbot = load_chatbot(checkpoint, quantize=served_quantize())
    cases = [c for c in load_cases(chatbot) if c.status == 200]
    mar = build_mar(checkpoint, workdir / "model-store")
    with ExitStack() as stack:
        replicas = [stack.enter_context(start_torchserve(workdir / f"replica{i}", mar.parent)) for i in range(2)]
        url, admin = stack.enter_context(haproxy(workdir, replicas))
        return failover(url, admin, replicas[0], cases, clients, seconds, kill_after)


def ok(report: dict) -> bool:
    return report["failed_after_marked_down"] == 0 and report["wrong_replies"] == 0 and \
        report["marked_down_after_s"] is not None and report["answered_by_survivor_after_kill"] > 0 and \
        all(s in ("502", "503", "504") or not s.isdigit() for s in report["failed_statuses"])


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="failover_") as tmp:
        report = run(args.checkpoint, args.clients, args.seconds, args.kill_after, Path(tmp))
    for name, value in report.items():
        print(f"failover_{name}: {value}")
    return 0 if ok(report) else 1


if __name__ == "__main__":
    sys.exit(main())
