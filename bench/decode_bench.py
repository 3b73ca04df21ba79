"""Time Chatbot.reply_batch in-process: float32, int8, fp16 and bf16 weights, batch sizes, torch threads.

    python -m bench.decode_bench                       # tutorial-size random weights
    python -m bench.decode_bench --checkpoint runs/cornell/1500_checkpoint.tar --profile fp16

What the server's decode costs without TorchServe, to choose the handler's defaults (bf16, the whole
model cast to bfloat16, is here only to compare; the handler does not offer it). Modes and
batch sizes are interleaved within each repetition, so load from other processes hits them alike;
the figures are medians over --reps. Random weights have EOS disabled: every reply is max_length
tokens. --profile MODE prints a pyinstrument profile of batch-1 replies in that mode.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bench.workload import FALLBACK_PROMPTS, random_checkpoint, synthetic_voc
from model import Chatbot, load_chatbot

MODES = ("float32", "int8", "fp16", "bf16")


def load_bots(checkpoint: Path | None, modes: Sequence[str], seed: int) -> dict[str, Chatbot]:
    """One chatbot per weight mode, from the checkpoint or from random tutorial-size weights."""
    ckpt = random_checkpoint(synthetic_voc(FALLBACK_PROMPTS), seed) if checkpoint is None else \
        load_chatbot(checkpoint).checkpoint
    return {mode: make_bot(ckpt, mode) for mode in modes}


def make_bot(ckpt: dict, mode: str) -> Chatbot:
    """The chatbot with `mode` weights: float32, int8 or fp16 (model.load_chatbot), bf16 (everything cast)."""
    if mode in ("float32", "bf16"):
        bot = load_chatbot(ckpt)
        if mode == "bf16":  # weights and activations in bfloat16 (the shared embedding is cast once)
            bot.encoder.to(torch.bfloat16)
            bot.decoder.to(torch.bfloat16)
        return bot
    return load_chatbot(ckpt, quantize=mode)


def time_batches(bots: dict[str, Chatbot], batch_sizes: Sequence[int], reps: int) -> dict[tuple, float]:
    """{(mode, batch size): median ms per reply_batch call}, modes and sizes interleaved per repetition."""
    prompts = (FALLBACK_PROMPTS * (max(batch_sizes) // len(FALLBACK_PROMPTS) + 1))
    times: dict[tuple, list[float]] = {(m, b): [] for m in bots for b in batch_sizes}
    for rep in range(reps + 1):  # repetition 0 warms up
        for mode, bot in bots.items():
            for size in batch_sizes:
                texts = prompts[rep % len(FALLBACK_PROMPTS):][:size]
                start = time.perf_counter()
                bot.reply_batch(texts)
                if rep:
                    times[mode, size].append(1000 * (time.perf_counter() - start))
    return {key: float(np.median(values)) for key, values in times.items()}


def profile(bot: Chatbot, calls: int = 50) -> str:
    """pyinstrument's call tree for `calls` batch-1 replies."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    with profiler:
        for i in range(calls):
            bot.reply(FALLBACK_PROMPTS[i % len(FALLBACK_PROMPTS)])
    return profiler.output_text(color=False, unicode=False)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.decode_bench", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint to time (default: random weights at the tutorial's sizes, 7,826 words)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES[:3]),
                   help="weight modes (default: float32 int8 fp16)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16, 64],
                   help="texts per reply_batch call (default: 1 8 16 64)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1],
                   help="torch intra-op thread counts to try (default: 1 and one per core)")
    p.add_argument("--reps", type=int, default=15, help="timed repetitions per cell (default: 15)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    p.add_argument("--profile", choices=MODES, default=None, help="also profile batch-1 replies in this mode")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bots = load_bots(args.checkpoint, args.modes, args.seed)
    print(f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}; torch {torch.__version__}")
    print("| threads | weights | batch | ms per call | ms per reply |\n|---:|---|---:|---:|---:|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for (mode, size), ms in time_batches(bots, args.batch_sizes, args.reps).items():
            print(f"| {threads} | {mode} | {size} | {ms:.1f} | {ms / size:.2f} |", flush=True)
    if args.profile:
        torch.set_num_threads(args.threads[0])
        print(profile(bots[args.profile]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
