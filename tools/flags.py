"""What the chat CLI, the HTTP client and the chat page share: decoding flags, how several replies are printed,
what was not read of a text, and the words that end a chat.

One flag per option of model.schema.OPTIONS, spelled as its JSON field with dashes
(`beam_size` -> `--beam-size`), so `python -m tools.chat`, `python -m tools.client` and a
JSON request say the same thing the same way. No torch: model.schema is plain Python.
"""
from __future__ import annotations

import argparse
import sys
from typing import TextIO

from model.schema import OPTIONS, Reply

QUIT_WORDS = ("q", "quit")  # typed alone, they end the chat loops


def add_decoding_flags(parser: argparse.ArgumentParser) -> None:
    """--max-length, --beam-size, --num-replies, --temperature, --top-k, --top-p, --seed, --no-repeat-ngram-size."""
    group = parser.add_argument_group("decoding", "how replies are chosen (the request's JSON fields of the same "
                                                  "names; unset: the model's or server's defaults, greedy)")
    for option in OPTIONS.values():
        group.add_argument("--" + option.name.replace("_", "-"), dest=option.name, type=option.kind, default=None,
                           help=option.help)


def decoding_fields(args: argparse.Namespace) -> dict:
    """The decoding options given on the command line, by their JSON names."""
    return {name: getattr(args, name) for name in OPTIONS if getattr(args, name, None) is not None}


def reply_lines(replies: list[tuple[str, float]], many: bool) -> list[str]:
    """The lines to print: the reply alone, or with num_replies > 1 each reply with its score, best first."""
    if not many:
        return [replies[0][0]]
    return [f"{text}  ({score:.3f})" for text, score in replies]


def input_notes(unknown_words: list[str], truncated: bool) -> list[str]:
    """What the bot did not read of a text, as the chat CLI, the client and the chat page say it."""
    notes = [f"unknown words dropped: {', '.join(unknown_words)}"] if unknown_words else []
    if truncated:
        notes.append("the text was cut to the model's max_length tokens")
    return notes


def report_notes(reply: Reply, err: TextIO = sys.stderr) -> None:
    """The shared unknown-word policy, on stderr: which words were dropped, and whether the text was cut."""
    for note in input_notes(reply.unknown_words, reply.truncated):
        print(f"({note})", file=err)
