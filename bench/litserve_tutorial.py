"""The peer of bench.serve_bench: LitServe serving the PyTorch Chatbot Tutorial's own evaluate loop, int8.

    python -m bench.litserve_tutorial --checkpoint runs/demo/best_checkpoint.tar --port 8300
    curl -s localhost:8300/predict -d '{"text": "hello there"}'      # {"reply": "..."}

What a user who skipped this bundle would serve (issue 30's peer row): the tutorial's EncoderRNN,
LuongAttnDecoderRNN and GreedySearchDecoder (tests/test_tutorial_checkpoint.py holds them) with the
checkpoint's weights and torch.ao dynamic int8, and its evaluate/evaluateInput steps (normalizeString,
indexesFromSentence, the searcher, EOS and PAD dropped from the words). One request at a time (LitServe's
default, no batching), one torch thread, one worker. Like the tutorial, a text with an unknown word fails (500):
serve_bench sends it only texts it knows every word of (`knows_every_word`).
"""
from __future__ import annotations

import argparse
import atexit
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import litserve as ls
import torch

from bench.decode_floor import tutorial_code, tutorial_searcher
from bench.workload import FALLBACK_PROMPTS, random_checkpoint, synthetic_voc
from harness.launcher import STOP_TIMEOUT_S, free_ports, wait_for_url
from model.voc import EOS_token, PAD_token, Voc
from tools.server_config import REPO

MAX_LENGTH = 10  # the tutorial's


def tutorial_bot(checkpoint: Path | None) -> tuple[torch.nn.Module, Voc]:
    """The tutorial's int8 searcher and vocabulary for a project-format checkpoint file (None: bench.decode_floor's
    random tutorial-size weights). ValueError for a byte-level BPE checkpoint: the tutorial reads words."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True) if checkpoint else \
        random_checkpoint(synthetic_voc(FALLBACK_PROMPTS), 0)
    if "words" not in ckpt["voc"]:
        raise ValueError(f"{checkpoint} has a byte-level BPE vocabulary: the tutorial's evaluate needs words")
    return tutorial_searcher(ckpt), Voc.from_dict(ckpt["voc"])


def normalized_words(text: str) -> list[str]:
    """The tutorial's normalizeString, split as indexesFromSentence splits it."""
    return tutorial_code().normalizeString(text).split(" ")


def knows_every_word(voc: Voc, text: str) -> bool:
    """Whether the tutorial's evaluate can answer `text` (it raises KeyError on an unknown word)."""
    return all(w in voc.word2index for w in normalized_words(text))


@torch.no_grad()
def tutorial_answer(searcher: torch.nn.Module, voc: Voc, text: str) -> str:
    """evaluateInput's reply to `text`: evaluate's words without EOS and PAD, joined by spaces."""
    indexes = [voc.word2index[w] for w in normalized_words(text)] + [EOS_token]
    tokens = searcher(torch.tensor(indexes).unsqueeze(1), torch.tensor([len(indexes)]), MAX_LENGTH)
    words = [voc.index2word[int(t)] for t in tokens]
    return " ".join(w for w in words if w not in (voc.index2word[EOS_token], voc.index2word[PAD_token]))


class TutorialAPI(ls.LitAPI):
    """{"text": ...} -> {"reply": ...} through tutorial_answer (a module-level class: LitServe pickles it)."""

    def __init__(self, checkpoint: Path | None):
        super().__init__()
        self.checkpoint = checkpoint

    def setup(self, device):
        torch.set_num_threads(1)
        self.searcher, self.voc = tutorial_bot(self.checkpoint)

    def decode_request(self, request):
        return request["text"]

    def predict(self, text):
        return tutorial_answer(self.searcher, self.voc, text)

    def encode_response(self, output):
        return {"reply": output}


@contextmanager
def serve_tutorial(workdir: Path, checkpoint: Path):
    """This module's server on a free loopback port, for `checkpoint`; yields its /predict URL; always stopped."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_ports(1)[0]
    with open(workdir / "litserve.log", "wb") as log:
        # its own process group: LitServe runs worker processes, all stopped together
        process = subprocess.Popen([sys.executable, "-W", "ignore::UserWarning", "-m", "bench.litserve_tutorial",
                                    "--checkpoint", str(checkpoint), "--port", str(port)],
                                   cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stop = lambda: stop_group(process)  # noqa: E731
    atexit.register(stop)
    try:
        wait_until_healthy(process, f"http://127.0.0.1:{port}/health", workdir / "litserve.log")
        yield f"http://127.0.0.1:{port}/predict"
    finally:
        stop()


def wait_until_healthy(process: subprocess.Popen, url: str, log: Path) -> None:
    """Poll LitServe's /health until it answers 200 (its worker has run setup)."""
    wait_for_url(url, lambda: None if process.poll() is None else f"{process.returncode}\n{log.read_text()[-3000:]}",
                 "the LitServe peer")


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL after STOP_TIMEOUT_S. Idempotent."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.litserve_tutorial", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="project-format checkpoint with a word vocabulary (default: random tutorial-size weights)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8300, help="port to listen on (default: 8300)")
    p.add_argument("--dry-run", action="store_true", help="answer 'hello' in-process and exit: check that it runs")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        searcher, voc = tutorial_bot(args.checkpoint)
        text = next(t for t in (*FALLBACK_PROMPTS, voc.index2word[3]) if knows_every_word(voc, t))
        print(f"reply: {tutorial_answer(searcher, voc, text)!r}")
        return 0
    server = ls.LitServer(TutorialAPI(args.checkpoint), accelerator="cpu", workers_per_device=1, timeout=60)
    server.run(host=args.host, port=args.port, generate_client_file=False, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
