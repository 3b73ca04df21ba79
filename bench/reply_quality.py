"""Reply quality of greedy, beam-5 and sampling side by side: held-out prompts, or prompts of a file.

    python -m bench.reply_quality --checkpoint runs/cornell/best_checkpoint.tar
    python -m bench.reply_quality --checkpoint runs/demo/best_checkpoint.tar \
        --prompt-file bench/prompts/everyday.english.txt
    python -m bench.reply_quality --checkpoint runs/chitchat/best_checkpoint.tar \
        --prompt-file bench/prompts/student_day.english.txt --show --exchanges bench/prompts/two_turns.english.tsv

For each decoding mode (the JSON fields bench.serve_bench's scenarios send; sampling seeded per
prompt; greedy is what a request without options gets from an archive's default model-config, `demo` what it
gets from make demo's archives, greedy with no bigram twice, `chitchat` what the everyday bot's archive
serves, `make demo CORPUS=chitchat`: beam 5, no bigram twice):
- the degenerate rates, over all prompts: `refused` (the handler's 4xx: no known word), and over the
  replies: `empty`, `fffd` (a U+FFFD the prompt did not hold), `stutter` (a token three or more times in
  a row: a word, or a BPE token of the reply as the tokenizer splits it);
- the share of replies that are one of the training responses' five most frequent (the generic replies), the
  share of the most frequent reply (one reply to most prompts), distinct-1 and distinct-2 (distinct token
  unigrams and bigrams over all replies / all of them), the mean reply length in tokens and the mean score
  (token log-probability).
The held-out split is train/data.py's, with the checkpoint's own data settings; a model trained with context
(model/context.py) reads each held-out prompt's earlier turns. A prompt file's prompts that are training queries
are counted (`seen`): an unseen-prompt test needs 0. --show prints every reply; --exchanges answers two-turn
exchanges (first<TAB>second lines), the second turn after the first and the bot's reply to it, and alone.
Last lines: `<rate>_<mode>: X` for empty, fffd, stutter and refused, then `generic_share_<mode>`,
`top_reply_share_<mode>`, `distinct1_<mode>` and `distinct2_<mode>` per mode.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench.workload import DECODING_FIELDS, add_quantize_flag
from model import load_chatbot
from model.context import split_turns
from model.schema import parse_options
from train.data import checkpoint_data
from train.runs import add_checkpoint_flags, add_data_path_flag, parse_with_checkpoint

MODES = {"greedy": DECODING_FIELDS["greedy"], "beam5": DECODING_FIELDS["beam5"], "sample": DECODING_FIELDS["sample"],
         "demo": {"no_repeat_ngram_size": 2},  # what the demo archives serve by default (make demo)
         "chitchat": {"beam_size": 5, "no_repeat_ngram_size": 2}}  # and the everyday bot's (CORPUS=chitchat)


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
            "top_reply_share": max(Counter(r.text for _, r in answered).values(), default=0) / n,
            "distinct1": distinct(tokens, 1), "distinct2": distinct(tokens, 2),
            "mean_tokens": sum(map(len, tokens)) / n, "mean_score": sum(r.score for _, r in answered) / n}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.reply_quality", description=__doc__.splitlines()[0])
    add_checkpoint_flags(p, "a checkpoint with its training settings (train.main writes them)")
    add_data_path_flag(p)
    p.add_argument("--prompts", type=int, default=500, help="held-out prompts to answer (default: 500)")
    p.add_argument("--prompt-file", type=Path, default=None,
                   help="answer these prompts (one a line; bench/prompts/everyday.<language>.txt) instead")
    p.add_argument("--show", action="store_true", help="print each prompt's reply in every mode")
    p.add_argument("--exchanges", type=Path, default=None,
                   help="two-turn exchanges to answer, first<TAB>second a line (bench/prompts/two_turns.english.tsv)")
    add_quantize_flag(p)
    return parse_with_checkpoint(p, argv)


def mode_options(bot, fields: dict, count: int) -> list:
    """One mode's DecodeOptions for `count` prompts; sampling gets one seed per prompt (a shared seed would draw
    the same uniforms for every prompt)."""
    return [parse_options({**fields, "seed": i} if "seed" in fields else fields, bot.default_options, {})
            for i in range(count)]


def seen_prompts(bot, prompts: Sequence[str], train: Sequence) -> list[str]:
    """The prompts that are a training pair's query, as the bot's vocabulary normalises text."""
    queries = {tuple(bot.voc.token_ids(pair[0]) if bot.voc.kind == "bpe" else pair[0].split()) for pair in train}
    seen = []
    for prompt in prompts:
        try:
            ids = bot.voc.encode(prompt, 1000).ids[:-1]
        except ValueError:  # no known word: not a training query
            continue
        if tuple(ids if bot.voc.kind == "bpe" else (bot.voc.index2word[i] for i in ids)) in queries:
            seen.append(prompt)
    return seen


def show_exchanges(bot, path: Path) -> None:
    """Each two-turn exchange in every mode: the first reply, the second after it, and the second alone."""
    exchanges = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if "\t" in line]
    print(f"\nTwo-turn exchanges ({path}; the model reads {bot.context_turns} earlier turns):")
    for mode, fields in MODES.items():
        options = mode_options(bot, fields, len(exchanges))
        firsts = bot.reply_batch([first for first, _ in exchanges], options)
        turns = [[first, reply.text] for (first, _), reply in zip(exchanges, firsts)]
        seconds = bot.reply_batch([second for _, second in exchanges], options, turns)
        alone = bot.reply_batch([second for _, second in exchanges], options)
        for (first, second), r1, r2, r0 in zip(exchanges, firsts, seconds, alone):
            print(f"- {mode}: {first!r} -> {r1.text!r}; {second!r} -> {r2.text!r} (alone: {r0.text!r})")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bot = load_chatbot(args.checkpoint, quantize=args.quantize)
    train, heldout = checkpoint_data(bot.checkpoint, bot.voc, args.data_path)
    generic = {reply for reply, _ in Counter(pair[1] for pair in train).most_common(5)}
    if args.prompt_file:
        prompts = [line.strip() for line in args.prompt_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        earlier = [[] for _ in prompts]
        seen = seen_prompts(bot, prompts, train)
    else:
        first = list({pair[0]: pair for pair in heldout}.values())[: args.prompts]  # a prompt once, with its turns
        prompts, earlier, seen = [p[0] for p in first], [split_turns(p[2]) if len(p) > 2 else [] for p in first], []
    source = args.prompt_file or "held-out"
    print(f"checkpoint {args.checkpoint}; {len(prompts)} {source} prompts ({len(seen)} seen in training"
          f"{': ' + ', '.join(map(repr, seen)) if seen else ''}); generic replies: {sorted(generic)}")
    print("\n| mode | fields | empty | U+FFFD | stutter | refused | generic top-5 share | top reply share "
          "| distinct-1 | distinct-2 | mean tokens | mean score |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    results, answers = {}, {}
    for mode, fields in MODES.items():
        answers[mode] = bot.reply_batch(prompts, mode_options(bot, fields, len(prompts)), earlier)
        results[mode] = q = quality(bot, prompts, answers[mode], generic)
        print(f"| {mode} | `{fields or '{}'}` | " + " | ".join(f"{q[rate]:.3f}" for rate in RATES) +
              f" | {q['generic_share']:.3f} | {q['top_reply_share']:.3f} | {q['distinct1']:.3f} "
              f"| {q['distinct2']:.3f} | {q['mean_tokens']:.1f} | {q['mean_score']:.3f} |")
    if args.show:
        print()
        for i, prompt in enumerate(prompts):
            print(f"{i + 1}. {prompt!r}: " + "; ".join(f"{mode} {answers[mode][i].text!r}" for mode in MODES))
    if args.exchanges:
        show_exchanges(bot, args.exchanges)
    print()
    for rate in RATES:
        for mode, q in results.items():
            print(f"{rate}_{mode}: {q[rate]:.3f}")
    for mode, q in results.items():
        for figure in ("generic_share", "top_reply_share", "distinct1", "distinct2"):
            print(f"{figure}_{mode}: {q[figure]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
