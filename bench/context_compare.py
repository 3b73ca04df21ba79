"""Earlier turns read against none, at equal training time: one run per --turns value, trained side by side.

    python -m bench.context_compare --minutes 20 --turns 0 1 2 -- --hidden-size 256 --heldout-fraction 0.1 \
        --extra-pairs train/smalltalk/english.tsv
    python -m bench.context_compare --report-only --turns 0 1 2      # the runs already in --save-dir

Each run is `python -m train.main --corpus chitchat --context-turns T --minutes M` with the flags after `--`, all
started together with --threads CPU threads each, so that they share the machine alike: equal time, not equal
iterations (reading earlier turns makes an iteration dearer). The held-out set is the same conversations for every
run (the split does not depend on the context). For each run: the iterations it reached in its time, its lowest
held-out loss in that time (and at which iteration; a small corpus overfits, so the last is not the lowest) with
its perplexity, the last checkpoint's held-out loss, and over the greedy replies of the lowest's checkpoint to
--prompts held-out prompts (each after its own earlier turns): distinct-1, distinct-2 and the share of the most
frequent reply.
Last lines: `iterations_turns<T>`, `heldout_loss_turns<T>` (the lowest), `perplexity_turns<T>`,
`distinct2_turns<T>`, `top_reply_share_turns<T>`.
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.reply_quality import quality
from model import load_chatbot
from model.context import split_turns
from train.data import checkpoint_data
from train.runs import PERIODIC_GLOB, periodic_name


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.context_compare", description=__doc__.splitlines()[0])
    p.add_argument("--turns", type=int, nargs="+", default=[0, 1], help="context_turns of each run (default: 0 1)")
    p.add_argument("--minutes", type=float, default=20.0, help="training time of every run (default: 20)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of each run (default: 1)")
    p.add_argument("--save-dir", type=Path, default=Path("runs/context-compare"),
                   help="where the runs go: <save-dir>/turns<T> (default: runs/context-compare)")
    p.add_argument("--prompts", type=int, default=200, help="held-out prompts answered (default: 200)")
    p.add_argument("--report-only", action="store_true", help="report on the runs in --save-dir, train none")
    p.add_argument("train_args", nargs="*", help="train.main flags every run gets (after --)")
    return p.parse_args(argv)


def train_all(args: argparse.Namespace) -> None:
    """Start one training run per --turns value, all at once, and wait for them; exit on a failed run."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    runs = []
    for turns in args.turns:
        command = [sys.executable, "-m", "train.main", "--corpus", "chitchat", "--context-turns", str(turns),
                   "--minutes", str(args.minutes), "--iterations", "1000000", "--device", "cpu",
                   "--save-dir", str(args.save_dir / f"turns{turns}"), *args.train_args]
        log = open(args.save_dir / f"turns{turns}.log", "w")
        runs.append((turns, subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    for turns, process, log in runs:
        if process.wait() != 0:
            sys.exit(f"the run with --context-turns {turns} failed: see {log.name}")
        log.close()


def periodic_checkpoints(folder: Path) -> list[Path]:
    """The run's {iteration}_checkpoint.tar files, in order of iteration."""
    found = sorted(folder.glob(PERIODIC_GLOB), key=lambda p: int(p.name.split("_")[0]))
    if not found:
        raise FileNotFoundError(f"no checkpoint in {folder}: train the runs first (without --report-only)")
    return found


def report(folder: Path, prompts: int) -> dict:
    """A run's figures: iterations, lowest and last held-out loss, and the lowest one's greedy replies' diversity."""
    checkpoints = periodic_checkpoints(folder)
    last = load_chatbot(checkpoints[-1]).checkpoint
    iteration, _, lowest = min(last["history"], key=lambda h: h[2])
    bot = load_chatbot(folder / periodic_name(iteration))
    _, heldout = checkpoint_data(bot.checkpoint, bot.voc)
    first = list({pair[0]: pair for pair in heldout}.values())[:prompts]
    earlier = [split_turns(pair[2]) if len(pair) > 2 else [] for pair in first]
    texts = [pair[0] for pair in first]
    q = quality(bot, texts, bot.reply_batch(texts, None, earlier), set())
    return {"iterations": last["iteration"], "lowest_at": iteration, "heldout_loss": lowest,
            "perplexity": math.exp(lowest), "last_heldout_loss": last["heldout_loss"], "distinct1": q["distinct1"],
            "distinct2": q["distinct2"], "top_reply_share": q["top_reply_share"]}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.save_dir.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        train_all(args)
    results = {turns: report(args.save_dir / f"turns{turns}", args.prompts) for turns in args.turns}
    print(f"runs in {args.save_dir}; greedy replies to {args.prompts} held-out prompts\n")
    print("| earlier turns read | iterations | lowest held-out loss (at) | perplexity | last held-out loss "
          "| distinct-1 | distinct-2 | top reply share |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for turns, r in results.items():
        print(f"| {turns} | {r['iterations']} | {r['heldout_loss']:.4f} ({r['lowest_at']}) | {r['perplexity']:.1f} "
              f"| {r['last_heldout_loss']:.4f} | {r['distinct1']:.3f} | {r['distinct2']:.3f} "
              f"| {r['top_reply_share']:.3f} |")
    print()
    for figure in ("iterations", "heldout_loss", "perplexity", "distinct2", "top_reply_share"):
        for turns, r in results.items():
            value = r[figure]
            print(f"{figure}_turns{turns}: {value if isinstance(value, int) else round(value, 4)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
