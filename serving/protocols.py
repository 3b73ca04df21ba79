"""The protocol objects: each API the model speaks owns its parsing, its reply bodies, its error bodies and its stream.

The pipeline (pipeline.py) finds a request's protocol by its route (pipeline.protocol_for) and calls it; it builds
no body itself, and neither does an adapter: a refusal of an adapter's own (a body over the size limit, a full
queue, a client that went away) is `protocol_for(route).error(BadRequest(kind, message))`, so every error comes in
its route's shape.

    Protocol                      the contract (below)
    JsonTextApi (here)            route "": a raw text body -> a line of text; {"text", options} -> JSON
    openai_api.OpenAIChat         routes v1/chat/completions and v1/models: OpenAI's objects, errors and SSE chunks
    kserve_runtime/protocols.py   KServe's v1 and v2 envelopes, around the JSON API's requests and replies

Part of the serving core, shipped in the .mar; pure Python 3.9 (no torch, no engine).
"""
from __future__ import annotations

import json
from typing import Any

from model.schema import parse_options

from .wire import JSON_TYPE, TEXT_TYPE, Answered, BadRequest, ChatRequest, Incoming, Response, parse_body


class Protocol:
    """What one API owns. The pipeline calls, per request of a batch:
    parse -> (its ChatRequest is encoded and decoded) -> reply, or error at any stage;
    and for a streamed request (streams() true) start_stream before decoding, token for each token decoded, and
    reply or error for its last piece."""

    def parse(self, request: Incoming, core: Any) -> ChatRequest | Answered:
        """The request's ChatRequest with its checked options (core: max_chars, defaults, limits), or an answer known
        without decoding; raises BadRequest, InvalidOption or NoKnownWordsError."""
        raise NotImplementedError

    def reply(self, request: ChatRequest, core: Any, streamed: Any = None) -> Response:
        """The 200 response of a decoded request (request.reply), or a streamed one's last piece."""
        raise NotImplementedError

    def error(self, error: BadRequest, streamed: Any = None) -> Response:
        """The error's status and body in this protocol's shape (a stream already begun ends with an error event)."""
        raise NotImplementedError

    def streams(self, request: ChatRequest) -> bool:
        """Whether the request is answered in pieces as it is decoded."""
        return False


def input_headers(encoded: Any) -> dict:
    """X-Unknown-Words (the dropped words, comma-separated) and X-Truncated: true, when they apply to the encoded
    text (model.voc.Encoded)."""
    headers = {}
    if encoded.unknown_words:
        headers["X-Unknown-Words"] = ",".join(encoded.unknown_words)
    if encoded.truncated:
        headers["X-Truncated"] = "true"
    return headers


LAST_TURN_ONLY = "last-user-message"  # X-Context-Used when the model read no earlier turn


def context_headers(encoded: Any = None) -> dict:
    """X-Context-Used: what of the conversation the model read (model.voc.Encoded): "last-user-message", or with
    earlier turns "last-user-message; earlier-turns=1; earlier-tokens=7"."""
    if encoded is None or not encoded.earlier_turns:
        return {"X-Context-Used": LAST_TURN_ONLY}
    return {"X-Context-Used": f"{LAST_TURN_ONLY}; earlier-turns={encoded.earlier_turns}; "
                              f"earlier-tokens={encoded.context_tokens}"}


class JsonTextApi(Protocol):
    """The JSON and text API (route ""): a text body gets the reply as a line of text (what the input lost in
    headers), a JSON body {"text", <decoding options>} gets {"reply", "score", "unknown_words", "truncated"}; errors
    are {"code", "type", "message", "unknown_words"} with the kind's status. A JSON body's "context" (the turns
    before the text) is read by a model trained with context; the reply then says what it read (X-Context-Used)."""

    def parse(self, request: Incoming, core: Any) -> ChatRequest:
        chat = parse_body(request.body, request.content_type, core.max_chars)
        chat.options = parse_options(chat.option_values, core.defaults, core.limits)
        return chat

    def reply(self, request: ChatRequest, core: Any, streamed: Any = None) -> Response:
        if request.as_json:  # UTF-8 as it is (a Chinese reply reads as Chinese)
            headers = context_headers(request.encoded) if request.context_sent else {}
            return Response(200, JSON_TYPE, json.dumps(request.reply.body(), ensure_ascii=False) + "\n", headers)
        # a line: curl leaves the prompt on the next; the JSON body says these, the text reply's headers do
        return Response(200, TEXT_TYPE, request.reply.text + "\n", input_headers(request.encoded))

    def error(self, error: BadRequest, streamed: Any = None) -> Response:
        return Response(error.kind.status, JSON_TYPE, json.dumps(error.body()) + "\n")


JSON_TEXT = JsonTextApi()
