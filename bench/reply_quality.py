"""Reply quality of greedy, beam-5 and sampling side by side: held-out prompts, or prompts of a file.

    python -m bench.reply_quality --checkpoint runs/cornell/best_checkpoint.tar
    python -m bench.reply_quality --checkpoint runs/demo/best_checkpoint.tar \
        --prompt-file bench/prompts/everyday.english.txt

For each decoding mode (the JSON fields bench.serve_bench's scenarios send; sampling seeded per
prompt; greedy is what a request without options gets from an archive's default model-config, `demo` what it
gets from make demo's archives, greedy with no bigram twice):
- the degenerate rates, over all prompts: `refused` (the handler's 4xx: no known word), and over the
  replies: `empty`, `fffd` (a U+FFFD the prompt did not hold), `stutter` (a token three or more times in
  a row: a word, or a BPE token of the reply as the tokenizer splits it);
- the share of replies that are one of the training responses' five most frequent (the generic replies),
  distinct-1 and distinct-2 (distinct token unigrams and bigrams over all replies / all of them), the mean
  reply length in tokens and the mean score (token log-probability).
The held-out split is train/data.py's, with the checkpoint's own data settings.
Last lines: `<rate>_<mode>: X` for empty, fffd, stutter and refused, then `generic_share_<mode>` and
`distinct2_<mode>` per mode.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench.workload import DECODING_FIELDS, add_quantize_flag
from model import load_chatbot
from model.schema import parse_options
from train.data import checkpoint_data
from train.runs import add_checkpoint_flags, add_data_path_flag, parse_with_checkpoint

MODES = {"greedy": DECODING_FIELDS["greedy"], "beam5": DECODING_FIELDS["beam5"], "sample": DECODING_FIELDS["sample"],
         "demo": {"no_repeat_ngram_size": 2}}  # what the demo archives serve by default (make demo)


RATES = ("empty", "fffd", "stutter", "refused")
STUTTER = 3  # a token this many times in a row


def distinct(replies: Sequence[list], n: int) -> float:
    """Distinct n-grams over all replies (token lists) / all n-grams (0 when there are none)."""
    grams = [tuple(tokens[i:i + n]) for tokens in replies for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def stutters(tokens: Sequence) -> bool:
    """Whether a token comes STUTTER or more times in a row."""
    return any(len(set(tokens[i:i + STUTTER])) == 1 for i in range(len(tokens) - STUTTER + 1))


def reply_tokens(bot, text: str) -> list:
    """The reply's tokens: its words, or its BPE tokens as the tokenizer splits the text."""
    return text.split() if bot.voc.kind == "word" else bot.voc.token_ids(text)


def quality(bot, prompts: Sequence[str], replies: Sequence, generic: set[str]) -> dict:
    """The figures of one mode's replies (model.schema.Reply, one per prompt, refused ones included)."""
    answered = [(p, r) for p, r in zip(prompts, replies) if r.error is None]
    tokens = [reply_tokens(bot, r.text) for _, r in answered]
    n = max(len(answered), 1)
    return {"refused": (len(replies) - len(answered)) / len(replies),
            "empty": sum(not r.text.strip() for _, r in answered) / n,
            "fffd": sum("\ufffd" in r.text and "\ufffd" not in p for p, r in answered) / n,
            "stutter": sum(stutters(t) for t in tokens) / n,
            "generic_share": sum(r.text in generic for _, r in answered) / n,
            "distinct1": distinct(tokens, 1), "distinct2": distinct(tokens, 2),
            "mean_tokens": sum(map(len, tokens)) / n, "mean_score": sum(r.score for _, r in answered) / n}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.reply_quality", description=__doc__.splitlines()[0])
    add_checkpoint_flags(p, "a checkpoint with its training settings (train.main writes them)")
    add_data_path_flag(p)
    p.add_argument("--prompts", type=int, default=500, help="held-out prompts to answer (default: 500)")
    p.add_argument("--prompt-file", type=Path, default=None,
                   help="answer these prompts (one a line; bench/prompts/everyday.<language>.txt) instead")
    add_quantize_flag(p)
    return parse_with_checkpoint(p, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bot = load_chatbot(args.checkpoint, quantize=args.quantize)
    train, heldout = checkpoint_data(bot.checkpoint, bot.voc, args.data_path)
    generic = {reply for reply, _ in Counter(response for _, response in train).most_common(5)}
    if args.prompt_file:
        prompts = [line.strip() for line in args.prompt_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        prompts = list(dict.fromkeys(query for query, _ in heldout))[: args.prompts]
    source = args.prompt_file or "held-out"
    print(f"checkpoint {args.checkpoint}; {len(prompts)} {source} prompts; generic replies: {sorted(generic)}")
    print("\n| mode | fields | empty | U+FFFD | stutter | refused | generic top-5 share | distinct-1 | distinct-2 "
          "| mean tokens | mean score |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    results = {}
    for mode, fields in MODES.items():
        # sampling: one seed per prompt (a shared seed would draw the same uniforms for every prompt)
        options = [parse_options({**fields, "seed": i} if "seed" in fields else fields, bot.default_options, {})
                   for i in range(len(prompts))]
        results[mode] = q = quality(bot, prompts, bot.reply_batch(prompts, options), generic)
        print(f"| {mode} | `{fields or '{}'}` | " + " | ".join(f"{q[rate]:.3f}" for rate in RATES) +
              f" | {q['generic_share']:.3f} | {q['distinct1']:.3f} | {q['distinct2']:.3f} | {q['mean_tokens']:.1f} "
              f"| {q['mean_score']:.3f} |")
    print()
    for rate in RATES:
        for mode, q in results.items():
            print(f"{rate}_{mode}: {q[rate]:.3f}")
    for mode, q in results.items():
        print(f"generic_share_{mode}: {q['generic_share']:.3f}")
        print(f"distinct2_{mode}: {q['distinct2']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
