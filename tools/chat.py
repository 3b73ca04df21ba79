"""Talk to a trained checkpoint: an interactive loop like the tutorial's evaluateInput, or one reply.

    python -m tools.chat                                               # newest runs/**/best_checkpoint.tar
    python -m tools.chat --checkpoint runs/demo/1000_checkpoint.tar    # '> ' prompt, q or quit ends
    python -m tools.chat --checkpoint runs/demo/1000_checkpoint.tar --text "hello"   # prints only the reply
    python -m tools.chat --text "hello" --beam-size 5 --num-replies 3                # decoding options

Unknown words are dropped and named on stderr; input with no known word is an error (exit 1
in the one-shot form). A missing or broken checkpoint exits with code 2.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from model import CheckpointError, load_chatbot
from model.chatbot import Chatbot
from model.context import SENT_TURNS
from model.schema import DecodeOptions, InvalidOption, parse_options
from tools.flags import QUIT_WORDS, add_decoding_flags, decoding_fields, reply_lines, report_notes
from train.config import RunConfig, add_flags
from train.device import pick_device
from train.runs import add_checkpoint_flags, parse_with_checkpoint

EXIT_BAD_INPUT = 1
EXIT_BAD_CHECKPOINT = 2
EXIT_USAGE = 2  # as argparse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.chat", description=__doc__.splitlines()[0])
    add_checkpoint_flags(p, "a checkpoint written by train.main, or the PyTorch Chatbot Tutorial's")
    p.add_argument("--text", default=None, help="reply to this one text and exit (no prompt)")
    add_flags(p, RunConfig, only=("device",))
    add_decoding_flags(p)
    return parse_with_checkpoint(p, argv)


def one_shot(bot: Chatbot, text: str, options: DecodeOptions) -> int:
    """Print the reply alone on stdout; exit code 1 for input with no known word."""
    reply = bot.reply(text, options)
    report_notes(reply)
    if reply.error:
        print(f"error: {reply.error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print("\n".join(reply_lines(reply.replies, options.num_replies > 1)))
    return 0


def interactive(bot: Chatbot, options: DecodeOptions, stdin: TextIO = sys.stdin) -> int:
    """The tutorial's evaluateInput: read a line after '> ', print 'Bot: ...', until q, quit or end of input. A bot
    trained with context reads the turns before each line (model/context.py)."""
    turns: list[str] = []
    while True:
        print("> ", end="", flush=True)
        line = stdin.readline()
        if not line or line.strip() in QUIT_WORDS:
            return 0
        reply = bot.reply(line, options, turns[-SENT_TURNS:])
        report_notes(reply)
        if reply.error:
            print(f"Error: {reply.error}", file=sys.stderr)
        else:
            turns += [line.strip(), reply.text]
            print("Bot: " + "\n".join(reply_lines(reply.replies, options.num_replies > 1)), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        bot = load_chatbot(args.checkpoint, pick_device(args.device))
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
