"""Reply quality of greedy, beam-5 and sampling side by side, on the checkpoint's held-out Cornell prompts.

    python -m bench.reply_quality --checkpoint runs/cornell/best_checkpoint.tar

For each decoding mode (the JSON fields bench.serve_bench's scenarios send; sampling seeded per
prompt): the share of replies
that are one of the corpus's five most frequent responses (its generic replies: "i don t know .",
...), distinct-1 and distinct-2 (distinct unigrams and bigrams over all replies, divided by all
unigrams and bigrams), the mean reply length and the mean score (token log-probability).
The held-out split is train/data.py's, with the checkpoint's own data settings.
Last lines: `generic_share_<mode>: X` and `distinct2_<mode>: X` per mode.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence

from bench.workload import DECODING_FIELDS, add_quantize_flag
from model import load_chatbot
from model.schema import parse_options
from train.data import checkpoint_data
from train.runs import add_checkpoint_flags, add_data_path_flag, parse_with_checkpoint

MODES = {"greedy": DECODING_FIELDS["greedy"], "beam5": DECODING_FIELDS["beam5"], "sample": DECODING_FIELDS["sample"]}


def distinct(replies: Sequence[str], n: int) -> float:
    """Distinct n-grams over all replies / all n-grams (0 when there are none)."""
    grams = [tuple(words[i:i + n]) for words in (r.split() for r in replies) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def quality(replies: Sequence[str], scores: Sequence[float], generic: set[str]) -> dict:
    """The figures of one mode's replies."""
    return {"generic_share": sum(r in generic for r in replies) / len(replies), "distinct1": distinct(replies, 1),
            "distinct2": distinct(replies, 2), "mean_words": sum(len(r.split()) for r in replies) / len(replies),
            "mean_score": sum(scores) / len(scores)}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.reply_quality", description=__doc__.splitlines()[0])
    add_checkpoint_flags(p, "a checkpoint with its training settings (train.main writes them)")
    add_data_path_flag(p)
    p.add_argument("--prompts", type=int, default=500, help="held-out prompts to answer (default: 500)")
    add_quantize_flag(p)
    return parse_with_checkpoint(p, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bot = load_chatbot(args.checkpoint, quantize=args.quantize)
    train, heldout = checkpoint_data(bot.checkpoint, bot.voc, args.data_path)
    generic = {reply for reply, _ in Counter(response for _, response in train).most_common(5)}
    prompts = list(dict.fromkeys(query for query, _ in heldout))[: args.prompts]
    print(f"checkpoint {args.checkpoint}; {len(prompts)} held-out prompts; generic replies: {sorted(generic)}")
    print("\n| mode | fields | generic top-5 share | distinct-1 | distinct-2 | mean words | mean score |")
    print("|---|---|---:|---:|---:|---:|---:|")
    results = {}
    for mode, fields in MODES.items():
        # sampling: one seed per prompt (a shared seed would draw the same uniforms for every prompt)
        options = [parse_options({**fields, "seed": i} if "seed" in fields else fields, bot.default_options, {})
                   for i in range(len(prompts))]
        replies = [r for r in bot.reply_batch(prompts, options) if r.error is None]
        results[mode] = quality([r.text for r in replies], [r.score for r in replies], generic)
        q = results[mode]
        print(f"| {mode} | `{fields or '{}'}` | {q['generic_share']:.3f} | {q['distinct1']:.3f} | {q['distinct2']:.3f} "
              f"| {q['mean_words']:.1f} | {q['mean_score']:.3f} |")
    print()
    for mode, q in results.items():
        print(f"generic_share_{mode}: {q['generic_share']:.3f}")
        print(f"distinct2_{mode}: {q['distinct2']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
