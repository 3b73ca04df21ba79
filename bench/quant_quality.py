"""Does a quantised chatbot keep float32's quality? Held-out loss and greedy replies, side by side.

    python -m bench.quant_quality                       # the newest runs/**/best_checkpoint.tar
    python -m bench.quant_quality --checkpoint runs/demo/500_checkpoint.tar --modes fp16

The held-out pairs are those the checkpoint's own training run held out (train.data.run_data:
the settings stored in the checkpoint), so the corpus must be where that run read it,
or at --data-path. Replies are decoded in batches of --batch-size, as the server batches them.
The handler's quantize option may be on by default only for a mode that passes both gates:
  held-out loss within 1% of float32's, and greedy replies identical on >= 95% of held-out prompts.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bench.workload import weights_megabytes
from model import Chatbot, load_chatbot
from train.data import Pair, checkpoint_data
from train.engine import evaluate
from train.runs import add_checkpoint_flags, add_data_path_flag, parse_with_checkpoint

LOSS_TOLERANCE = 0.01  # relative change of the held-out loss
REPLY_AGREEMENT = 0.95  # share of held-out prompts with the same greedy reply
MODES = ("int8", "fp16")
CPU = torch.device("cpu")


@dataclass
class Quality:
    """A quantised model against its float32 original on the same held-out pairs."""

    mode: str
    loss_float: float
    loss_quant: float
    same_replies: int
    prompts: int
    megabytes_float: float
    megabytes_quant: float

    @property
    def loss_change(self) -> float:
        """Relative change of the held-out loss (+0.004 is 0.4% worse)."""
        return self.loss_quant / self.loss_float - 1.0

    @property
    def agreement(self) -> float:
        return self.same_replies / self.prompts if self.prompts else float("nan")

    @property
    def passes(self) -> bool:
        return abs(self.loss_change) <= LOSS_TOLERANCE and self.agreement >= REPLY_AGREEMENT

    def summary(self) -> str:
        return (f"{self.mode}: held-out loss {self.loss_quant:.4f} vs float32 {self.loss_float:.4f} "
                f"({100 * self.loss_change:+.2f}%), identical replies {self.same_replies}/{self.prompts} "
                f"({100 * self.agreement:.1f}%), weights {self.megabytes_quant:.1f} MB vs "
                f"{self.megabytes_float:.1f} MB: {'PASS' if self.passes else 'FAIL'}")


def replies(bot: Chatbot, queries: Sequence[str], batch_size: int) -> list[str]:
    """Greedy reply texts, decoded `batch_size` queries at a time."""
    out = []
    for start in range(0, len(queries), batch_size):
        out += [r.text for r in bot.reply_batch(queries[start: start + batch_size])]
    return out


def compare_bots(reference: Chatbot, candidate: Chatbot, mode: str, pairs: Sequence[Pair],
                 batch_size: int = 8) -> Quality:
    """Teacher-forced held-out loss of both, and how many held-out queries get the same greedy reply."""
    pairs = list(pairs)
    queries = [pair[0] for pair in pairs]
    same = sum(a == b for a, b in zip(replies(reference, queries, batch_size), replies(candidate, queries, batch_size)))
    return Quality(mode, evaluate(reference.encoder, reference.decoder, reference.voc, pairs, 64, CPU),
                   evaluate(candidate.encoder, candidate.decoder, candidate.voc, pairs, 64, CPU),
                   same, len(queries), weights_megabytes(reference), weights_megabytes(candidate))


def compare(reference: Chatbot, mode: str, pairs: Sequence[Pair], batch_size: int = 8) -> Quality:
    """A float32 chatbot against its checkpoint's `mode` ("int8" or "fp16") one."""
    return compare_bots(reference, load_chatbot(reference.checkpoint, quantize=mode), mode, pairs, batch_size)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.quant_quality", description=__doc__.splitlines()[0])
    add_checkpoint_flags(p, "a checkpoint with its training settings (train.main writes them)")
    add_data_path_flag(p)
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                   help="quantisations to check (default: both)")
    p.add_argument("--batch-size", type=int, default=8, help="queries per reply batch, as served (default: 8)")
    p.add_argument("--limit", type=int, default=0, help="check only the first N held-out pairs (default: all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1; the figures do not depend on it)")
    return parse_with_checkpoint(p, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    path = args.checkpoint
    reference = load_chatbot(path)
    ckpt = reference.checkpoint
    if "args" not in ckpt:
        print(f"error: {path} has no training arguments, so its held-out split is unknown", file=sys.stderr)
        return 2
    _, pairs = checkpoint_data(ckpt, reference.voc, args.data_path)
    pairs = pairs[: args.limit] if args.limit else pairs
    print(f"checkpoint: {path} (iteration {ckpt['iteration']}, hidden {ckpt['config']['hidden_size']}, "
          f"{reference.voc.num_words} tokens); {len(pairs)} held-out pairs")
    results = []
    for mode in args.modes:
        start = time.perf_counter()
        results.append(compare(reference, mode, pairs, args.batch_size))
        print(f"{results[-1].summary()}  [{time.perf_counter() - start:.0f} s]", flush=True)
    return 0 if all(r.passes for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
