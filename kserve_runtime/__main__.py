"""Serve a TorchServe archive (.mar) on KServe's Python model server instead of TorchServe.

    python -m kserve_runtime      # config.properties' archive in model-store/, as its model name, on 127.0.0.1:8180
    python -m kserve_runtime --mar /mnt/models/model-store/x.mar --model-name x --host 0.0.0.0 --http-port 8080

The same archive, model-config and serving core as under TorchServe (kserve_runtime/archive.py); KServe's v1 and v2
protocols, its health routes and /metrics, and the OpenAI API under /openai/v1. `make serve-kserve` runs this in the
background.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path

from .archive import ArchiveError, unpack, use_archive_code

try:  # the repo's one definition of the served names and limits (config.properties); an image carries only this
    from tools.server_config import ARCHIVE_NAME, MODEL_NAME, read_properties
    DEFAULT_MAR = Path(read_properties()["model_store"]) / f"{ARCHIVE_NAME}.mar"
    MAX_REQUEST_SIZE = int(read_properties()["max_request_size"])
except ImportError:
    MODEL_NAME, DEFAULT_MAR, MAX_REQUEST_SIZE = None, None, 65536  # config.properties' value
DEFAULT_PORT = 8180  # beside TorchServe's 8080-8082, so both can run at once (make serve-kserve KSERVE_PORT=...)
logger = logging.getLogger("kserve_runtime")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kserve_runtime", description=__doc__.split("\n")[0])
    parser.add_argument("--mar", type=Path, default=DEFAULT_MAR, required=DEFAULT_MAR is None,
                        help=f"the TorchServe archive to serve (default: {DEFAULT_MAR}, what make mar builds)")
    parser.add_argument("--model-name", default=MODEL_NAME, required=MODEL_NAME is None,
                        help=f"the name the model is served as (default: TorchServe's, {MODEL_NAME})")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: loopback only; 0.0.0.0 in a container)")
    parser.add_argument("--http-port", type=int, default=DEFAULT_PORT, help=f"HTTP port (default: {DEFAULT_PORT})")
    parser.add_argument("--max-request-size", type=int, default=MAX_REQUEST_SIZE,
                        help=f"largest request body in bytes, larger gets 413 (default: TorchServe's max_request_size, "
                             f"{MAX_REQUEST_SIZE})")
    parser.add_argument("--unpack-dir", type=Path, default=None,
                        help="where to unpack the archive (default: a temporary folder)")
    parser.add_argument("--dry-run", action="store_true",
                        help="unpack the archive and load the model, then exit without serving")
    return parser.parse_args(argv)


def listen_on(host: str) -> None:
    """Make KServe's REST server listen on `host`: it binds 0.0.0.0 itself (right in a pod, not on a laptop)."""
    from kserve.protocol.rest import server

    class HostRESTServer(server.RESTServer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.config.host = host  # uvicorn reads it when it binds

    import kserve.model_server
    kserve.model_server.RESTServer = HostRESTServer


def use_uvloop() -> None:
    """Run KServe's servers on uvloop (uvicorn[standard] installs it): KServe starts them with asyncio.run, so
    uvicorn's own loop choice never applies. Under 16 clients the stock loop spent a fifth of its thread in socket
    writes (py-spy), and uvloop served 701 requests/s where it served 646 (docs/benchmarks.md)."""
    try:
        import uvloop
    except ImportError:
        logger.warning("uvloop is not installed: serving on asyncio's own event loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())  # KServe asks for the current loop before asyncio.run


def serve(args: argparse.Namespace, folder: Path) -> int:
    """Unpack, load and serve (or stop after loading, with --dry-run)."""
    try:
        archive = unpack(args.mar, folder)
    except ArchiveError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    use_archive_code(archive)
    sys.argv = sys.argv[:1]  # kserve.model_server parses sys.argv when imported: our flags are not its
    from kserve import ModelServer, model_server

    from .body_limit import BodyLimit
    from .client_watch import ClientWatch
    from .model import Seq2seqModel
    from .openai_routes import add_routes

    model = Seq2seqModel(args.model_name, archive)
    model.load()
    if args.dry_run:
        print(f"loaded {args.mar} as {args.model_name}: {model.core.chatbot.voc.num_words} tokens")
        return 0
    add_routes(model_server.app, model)
    model_server.app.add_middleware(BodyLimit, limit=args.max_request_size)
    model_server.app.add_middleware(ClientWatch)  # outermost: it sees the body end as the client sent it
    listen_on(args.host)
    # KServe logs three lines per request besides the access log (two timings, one latency): the same figures are
    # on /metrics (request_*_seconds), and at 16 clients the lines cost throughput on a small machine
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    use_uvloop()
    ModelServer(http_port=args.http_port, enable_grpc=False, workers=1, enable_latency_logging=False).start([model])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.unpack_dir is not None:
        args.unpack_dir.mkdir(parents=True, exist_ok=True)
        return serve(args, args.unpack_dir)
    with tempfile.TemporaryDirectory(prefix="kserve_runtime_") as folder:
        return serve(args, Path(folder))


if __name__ == "__main__":
    sys.exit(main())
