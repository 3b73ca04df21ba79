"""Train the seq2seq chatbot with the PyTorch chatbot tutorial's recipe; resumable, with held-out evaluation.

    python -m train.main --corpus cornell --data-path data/cornell
    python -m train.main --resume runs/cornell/2000_checkpoint.tar --iterations 6000

Writes {iteration}_checkpoint.tar every --save-every iterations and at the end, and loss.png
(train and held-out loss) beside them.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from model.chatbot import Chatbot
from model.checkpoint import FORMAT, CheckpointError, build_model, load_chatbot
from model.config import CONFIG_KEYS, ModelConfig
from train import distributed
from train.config import (
    DEFAULT_ITERATIONS,
    DataConfig,
    OptimConfig,
    RunConfig,
    add_flags,
    model_settings,
    stored_settings,
)
from train.data import Pair, known_pairs, load_data, random_batches, run_data, same_tokens
from train.device import pick_device
from train.engine import (
    Batch,
    Objective,
    evaluate,
    make_batch,
    make_optimizers,
    prefetch,
    teacher_forced_loss,
    train_step,
)
from train.runs import BEST, periodic_name

logger = logging.getLogger(__name__)

# Flags that define the run; on --resume they come from the checkpoint, not the command line.
# (--data-path and --iterations may be given again: the corpus can move, a run can be extended.)
RESUMED = tuple(f.name for settings in (DataConfig, ModelConfig, OptimConfig) for f in fields(settings)
                if f.name not in ("data_path", "iterations"))
RESUME_KEYS = ("args", "encoder_optimizer", "decoder_optimizer", "iteration", "history", "rng")
# A tutorial checkpoint resumes from its weights, optimiser states and iteration; the data flags come from
# the command line, the batches and coins start from --seed (the tutorial saves no sampler state).
TUTORIAL_RESUME_KEYS = ("encoder_optimizer", "decoder_optimizer", "iteration")


def build_parser() -> argparse.ArgumentParser:
    """All knobs, defaulting to the tutorial's recipe (train/config.py and model/config.py define them)."""
    p = argparse.ArgumentParser(prog="python -m train.main", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for title, settings in (("data", DataConfig), ("model", ModelConfig), ("optimisation", OptimConfig),
                            ("run", RunConfig)):
        add_flags(p.add_argument_group(title), settings)
    return p


# ---------------------------------------------------------------- state

@dataclass
class Run:
    """Everything that changes while training and is saved in a checkpoint."""

    voc: Any  # model/tokenizer.py: Voc or BpeTokenizer
    encoder: torch.nn.Module
    decoder: torch.nn.Module
    optimizers: list[torch.optim.Optimizer]
    sampler_rng: random.Random  # draws the batches (data.random_batches)
    coin_rng: random.Random  # the per-batch teacher forcing coin
    iteration: int = 0
    history: list[list[float]] = field(default_factory=list)  # [iteration, train loss, held-out loss]
    sampler_state: Any = None  # sampler_rng's state right after the last batch trained on
    objective: torch.nn.Module | None = None  # DistributedDataParallel(Objective(...)) under torchrun, else None


def data_parallel(run: Run, device: torch.device) -> Run:
    """Under torchrun, wrap encoder and decoder in one DistributedDataParallel module (it also makes every rank
    start from rank 0's weights); a single process is left as it is."""
    if distributed.world()[1] > 1:
        from torch.nn.parallel import DistributedDataParallel

        run.objective = DistributedDataParallel(Objective(run.encoder, run.decoder),
                                                device_ids=[device.index] if device.type == "cuda" else None)
    return run


def model_config(args: argparse.Namespace) -> dict:
    """The checkpoint's model config from the command-line flags."""
    return asdict(model_settings(args))


def new_run(args: argparse.Namespace, voc: Any, device: torch.device) -> Run:
    """Fresh weights (seeded) and optimisers."""
    torch.manual_seed(args.seed)
    encoder, decoder = build_model(model_config(args), voc.num_words)
    encoder.to(device).train()
    decoder.to(device).train()
    optimizers = make_optimizers(encoder, decoder, args.learning_rate, args.decoder_learning_ratio, fused=True)
    run = Run(voc, encoder, decoder, optimizers, random.Random(args.seed), random.Random(f"coin-{args.seed}"))
    run.sampler_state = run.sampler_rng.getstate()
    return data_parallel(run, device)


def resume_run(bot: Chatbot, args: argparse.Namespace, device: torch.device) -> Run:
    """The run saved in the checkpoint `bot` was loaded from: its weights (float32, on `device`), optimiser states
    and, for the project's own checkpoints, its samplers and RNG states."""
    ckpt, voc, encoder, decoder = bot.checkpoint, bot.voc, bot.encoder, bot.decoder
    encoder.train()
    decoder.train()
    optimizers = make_optimizers(encoder, decoder, args.learning_rate, args.decoder_learning_ratio, fused=True)
    optimizers[0].load_state_dict(ckpt["encoder_optimizer"])
    optimizers[1].load_state_dict(ckpt["decoder_optimizer"])
    run = Run(voc, encoder, decoder, optimizers, random.Random(args.seed), random.Random(f"coin-{args.seed}"),
              iteration=ckpt["iteration"], history=[list(h) for h in ckpt.get("history", [])])
    rng = ckpt.get("rng")
    if rng is not None:
        run.sampler_rng.setstate(as_random_state(rng["sampler"]))
        run.coin_rng.setstate(as_random_state(rng["coin"]))
        torch.set_rng_state(rng["torch"])
        if device.type == "cuda" and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"], device)
    run.sampler_state = run.sampler_rng.getstate()
    return data_parallel(run, device)


def as_random_state(state: Sequence) -> tuple:
    """random.Random.getstate() as setstate wants it (tuples), from a saved copy."""
    version, internal, gauss = state
    return version, tuple(internal), gauss


def to_cpu(obj: Any) -> Any:
    """A copy of nested dicts/lists/tuples with every tensor moved to the CPU (loadable without a GPU)."""
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def checkpoint_dict(run: Run, args: argparse.Namespace, loss: float, heldout_loss: float,
                    device: torch.device) -> dict:
    """The self-describing checkpoint (model/checkpoint.py) plus what --resume needs; plain types only."""
    rng = {"sampler": run.sampler_state, "coin": run.coin_rng.getstate(), "torch": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    return to_cpu({
        "format": FORMAT, "config": model_config(args), "voc": run.voc.to_dict(),
        "encoder": run.encoder.state_dict(), "decoder": run.decoder.state_dict(),
        "encoder_optimizer": run.optimizers[0].state_dict(), "decoder_optimizer": run.optimizers[1].state_dict(),
        "iteration": run.iteration, "loss": loss, "heldout_loss": heldout_loss,
        "args": stored_args(args), "history": [list(h) for h in run.history], "rng": rng,
    })


def stored_args(args: argparse.Namespace) -> dict:
    """The command-line arguments as plain values (torch.load(weights_only=True) reads them back)."""
    return {k: v for k, v in vars(args).items() if v is None or isinstance(v, (bool, int, float, str))}


def save_checkpoint(ckpt: dict, save_dir: Path, name: str | None = None) -> Path:
    """Write {iteration}_checkpoint.tar (or `name`) atomically (a crash never leaves a half-written checkpoint)."""
    save_dir.mkdir(parents=True, exist_ok=True)
    path = save_dir / (name or periodic_name(ckpt["iteration"]))
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def plot_history(history: Sequence[Sequence[float]], path: Path) -> None:
    """Train and held-out loss against iteration, as a PNG (no display needed)."""
    from matplotlib.figure import Figure  # Figure alone renders with Agg, no pyplot global state

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    iterations = [h[0] for h in history]
    ax.plot(iterations, [h[1] for h in history], marker="o", label="train")
    ax.plot(iterations, [h[2] for h in history], marker="s", label="held-out")
    ax.set_xlabel("iteration")
    ax.set_ylabel("token-mean NLL (perplexity = exp)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# ---------------------------------------------------------------- data

def apply_resumed_args(args: argparse.Namespace, stored: dict, parser: argparse.ArgumentParser) -> None:
    """Take the run-defining flags from the checkpoint, warning about any command-line value it overrides."""
    saved = vars(stored_settings(stored))
    for key in RESUMED:
        given = getattr(args, key)
        if given != parser.get_default(key) and given != saved[key]:
            logger.warning("--%s %s ignored: a resumed run keeps its checkpoint's value %s",
                           key.replace("_", "-"), given, saved[key])
        setattr(args, key, saved[key])


# ---------------------------------------------------------------- training loop

def numbered_batches(run: Run, pairs: list[Pair], args: argparse.Namespace,
                     device: torch.device) -> Iterator[tuple[Batch, tuple]]:
    """(batch on device, sampler state after drawing it) for each remaining iteration; under torchrun each rank
    gets its share of the same global batch, normalised by the global token counts."""
    remaining = max(args.iterations - run.iteration, 0)
    rank, size = distributed.world()
    for batch_pairs in random_batches(pairs, args.batch_size, remaining, run.sampler_rng, args.context_dropout):
        state = run.sampler_rng.getstate()
        if size == 1:
            yield make_batch(run.voc, batch_pairs, device, args.max_length), state
        else:
            yield distributed.normalise_globally(make_batch(run.voc, distributed.shard(batch_pairs, rank, size),
                                                            device, args.max_length)), state


class LossWindow:
    """Summed token NLL since the last read, kept on the device so adding to it never syncs."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.total = torch.zeros((), device=self.device)
        self.tokens = 0

    def add(self, nll_sum: torch.Tensor, tokens: int) -> None:
        self.total += nll_sum
        self.tokens += tokens

    def read(self) -> float:
        """Token-mean NLL since the last read (waits for the device), then start again; under torchrun, over
        every rank's tokens (a collective: every rank reads at the same iterations)."""
        total = distributed.all_reduce_sum(self.total)
        tokens = int(distributed.all_reduce_sum(torch.tensor(float(self.tokens), device=self.device)))
        loss = total.item() / tokens if tokens else float("nan")
        self.reset()
        return loss


def train(run: Run, args: argparse.Namespace, pairs: list[Pair], heldout: list[Pair], device: torch.device,
          save_dir: Path, loss_fn: Callable = teacher_forced_loss) -> None:
    """Train from run.iteration to args.iterations, logging, evaluating and checkpointing on the way."""
    if run.iteration >= args.iterations:
        logger.info("already at iteration %d of %d: nothing to train", run.iteration, args.iterations)
        return
    printed, saved = LossWindow(device), LossWindow(device)
    deadline = None if args.minutes is None else time.monotonic() + args.minutes * 60
    quiet = None if distributed.is_main() else True  # None: tqdm's own choice (off without a terminal)
    with logging_redirect_tqdm(), tqdm(total=args.iterations, initial=run.iteration, desc="training",
                                       unit="it", dynamic_ncols=True, disable=quiet) as bar:
        for batch, sampler_state in prefetch(numbered_batches(run, pairs, args, device)):
            teacher_forcing = run.coin_rng.random() < args.teacher_forcing_ratio
            nll_sum = train_step(run.encoder, run.decoder, run.optimizers, batch, args.clip, teacher_forcing, loss_fn,
                                 run.objective)
            printed.add(nll_sum, batch.n_tokens)
            saved.add(nll_sum, batch.n_tokens)
            run.iteration += 1
            run.sampler_state = sampler_state
            bar.update(1)
            if args.dry_run:
                logger.info("dry run: trained on 1 batch, loss %.4f; nothing saved", printed.read())
                return
            if run.iteration % args.print_every == 0:
                loss = printed.read()
                bar.set_postfix(loss=f"{loss:.4f}")
                logger.info("iteration %d: loss %.4f (perplexity %.1f)", run.iteration, loss, safe_exp(loss))
            timed_out = run.iteration % args.print_every == 0 and past(deadline, device)
            last = run.iteration == args.iterations or timed_out
            if run.iteration % args.save_every == 0 or last:
                checkpoint(run, args, saved.read(), heldout, device, save_dir)
            if last:
                if run.iteration < args.iterations:
                    logger.info("--minutes %g have passed: stopped at iteration %d", args.minutes, run.iteration)
                return


def past(deadline: float | None, device: torch.device) -> bool:
    """Whether the deadline (time.monotonic) has passed on any rank (a collective under torchrun)."""
    if deadline is None:
        return False
    late = torch.tensor(float(time.monotonic() > deadline), device=device)
    return bool(distributed.all_reduce_sum(late) > 0)


def checkpoint(run: Run, args: argparse.Namespace, train_loss: float, heldout: list[Pair], device: torch.device,
               save_dir: Path) -> None:
    """Evaluate on the held-out pairs, save the checkpoint, redraw the loss curve (rank 0 alone under torchrun)."""
    if not distributed.is_main():
        return
    heldout_loss = evaluate(run.encoder, run.decoder, run.voc, heldout, args.batch_size, device, args.max_length)
    best, why = serving_choice(run.history, heldout_loss, len(heldout), args.best_min_heldout)
    run.history.append([run.iteration, train_loss, heldout_loss])
    ckpt = checkpoint_dict(run, args, train_loss, heldout_loss, device)
    path = save_checkpoint(ckpt, save_dir)
    if best:  # what make mar packs by default
        save_checkpoint({**ckpt, "chosen_by": why}, save_dir, BEST)
    plot_history(run.history, save_dir / "loss.png")
    logger.info("iteration %d: train loss %.4f (perplexity %.1f), held-out loss %.4f (perplexity %.1f); saved %s%s",
                run.iteration, train_loss, safe_exp(train_loss), heldout_loss, safe_exp(heldout_loss), path,
                f" and {BEST}, {why}" if best else "")


def serving_choice(history: Sequence[Sequence[float]], heldout_loss: float, heldout_pairs: int,
                   min_pairs: int) -> tuple[bool, str]:
    """(whether this checkpoint becomes best_checkpoint.tar, why). The lowest held-out loss picks it where the
    held-out set is large enough to measure progress (Cornell: thousands of pairs; its loss bottoms out before
    the last iteration); on a small corpus (the demo's 31 unseen chatterbot questions) held-out loss only rises
    as the bot learns its corpus, so the latest checkpoint is served."""
    if heldout_pairs >= min_pairs:
        lowest = all(heldout_loss < h[2] for h in history)
        return lowest, f"the lowest held-out loss so far ({heldout_pairs} held-out pairs)"
    return True, (f"the latest checkpoint: {heldout_pairs} held-out pairs are fewer than --best-min-heldout "
                  f"{min_pairs}, too few for held-out loss to choose")


def safe_exp(x: float) -> float:
    return math.exp(min(x, 700.0)) if x == x else float("nan")


# ---------------------------------------------------------------- CLI

def setup(args: argparse.Namespace, parser: argparse.ArgumentParser, device: torch.device):
    """(run, training pairs, held-out pairs, save folder) for a fresh or a resumed run."""
    if args.resume is None:
        args.iterations = args.iterations or DEFAULT_ITERATIONS
        voc, pairs, heldout = load_data(args)
        return new_run(args, voc, device), pairs, heldout, Path(args.save_dir or Path("runs") / args.corpus)
    bot = load_chatbot(args.resume, device, max_length=args.max_length)
    ckpt = bot.checkpoint
    tutorial = bool(ckpt.get("converted_from"))
    missing = [k for k in (TUTORIAL_RESUME_KEYS if tutorial else RESUME_KEYS) if k not in ckpt]
    if missing:
        raise CheckpointError(f"{args.resume} holds a model but no training state to resume ({', '.join(missing)})")
    if tutorial:
        set_model_args(args, ckpt["config"])
        args.iterations = args.iterations or DEFAULT_ITERATIONS
    else:
        apply_resumed_args(args, ckpt["args"], parser)
        args.iterations = args.iterations or ckpt["args"]["iterations"]
        args.data_path = args.data_path or ckpt["args"]["data_path"]
    pairs, heldout = tutorial_data(args, bot.voc) if tutorial else run_data(args, bot.voc)
    logger.info("resuming from %s at iteration %d%s", args.resume, ckpt["iteration"],
                " (a PyTorch Chatbot Tutorial checkpoint)" if tutorial else "")
    return resume_run(bot, args, device), pairs, heldout, Path(args.save_dir or Path(args.resume).parent)


def tutorial_data(args: argparse.Namespace, saved) -> tuple[list[Pair], list[Pair]]:
    """(training, held-out) pairs for a tutorial checkpoint: the corpus's, or where the corpus gives another
    vocabulary than the checkpoint's (the tutorial saves no data settings), the pairs whose words it knows."""
    voc, pairs, heldout = load_data(args, saved)
    if same_tokens(voc) != same_tokens(saved):
        pairs, heldout = (known_pairs(saved, ps) for ps in (pairs, heldout))
        logger.warning("the tutorial checkpoint's vocabulary is not the one %s gives: training on the %d pairs "
                       "(%d held out) whose words it knows", args.data_path, len(pairs), len(heldout))
    return pairs, heldout


def set_model_args(args: argparse.Namespace, config: dict) -> None:
    """The model flags from a converted checkpoint's config (the tutorial's sizes are read off its tensors)."""
    for key in CONFIG_KEYS:
        setattr(args, key, config[key])


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not distributed.is_main():  # rank 0 alone logs under torchrun
        logging.getLogger().setLevel(logging.WARNING)
    try:
        device = distributed.setup(pick_device(args.device))
        run, pairs, heldout, save_dir = setup(args, parser, device)
    except (OSError, ValueError, RuntimeError) as e:  # CheckpointError is a ValueError
        hint = " (run `make data` to fetch the Cornell corpus, or pass --data-path)" \
            if isinstance(e, FileNotFoundError) and args.corpus == "cornell" else ""
        logger.error("%s%s", e, hint)
        return 2
    loss_fn = torch.compile(teacher_forced_loss, dynamic=True) if args.compile else teacher_forced_loss
    logger.info("training on %s%s: %d pairs (%d held out), vocabulary %d, iterations %d -> %d, saving to %s",
                device, f" x {distributed.world()[1]} processes" if distributed.world()[1] > 1 else "", len(pairs),
                len(heldout), run.voc.num_words, run.iteration, args.iterations, save_dir)
    try:
        train(run, args, pairs, heldout, device, save_dir, loss_fn)
    finally:
        distributed.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
