"""Compare checkpoints that differ in their tokens (word vs byte-level BPE): held-out bits per byte and coverage.

    python -m bench.tokens_compare --checkpoints runs/compare-word/best_checkpoint.tar \
        runs/compare-bpe/best_checkpoint.tar --data-path data/cornell

Per checkpoint:
- bits per byte: its teacher-forced NLL on the pairs its own training run held out, in bits, over the
  UTF-8 bytes of those replies as the model sees them (decoded from its tokens: normalised lowercase
  words for a word model, the text itself for BPE), plus one byte per reply for its end (EOS). Both
  kinds predict the same thing per byte, whatever their tokens, so the figures compare;
- coverage on --prompts raw queries of the corpus (seeded sample of every pair, any length): the share
  it can answer at all (not 422), the share with no word dropped as unknown, the share not cut to its
  max_length tokens.
Last lines: `bits_per_byte_<name>`, `answerable_<name>`, `no_word_dropped_<name>`, `not_cut_<name>` for
each checkpoint, named by its tokenizer kind (or --names).
"""
from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from model import NoKnownWordsError, load_chatbot
from train.data import Pair, checkpoint_data, load_corpus
from train.engine import make_batch, teacher_forced_loss
from train.runs import add_data_path_flag

CPU = torch.device("cpu")


@torch.no_grad()
def bits_per_byte(bot, pairs: Sequence[Pair], batch_size: int = 64) -> float:
    """Teacher-forced NLL in bits over the replies' UTF-8 bytes (+1 per reply for EOS), float32 weights."""
    nats, size = 0.0, 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start: start + batch_size]
        nats += float(teacher_forced_loss(bot.encoder, bot.decoder, make_batch(bot.voc, chunk, CPU))[1])
        size += sum(len(bot.voc.decode(bot.voc.token_ids(reply)).encode("utf-8")) + 1 for _, reply in chunk)
    return nats / math.log(2) / size


def coverage(bot, prompts: Sequence[str]) -> tuple[float, float, float]:
    """Shares of the prompts: answerable at all (not 422), with no word dropped as unknown, and not cut to
    max_length."""
    answerable = every_word = uncut = 0
    for text in prompts:
        try:
            encoded = bot.encode(text)
        except NoKnownWordsError:
            continue
        answerable += 1
        every_word += not encoded.unknown_words
        uncut += not encoded.truncated
    return answerable / len(prompts), every_word / len(prompts), uncut / len(prompts)


def sample_queries(run: dict, data_path: str | None, count: int, seed: int) -> list[str]:
    """`count` queries of the raw pairs of a run's corpus (its stored flags), drawn with a seed (any length, not
    normalised)."""
    queries = [query for query, _ in load_corpus(run["corpus"], data_path or run.get("data_path"),
                                                 run.get("language", "english"))]
    return random.Random(seed).sample(queries, min(count, len(queries)))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.tokens_compare", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", type=Path, nargs="+", required=True, help="checkpoints written by train.main")
    p.add_argument("--names", nargs="+", default=None, help="a name per checkpoint (default: its tokenizer kind)")
    add_data_path_flag(p)
    p.add_argument("--prompts", type=int, default=2000, help="raw queries for the coverage figures")
    p.add_argument("--seed", type=int, default=0, help="seed of the query sample")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for i, path in enumerate(args.checkpoints):
        bot = load_chatbot(path)  # float32: the weights as trained
        name = args.names[i] if args.names else bot.voc.kind
        _, heldout = checkpoint_data(bot.checkpoint, bot.voc, args.data_path)
        prompts = sample_queries(bot.checkpoint["args"], args.data_path, args.prompts, args.seed)
        rows.append((name, path, len(heldout), bits_per_byte(bot, heldout), *coverage(bot, prompts)))
    print("| model | checkpoint | held-out pairs | bits per byte | answerable | no word dropped | not cut |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, path, pairs, bpb, answerable, every_word, uncut in rows:
        print(f"| {name} | {path} | {pairs} | {bpb:.3f} | {answerable:.3f} | {every_word:.3f} | {uncut:.3f} |")
    for name, _, _, bpb, answerable, every_word, uncut in rows:
        print(f"bits_per_byte_{name}: {bpb:.3f}\nanswerable_{name}: {answerable:.3f}\n"
              f"no_word_dropped_{name}: {every_word:.3f}\nnot_cut_{name}: {uncut:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
