"""What each decoding mode costs in-process, without TorchServe: time, decoder steps and rows per batch.

    python -m bench.decoding_cost --checkpoint runs/compare-word/best_checkpoint.tar --data-path ../shared/data/cornell

The modes are bench.serve_bench's decoding scenarios (greedy, beam5, sample: the same JSON fields), on
the same held-out prompts, in batches of the model-config's batchSize as the handler decodes them
(Chatbot.generate, int8 weights and one torch thread unless told otherwise). Modes are interleaved
within each repetition, so load from other processes hits them alike; times are medians over --reps.
Per mode it reports ms per batch, decoder steps per batch (a batch runs until its longest reply
ends), decoder rows per step (beams, the greedy lane while no beam holds it, one per sample) and
reply tokens, so a gap between modes splits into "more decoder work" and "more work around it".
Last lines: `<mode>_vs_greedy_time: X` (greedy's ms per batch / the mode's, as a throughput ratio)
and `<mode>_vs_greedy_steps: X` (the mode's decoder steps per batch / greedy's).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from bench.workload import DECODING_FIELDS, add_quantize_flag, handler_defaults, held_out_prompts
from model import Chatbot, load_chatbot
from model.schema import DecodeOptions, parse_options
from train.runs import add_checkpoint_flags, add_data_path_flag, parse_with_checkpoint


@dataclass
class Cost:
    """One mode's measurements over every batch of the prompts."""

    milliseconds: list[float] = field(default_factory=list)  # per pass over all batches, per batch
    steps: int = 0  # decoder calls over one pass
    rows: int = 0  # decoder rows over one pass
    tokens: int = 0  # reply tokens (EOS included) over one pass
    batches: int = 0


def counting(step: Callable, cost: Cost) -> Callable:
    """`step` that also counts its calls and rows into `cost`."""
    def counted(token, *rest):
        cost.steps += 1
        cost.rows += token.size(1)
        return step(token, *rest)
    return counted


def one_pass(bot: Chatbot, batches: Sequence[list[list[int]]], options: DecodeOptions) -> tuple[float, int]:
    """(ms per batch, reply tokens) of decoding every batch once."""
    start, tokens = time.perf_counter(), 0
    for batch in batches:
        tokens += sum(len(found[0].ids) for found in bot.generate(batch, [options] * len(batch)))
    return 1000 * (time.perf_counter() - start) / len(batches), tokens


def measure(bot: Chatbot, batches: Sequence[list[list[int]]], modes: dict[str, DecodeOptions],
            reps: int) -> dict[str, Cost]:
    """{mode: Cost}: one counted pass per mode, then `reps` timed passes with the modes interleaved."""
    costs = {mode: Cost(batches=len(batches)) for mode in modes}
    step = bot.step
    for mode, options in modes.items():
        bot.step = counting(step, costs[mode])
        _, costs[mode].tokens = one_pass(bot, batches, options)  # also the warm-up
    bot.step = step
    for _ in range(reps):
        for mode, options in modes.items():
            costs[mode].milliseconds.append(one_pass(bot, batches, options)[0])
    return costs


def report(costs: dict[str, Cost], prompts: int) -> None:
    """The table, then the ratio lines against greedy."""
    print("| mode | ms per batch | decoder steps per batch | rows per step | reply tokens per prompt |")
    print("|---|---:|---:|---:|---:|")
    for mode, c in costs.items():
        print(f"| {mode} | {statistics.median(c.milliseconds):.2f} | {c.steps / c.batches:.2f} | "
              f"{c.rows / c.steps:.1f} | {c.tokens / prompts:.2f} |")
    greedy = costs.get("greedy")
    for mode, c in costs.items():
        if greedy is not None and mode != "greedy":
            time_ratio = statistics.median(greedy.milliseconds) / statistics.median(c.milliseconds)
            print(f"{mode}_vs_greedy_time: {time_ratio:.2f}")
            print(f"{mode}_vs_greedy_steps: {c.steps / greedy.steps:.2f}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    d = handler_defaults()
    p = argparse.ArgumentParser(prog="python -m bench.decoding_cost", description=__doc__.splitlines()[0])
    add_checkpoint_flags(p, "a checkpoint with its training settings (train.main writes them)")
    add_data_path_flag(p)
    p.add_argument("--modes", nargs="+", choices=list(DECODING_FIELDS), default=list(DECODING_FIELDS),
                   help="decoding scenarios to compare, as bench.serve_bench sends them (default: all)")
    p.add_argument("--prompts", type=int, default=296, help="held-out prompts (default: 296, 37 batches of 8)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"],
                   help=f"requests per batch (default: model-config's batchSize, {d['batch_size']})")
    add_quantize_flag(p, d["quantize"])
    p.add_argument("--threads", type=int, default=d["threads"],
                   help=f"torch threads, 0 for torch's default (default: model-config's, {d['threads']})")
    p.add_argument("--reps", type=int, default=5, help="timed passes per mode (default: 5)")
    return parse_with_checkpoint(p, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    bot = load_chatbot(args.checkpoint, quantize=args.quantize)
    _, prompts, where = held_out_prompts(bot, args.data_path)
    encoded = [bot.encode(p).ids for p in prompts[: args.prompts]]
    batches = [encoded[i:i + args.batch_size] for i in range(0, len(encoded), args.batch_size)]
    modes = {m: parse_options(DECODING_FIELDS[m], bot.default_options, {}) for m in args.modes}
    print(f"checkpoint {args.checkpoint}; {len(encoded)} prompts ({where}) in {len(batches)} batches of "
          f"{args.batch_size}; quantize {args.quantize}, {args.threads} thread(s), median of {args.reps} passes")
    report(measure(bot, batches, modes, args.reps), len(encoded))
    return 0


if __name__ == "__main__":
    sys.exit(main())
