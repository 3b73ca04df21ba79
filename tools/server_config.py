"""Render TorchServe's config.properties for each place it runs: the one owner of every variant of the one file.

    python -m tools.server_config local --token-auth -o logs/token-config.properties   # make serve TOKEN_AUTH=1
    python -m tools.server_config container -o logs/container-config.properties       # make serve (Docker)
    python -m tools.server_config kubernetes --token-auth -o deploy/generated/token-config.properties
    python -m tools.server_config kserve -o deploy/kserve/store/config/config.properties
    python -m tools.server_config --print model_name                                    # the served name (the Makefile)
    python -m tools.server_config --print malloc           # tcmalloc's path for LD_PRELOAD, or nothing (the Makefile)

config.properties at the repo root is the source; a variant changes only what differs where it runs
(addresses, paths, token authorization, KServe's envelope) and keeps every other line and comment.
The served model's name and archive are its `load_models=<model>=<archive>.mar` line, defined nowhere
else; KServe's model snapshot takes its worker and batching numbers from handler/model-config.yaml.
Plain Python (pyyaml only for the kserve variant), so the Makefile can run it before `make install`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "config.properties"
MODEL_CONFIG = REPO / "handler" / "model-config.yaml"
HOME = "/home/model-server"  # the pytorch/torchserve image's user home
KSERVE_PORT = 8085  # KServe's TorchServe runtime talks to TorchServe on this port inside the pod
# What each variant changes (None: the key is left out); token mode is one more change on top of any of them
CONTAINER = {
    # all interfaces of the container: the host publishes the ports on 127.0.0.1 only
    "inference_address": "http://0.0.0.0:8080",
    "management_address": "http://0.0.0.0:8081",
    "metrics_address": "http://0.0.0.0:8082",
    "metrics_config": f"{HOME}/metrics.yaml",
    "model_store": f"{HOME}/model-store",
    "allowed_urls": f"file://{HOME}/model-store/[A-Za-z0-9_-]+[.]mar",
}
# tcmalloc (Debian/Ubuntu: libtcmalloc-minimal4), preloaded into the servers' processes where it is installed: the
# thousands of small tensors a reply allocates cost less than with glibc's malloc (docs/benchmarks.md: ~7% of an
# in-process reply, ~15% more requests/s served). The Docker images install it; the environment variable MALLOC
# chooses another library, or none when empty.
TCMALLOC = "libtcmalloc_minimal.so.4"
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                "/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")


def malloc_library() -> str:
    """The allocator library the servers preload (LD_PRELOAD): $MALLOC if set (empty: none), else tcmalloc where
    installed, else '' (glibc's malloc)."""
    if "MALLOC" in os.environ:
        return os.environ["MALLOC"]
    return next((str(Path(d) / TCMALLOC) for d in LIBRARY_DIRS if (Path(d) / TCMALLOC).exists()), "")


def preload_env(env: dict[str, str], malloc: bool = True) -> dict[str, str]:
    """env with LD_PRELOAD set to malloc_library() (malloc False or no library: LD_PRELOAD removed)."""
    library = malloc_library() if malloc else ""
    env = {k: v for k, v in env.items() if k != "LD_PRELOAD"}
    return {**env, "LD_PRELOAD": library} if library else env


VARIANTS = {
    "local": {},
    "container": CONTAINER,
    # the management API stays inside the pod (kubectl port-forward reaches it)
    "kubernetes": {**CONTAINER, "management_address": "http://127.0.0.1:8081"},
    # KServe's runtime fronts TorchServe: both APIs on the pod's loopback, models from the storage initializer
    "kserve": {**CONTAINER, "inference_address": f"http://127.0.0.1:{KSERVE_PORT}",
               "management_address": f"http://127.0.0.1:{KSERVE_PORT}", "model_store": "/mnt/models/model-store",
               "allowed_urls": "file:///mnt/models/model-store/[A-Za-z0-9_-]+[.]mar", "load_models": None,
               "service_envelope": "kserve"},
}


def parse_properties(text: str) -> dict[str, str]:
    """key=value lines of .properties text (comments and blanks skipped)."""
    props = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


def read_properties(path: Path = SOURCE) -> dict[str, str]:
    """key=value lines of a .properties file."""
    return parse_properties(path.read_text())


def served_model(config: Path = SOURCE) -> tuple[str, str]:
    """(model name, archive name) from load_models=<model>=<archive>.mar: the one place both are defined."""
    value = read_properties(config).get("load_models")
    if not value:
        raise ValueError(f"{config} has no load_models=<model>=<archive>.mar line")
    model, _, archive = value.partition("=")
    return model, archive.removesuffix(".mar")


MODEL_NAME, ARCHIVE_NAME = served_model()
# The archive's model version (tools/build_mar.py --version): a path after it is a route of the handler's own,
# so the OpenAI-compatible API's base URL is /predictions/<model>/<version>/v1
MODEL_VERSION = "1.0"


def model_config(path: Path = MODEL_CONFIG) -> dict:
    """handler/model-config.yaml, what `make mar` packs: workers, batching, timeout and the handler's options and
    limits (their one definition; everything else reads them here)."""
    import yaml  # only here: the Makefile runs this module before `make install`

    return yaml.safe_load(path.read_text())


def kserve_snapshot() -> str:
    """KServe's model_snapshot: the model-config's workers, delay and timeout; batchSize 1, since TorchServe's
    KServe envelope reads only a batch's first request."""
    config = model_config()
    model = {"defaultVersion": True, "marName": f"{ARCHIVE_NAME}.mar", "batchSize": 1,
             **{key: config[key] for key in ("minWorkers", "maxWorkers", "maxBatchDelay", "responseTimeout")}}
    return json.dumps({"name": "startup.cfg", "modelCount": 1, "models": {MODEL_NAME: {"1.0": model}}},
                      separators=(",", ":"))


def changes(variant: str, token_auth: bool = False, overrides: dict | None = None) -> dict:
    """Every key the variant sets (None: dropped), token mode and the caller's overrides on top."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: one of {', '.join(VARIANTS)}")
    found = dict(VARIANTS[variant])
    if variant == "kserve":
        found["model_snapshot"] = kserve_snapshot()
    if token_auth:
        found["disable_token_authorization"] = "false"
    return {**found, **(overrides or {})}


def render(variant: str = "local", token_auth: bool = False, overrides: dict | None = None) -> str:
    """The text of config.properties for `variant`: changed keys in place, new ones at the end, comments kept."""
    todo = changes(variant, token_auth, overrides)
    lines = [f"# Rendered from config.properties by `python -m tools.server_config {variant}"
             f"{' --token-auth' if token_auth else ''}`: edit that file, not this one."] if todo else []
    for line in SOURCE.read_text().splitlines():
        key = line.partition("=")[0].strip()
        if line.lstrip().startswith("#") or "=" not in line or key not in todo:
            lines.append(line)
        elif todo[key] is not None:
            lines.append(f"{key}={todo.pop(key)}")
        else:
            todo.pop(key)
    lines += [f"{key}={value}" for key, value in todo.items() if value is not None]
    return "\n".join(lines) + "\n"


def properties(variant: str = "local", token_auth: bool = False) -> dict[str, str]:
    """The keys and values `variant` runs with, as rendered."""
    return parse_properties(render(variant, token_auth))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.server_config", description=__doc__.splitlines()[0])
    p.add_argument("variant", nargs="?", choices=list(VARIANTS), default="local",
                   help="where the server runs (default: local, the file as it is)")
    p.add_argument("--token-auth", action="store_true", help="token authorization on (TorchServe writes key_file.json)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="one more key to set (repeatable)")
    p.add_argument("-o", "--output", type=Path, default=None, help="file to write (default: standard output)")
    p.add_argument("--print", dest="show", choices=("model_name", "archive_name", "malloc"), default=None,
                   help="print the served model's name, its archive's, or the allocator library the servers "
                        "preload ('' for none) instead")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.show:
        print({"model_name": MODEL_NAME, "archive_name": ARCHIVE_NAME, "malloc": malloc_library()}[args.show])
        return 0
    overrides = dict(item.partition("=")[::2] for item in args.set)
    text = render(args.variant, args.token_auth, overrides)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
