"""Talk to the chatbot served by TorchServe: one question, or a chat loop.

    python -m tools.client "hello there"            # one-shot: prints only the reply
    python -m tools.client                          # '> ' prompt, 'Bot: ...' replies; q, quit or Ctrl-D ends
    python -m tools.client --beam-size 5 --num-replies 3 "hi"   # decoding options, as tools.chat's
    TOKEN_AUTH=1 python -m tools.client "hi"        # token mode: send the inference key of key_file.json

It behaves like the local chat CLI (python -m tools.chat), but asks the server: each text is sent
as JSON {"text": ..., <decoding options>} and answered {"reply": ..., "score": ..., "unknown_words":
[...], "replies": [...]} (handler/seq2seq_handler.py), read back as the same model.schema.Reply the
local CLI prints. Dropped unknown words are named on stderr, as the CLI does. Exit status: 0 replied,
1 the server rejected the text (one-shot), 2 the server could not be reached. Needs no torch.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import requests

from model.context import SENT_TURNS
from model.schema import Reply
from serving.wire import CONTEXT_FIELD
from tools.flags import QUIT_WORDS, add_decoding_flags, decoding_fields, reply_lines, report_notes
from tools.server_config import MODEL_NAME, read_properties

INFERENCE_ADDRESS = read_properties()["inference_address"]


class ServerError(Exception):
    """The server could not be reached or did not answer as a TorchServe chatbot does."""


def inference_key(key_file: Path) -> str:
    """The inference key from TorchServe's key_file.json (written where TorchServe was started)."""
    try:
        return json.loads(key_file.read_text())["inference"]["key"]
    except FileNotFoundError:
        raise ServerError(f"{key_file} not found: token mode needs the key file TorchServe writes "
                          "in the directory it was started from (make serve TOKEN_AUTH=1)") from None
    except (ValueError, KeyError, TypeError):
        raise ServerError(f"{key_file} is not a TorchServe key file (no inference key)") from None


def request_reply(session: requests.Session, url: str, text: str, timeout: float, fields: dict | None = None) -> Reply:
    """POST {"text": ..., **fields}: the Reply, or one whose error says why there is none; ServerError when
    nothing answers or the answer is not JSON."""
    try:
        response = session.post(url, json={"text": text, **(fields or {})}, timeout=timeout)
    except requests.RequestException as e:
        raise ServerError(f"cannot reach {url}: {e}") from e
    try:
        body = response.json()
    except ValueError:
        raise ServerError(f"{url} answered {response.status_code} without JSON: {response.text[:200]}") from None
    return Reply.from_body(body, response.status_code)


def describe_error(reply: Reply) -> str:
    """'message (422 NoKnownWords)' for a rejected text."""
    return f"{reply.error} ({reply.status} {reply.error_type})"


def ask(session: requests.Session, url: str, text: str, timeout: float,
        fields: dict | None = None) -> tuple[bool, str, Reply]:
    """Send one text (and decoding fields): (True, reply lines, reply), or (False, error message, reply)."""
    reply = request_reply(session, url, text, timeout, fields)
    if reply.error is None:
        return True, "\n".join(reply_lines(reply.replies, reply.num_replies > 1)), reply
    return False, describe_error(reply), reply


def chat(session: requests.Session, url: str, timeout: float, fields: dict) -> int:
    """The chat CLI's loop: read a line after '> ', print 'Bot: ...', until q, quit or end of input. Each request
    sends the turns before it as "context" (a model trained with context reads them)."""
    turns: list[str] = []
    while True:
        print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() in QUIT_WORDS:
            return 0
        sent = {**fields, CONTEXT_FIELD: turns[-SENT_TURNS:]} if turns else fields
        ok, message, reply = ask(session, url, line.rstrip("\n"), timeout, sent)
        report_notes(reply)
        if ok:
            turns += [line.strip(), reply.text]
            print(f"Bot: {message}", flush=True)
        else:
            print(f"Error: {message}", file=sys.stderr)


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """--url, --model, --token-auth, --key-file, --timeout: where the server is and how to reach it."""
    parser.add_argument("--url", default=os.environ.get("TS_INFERENCE_URL", INFERENCE_ADDRESS),
                        help=f"TorchServe inference address (env TS_INFERENCE_URL; default {INFERENCE_ADDRESS})")
    parser.add_argument("--model", default=MODEL_NAME, help=f"registered model name (default: {MODEL_NAME})")
    parser.add_argument("--token-auth", action="store_true", default=os.environ.get("TOKEN_AUTH") == "1",
                        help="send the inference key from --key-file (default on when TOKEN_AUTH=1)")
    parser.add_argument("--key-file", type=Path, default=Path(os.environ.get("TS_KEY_FILE", "key_file.json")),
                        help="TorchServe key file for token mode (env TS_KEY_FILE)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each reply")


def server_session(args: argparse.Namespace) -> tuple[requests.Session, str]:
    """(session with the inference key in token mode, predictions URL); ServerError without a key file."""
    session = requests.Session()
    if args.token_auth:
        session.headers["Authorization"] = f"Bearer {inference_key(args.key_file)}"
    return session, f"{args.url.rstrip('/')}/predictions/{args.model}"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.client", description=__doc__.split("\n")[0])
    parser.add_argument("text", nargs="?", help="one question to ask; without it, chat interactively")
    add_server_flags(parser)
    add_decoding_flags(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        session, url = server_session(args)
        if args.text is None:
            return chat(session, url, args.timeout, decoding_fields(args))
        ok, message, reply = ask(session, url, args.text, args.timeout, decoding_fields(args))
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report_notes(reply)
    if not ok:
        print(f"error: {message}", file=sys.stderr)
        return 1
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
