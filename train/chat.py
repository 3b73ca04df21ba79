"""Talk to a trained checkpoint: an interactive loop like the tutorial's evaluateInput, or one reply.

    python -m train.chat                                               # newest runs/**/best_checkpoint.tar
    python -m train.chat --checkpoint runs/demo/1000_checkpoint.tar    # '> ' prompt, q or quit ends
    python -m train.chat --checkpoint runs/demo/1000_checkpoint.tar --text "hello"   # prints only the reply
    python -m train.chat --text "hello" --beam-size 5 --num-replies 3                # decoding options

Unknown words are dropped and named on stderr; input with no known word is an error (exit 1
in the one-shot form). A missing or broken checkpoint exits with code 2.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from client.flags import add_decoding_flags, decoding_fields, input_notes, reply_lines
from model.chatbot import Chatbot, Reply
from model.checkpoint import CheckpointError, from_checkpoint, read_checkpoint
from model.decoding import DecodeOptions, InvalidOption, parse_options
from train.config import RunConfig, add_flags
from train.device import pick_device
from train.runs import add_checkpoint_flags, parse_with_checkpoint

QUIT_WORDS = ("q", "quit")
EXIT_BAD_INPUT = 1
EXIT_BAD_CHECKPOINT = 2
EXIT_USAGE = 2  # as argparse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.chat", description=__doc__.splitlines()[0])
    add_checkpoint_flags(p, "a checkpoint written by train.main, or the PyTorch Chatbot Tutorial's")
    p.add_argument("--text", default=None, help="reply to this one text and exit (no prompt)")
    add_flags(p, RunConfig, only=("device",))
    add_decoding_flags(p)
    return parse_with_checkpoint(p, argv)


def load_chatbot(path: str, device: str) -> Chatbot:
    """read_checkpoint + from_checkpoint; CheckpointError (with the path) for anything unusable."""
    try:
        with open(path, "rb") as f:
            ckpt = read_checkpoint(f)
    except OSError as e:
        raise CheckpointError(f"cannot open checkpoint {path}: {e.strerror or e}") from e
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from e
    return from_checkpoint(ckpt, pick_device(device))


def report_unknown(reply: Reply, err: TextIO) -> None:
    """The shared unknown-word policy: say which words were dropped, and whether the text was cut."""
    for note in input_notes(reply.unknown_words, reply.truncated):
        print(f"({note})", file=err)


def one_shot(bot: Chatbot, text: str, options: DecodeOptions) -> int:
    """Print the reply alone on stdout; exit code 1 for input with no known word."""
    reply = bot.reply(text, options)
    report_unknown(reply, sys.stderr)
    if reply.error:
        print(f"error: {reply.error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print("\n".join(reply_lines(reply.replies, options.num_replies > 1)))
    return 0


def interactive(bot: Chatbot, options: DecodeOptions, stdin: TextIO = sys.stdin) -> int:
    """The tutorial's evaluateInput: read a line after '> ', print 'Bot: ...', until q, quit or end of input."""
    while True:
        print("> ", end="", flush=True)
        line = stdin.readline()
        if not line or line.strip() in QUIT_WORDS:
            return 0
        reply = bot.reply(line, options)
        report_unknown(reply, sys.stderr)
        if reply.error:
            print(f"Error: {reply.error}", file=sys.stderr)
        else:
            print("Bot: " + "\n".join(reply_lines(reply.replies, options.num_replies > 1)), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        bot = load_chatbot(str(args.checkpoint), args.device)
    except (CheckpointError, RuntimeError) as e:  # RuntimeError: --device cuda without a GPU
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_CHECKPOINT
    try:  # no limits here beyond the options' own: the local CLI may decode as long or wide as asked
        options = parse_options(decoding_fields(args), bot.default_options, {})
    except InvalidOption as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.text is not None:
        return one_shot(bot, args.text, options)
    print(f"Chatting with {args.checkpoint} (q or quit ends)", file=sys.stderr)
    return interactive(bot, options)


if __name__ == "__main__":
    sys.exit(main())
