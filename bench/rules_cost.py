"""What the reply rules (model/constraints.py) cost greedy search: the same batch with and without them.

    python -m bench.rules_cost --checkpoint runs/cornell/best_checkpoint.tar

Interleaved in one process (one torch thread, the served int8 weights unless --quantize says otherwise), a
batch of 8 prompts decoded by seq2seq.greedy_decode alone and with BatchMask; medians over --repeats.
A word model pays for writing PAD/SOS and, at the first step, EOS; a BPE model also for the UTF-8 table.
Last line: `rules_cost_ratio: X` (with / without).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

import torch

from bench.workload import FALLBACK_PROMPTS, add_quantize_flag
from model import load_chatbot
from model.constraints import BatchMask
from model.seq2seq import greedy_decode
from train.runs import add_checkpoint_flags, parse_with_checkpoint


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.rules_cost", description=__doc__.splitlines()[0])
    add_checkpoint_flags(p, "the checkpoint to decode with")
    p.add_argument("--repeats", type=int, default=300, help="timed batches per variant (default: 300)")
    add_quantize_flag(p)
    return parse_with_checkpoint(p, argv)


def median_ms(run, repeats: int) -> tuple[float, float]:
    """Median ms of run(False) and run(True), interleaved so that load drifts hit both alike."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for ruled in (False, True):
            start = time.perf_counter()
            run(ruled)
            times[ruled].append(time.perf_counter() - start)
    return statistics.median(times[False]) * 1e3, statistics.median(times[True]) * 1e3


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    bot = load_chatbot(args.checkpoint, quantize=args.quantize)
    texts = FALLBACK_PROMPTS[:8]
    input_seq, lengths = bot.pad([bot.encode(t).ids for t in texts])

    def run(ruled: bool) -> None:
        constrain = BatchMask(bot.rules, [1] * len(texts), [bot.max_length] * len(texts)) if ruled else None
        greedy_decode(bot.encoder, bot.decoder, input_seq, lengths, bot.max_length, bot.step, with_logprobs=True,
                      constrain=constrain)

    plain, ruled = median_ms(run, args.repeats)
    print(f"checkpoint {args.checkpoint} ({bot.voc.kind} tokens); greedy, batch of {len(texts)}, median of "
          f"{args.repeats}")
    print(f"without rules: {plain:.2f} ms; with rules: {ruled:.2f} ms")
    print(f"rules_cost_ratio: {ruled / plain:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
