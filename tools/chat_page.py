"""A chat page in the browser (Gradio ChatInterface) that talks to the TorchServe inference API over HTTP.

    make ui                                            # after make serve: http://127.0.0.1:7860
    python -m tools.chat_page --url http://127.0.0.1:8080 --port 7860 [--token-auth]

Each message is one POST {"text": ..., "context": <the turns before it>, <decoding options>} to
/predictions/<model>, as `python -m tools.client` sends it: the page holds no model (and imports no torch).
Under a reply it names the dropped unknown words; a rejected message shows the server's error (status, type,
message) as a line of the conversation; an unreachable server or an unloaded model is said so plainly. The decoding
controls (beam size, temperature, ...) appear when the server accepts the options, their
limits read from handler/model-config.yaml. Bound to 127.0.0.1 unless --host says otherwise.
Needs the optional extra: pip install -r requirements-ui.txt (make ui installs it).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import requests

from model.context import SENT_TURNS
from model.schema import OPTIONS, Reply, server_limits
from serving.wire import CONTEXT_FIELD
from tools.client import ServerError, add_server_flags, request_reply, server_session
from tools.flags import input_notes, reply_lines
from tools.server_config import model_config

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home: the page is local
import gradio as gr  # noqa: E402

logger = logging.getLogger(__name__)
# Each control's value that sends nothing (the server's default applies)
UNSET = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": -1, "no_repeat_ngram_size": 0, "num_replies": 1,
         "beam_size": 1, "max_length": 0, "min_length": 1, "presence_penalty": 0.0, "frequency_penalty": 0.0}


def limits() -> dict:
    """The most a request may ask for, from the archive's model-config (the server's own limits)."""
    return server_limits(model_config()["handler"])


def controls(most: dict) -> list:
    """One input per decoding option, in OPTIONS order; each starts at its UNSET value (the server's default)."""
    ranges = {"max_length": (0, most["max_length"], 1), "beam_size": (1, most["beam_size"], 1),
              "num_replies": (1, most["num_replies"], 1), "temperature": (0, 2, 0.05), "top_k": (0, 100, 1),
              "top_p": (0.05, 1, 0.05), "no_repeat_ngram_size": (0, 5, 1),
              "min_length": (1, most["max_length"], 1), "presence_penalty": (-2, 2, 0.1),
              "frequency_penalty": (-2, 2, 0.1)}
    inputs = []
    for name, option in OPTIONS.items():
        label = f"{name} ({UNSET[name]}: {'random' if name == 'seed' else 'unset'})"
        if name in ranges:
            low, high, step = ranges[name]
            inputs.append(gr.Slider(low, high, value=UNSET[name], step=step, label=label, info=option.help))
        else:
            inputs.append(gr.Number(value=UNSET[name], precision=0, label=label, info=option.help))
    return inputs


def fields(values: Sequence) -> dict:
    """The JSON fields of the controls that are set (a control at its UNSET value sends nothing)."""
    chosen = {}
    for name, value in zip(OPTIONS, values):
        if value is None or value == UNSET[name]:
            continue
        chosen[name] = OPTIONS[name].kind(value)
    return chosen


def render(reply: Reply, model: str) -> str:
    """A reply (several with their scores), with the dropped words under it; or the error as one line."""
    if reply.error is None:
        text = "\n\n".join(reply_lines(reply.replies, reply.num_replies > 1)) or "(an empty reply)"
        for note in input_notes(reply.unknown_words, reply.truncated):
            text += f"\n\n*{note}*"
        return text
    if reply.error_type == "ModelNotFoundException":
        return f"**The model {model} is not loaded on the server** ({reply.error}): " \
               "register it, or start the server with `make serve`."
    if reply.error_type == "ServiceUnavailableException":
        return f"**The server has no worker ready for {model}** ({reply.error}): try again in a moment."
    text = f"**Error {reply.status or ''} {reply.error_type}**: {reply.error}"
    if reply.unknown_words:
        text += f"\n\n*unknown words: {', '.join(reply.unknown_words)}*"
    return text


def history_turns(history: list) -> list[str]:
    """The page's conversation so far as turns, oldest first: each message's text (a reply without the notes and
    other replies rendered under it), from Gradio's {"role", "content"} messages."""
    turns = []
    for message in history or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):  # Gradio 6 may give a message's content as parts
            content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        if isinstance(content, str):
            turns.append(content.split("\n\n")[0] if message.get("role") == "assistant" else content)
    return turns


def supports_options(session: requests.Session, url: str, timeout: float) -> bool:
    """Whether the server checks decoding options: an unknown one must get 400 InvalidOption.
    An unreachable server is given the benefit of the doubt (the controls are shown)."""
    try:
        reply = request_reply(session, url, "hello", timeout, {"no_such_option": 1})
    except ServerError:
        return True
    return reply.error_type == "InvalidOption"


def build(session: requests.Session, url: str, model: str, timeout: float, with_controls: bool) -> gr.Blocks:
    """The page: a ChatInterface whose every message is one request to `url`."""

    def respond(message: str, history: list, *values) -> str:
        turns = history_turns(history)[-SENT_TURNS:]
        sent = {**fields(values), CONTEXT_FIELD: turns} if turns else fields(values)
        try:
            return render(request_reply(session, url, message, timeout, sent), model)
        except ServerError as e:
            logger.warning("the server did not answer: %s", e)
            return f"**The server is not reachable** at {url} ({e}): is it running? Start it with `make serve`."

    return gr.ChatInterface(
        respond, title="seq2seq chatbot", analytics_enabled=False, save_history=False, flagging_mode="never",
        description=f"Talking to TorchServe at `{url}`. Unknown words are dropped and named under the reply.",
        additional_inputs=controls(limits()) if with_controls else None,
        additional_inputs_accordion=gr.Accordion("Decoding options", open=False) if with_controls else None,
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.chat_page", description=__doc__.splitlines()[0])
    add_server_flags(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address the page listens on (default: loopback only)")
    parser.add_argument("--port", type=int, default=7860, help="port of the page (default: 7860)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        session, url = server_session(args)
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    page = build(session, url, args.model, args.timeout, supports_options(session, url, args.timeout))
    print(f"chat page on http://{args.host}:{args.port} (talking to {url}); Ctrl-C ends it", flush=True)
    page.launch(server_name=args.host, server_port=args.port, share=False, show_error=True, quiet=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
