"""Wait until a TorchServe has nothing left to answer, before it is stopped: the images' SIGTERM path.

    python tools/drain.py --config /home/model-server/config.properties --timeout 1

TorchServe stops by closing every client connection at once (pytorch/serve#2008): a request queued or being
decoded when Java gets SIGTERM is lost. docker/entrypoint.sh runs this first. The server counts as drained when no
request is queued for any model (the management API's jobQueueStatus.pendingRequests) and no new request has come
in (the metric ts_inference_requests_total) for `--quiet` seconds, longer than a batch takes to decode, so the last
batch taken off the queue has been answered too. It gives up after `--timeout` seconds (a server that keeps getting
traffic never drains: in Kubernetes, the preStop hook's pause lets the endpoints' removal stop that traffic first).

Plain Python 3.9 standard library: it runs in the TorchServe image, whatever is installed there.
Exit status 0 when drained, 1 when the timeout came first (TorchServe is stopped all the same).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.request
from pathlib import Path

POLL_S = 0.1


def read_addresses(config: Path) -> dict[str, str]:
    """{"management": url, "metrics": url} from a TorchServe config.properties (0.0.0.0 read as loopback)."""
    addresses = {}
    for line in config.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("management_address", "metrics_address"):
            addresses[key.strip().split("_")[0]] = value.strip().replace("0.0.0.0", "127.0.0.1")
    return addresses


def management_key(key_file: Path = Path("key_file.json")) -> dict[str, str]:
    """The Authorization header of the management API in token mode (TorchServe writes key_file.json in its cwd)."""
    if not key_file.exists():
        return {}
    return {"Authorization": f"Bearer {json.loads(key_file.read_text())['management']['key']}"}


def get(url: str) -> str:
    """The body of a GET that must answer within a second."""
    request = urllib.request.Request(url, headers=management_key() if "/models" in url else {})
    with urllib.request.urlopen(request, timeout=1) as reply:
        return reply.read().decode()


def pending_requests(management: str) -> int:
    """Requests queued for any model (not yet taken into a batch)."""
    total = 0
    for model in json.loads(get(f"{management}/models"))["models"]:
        for version in json.loads(get(f"{management}/models/{model['modelName']}")):
            total += int(version.get("jobQueueStatus", {}).get("pendingRequests", 0))
    return total


def requests_received(metrics: str) -> float:
    """TorchServe's count of inference requests received, all models together."""
    text = get(f"{metrics}/metrics?name[]=ts_inference_requests_total")
    return sum(float(m) for m in re.findall(r"^ts_inference_requests_total\{.*\} (\S+)$", text, re.MULTILINE))


def drain(addresses: dict[str, str], timeout: float, quiet: float) -> bool:
    """Poll until nothing is queued and nothing new arrived for `quiet` s; False if `timeout` s passed first."""
    deadline = time.monotonic() + timeout
    last_count, quiet_since = None, time.monotonic()
    while time.monotonic() < deadline:
        try:
            count, pending = requests_received(addresses["metrics"]), pending_requests(addresses["management"])
        except (OSError, ValueError, KeyError):  # the server is not answering (anymore): nothing to wait for
            return True
        if count != last_count or pending:
            last_count, quiet_since = count, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet:
            return True
        time.sleep(POLL_S)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="the server's config.properties")
    parser.add_argument("--timeout", type=float, default=1.0, help="give up after this many seconds")
    parser.add_argument("--quiet", type=float, default=0.3,
                        help="seconds without a new or queued request that count as drained (> one batch's decode)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    drained = drain(read_addresses(args.config), args.timeout, args.quiet)
    print(f"drain: {'drained' if drained else 'timed out'} after {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0 if drained else 1


if __name__ == "__main__":
    sys.exit(main())
