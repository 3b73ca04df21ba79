"""The OpenAI Chat Completions route, inside TorchServe: request fields in, chat.completion objects out.

TorchServe 0.12 sends `/predictions/{model}/{version}/<path>` to the handler with <path> in the request header
`url_path`, so an OpenAI SDK given base_url `http://host:8080/predictions/<model>/<version>/v1` reaches:

  POST v1/chat/completions   the Chat Completions body -> a `chat.completion`, or with "stream": true a
                             text/event-stream of `chat.completion.chunk`s ending in `data: [DONE]`
  GET  v1/models             the served model as a `list` of one `model`

The model is single-turn: it answers the last message, which must be the user's; system, developer and earlier
turns are accepted and not read. A field the model cannot honour gets a 400 naming it, never silence. Errors are
the JSON API's kinds and statuses (wire.ErrorKind) in OpenAI's shape {"error": {"message", "type", "param",
"code"}}, so the SDK raises its matching exception.

Shipped beside the handler in the .mar; pure Python 3.9 (no torch, no TorchServe).
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from wire import BadRequest, ChatRequest, ErrorKind, check_text

CHAT_PATH = "v1/chat/completions"
MODELS_PATH = "v1/models"
EVENT_STREAM = "text/event-stream; charset=utf-8"
DONE = "data: [DONE]\n\n"

# The JSON API's decoding options a request may send as extra body fields (as vLLM takes its own)
EXTRA_OPTIONS = ("beam_size", "top_k", "no_repeat_ngram_size", "min_length")
# OpenAI fields this model cannot honour, each with the values that ask for nothing (accepted) and why not
UNSUPPORTED = {
    "tools": ((None, []), "the model only writes text: it cannot call tools"),
    "tool_choice": ((None, "none"), "the model only writes text: it cannot call tools"),
    "parallel_tool_calls": ((None,), "the model only writes text: it cannot call tools"),
    "functions": ((None, []), "the model only writes text: it cannot call functions"),
    "function_call": ((None, "none"), "the model only writes text: it cannot call functions"),
    "logit_bias": ((None, {}), "token biases are not supported"),
    "logprobs": ((None, False), "token log-probabilities are not returned"),
    "top_logprobs": ((None, 0), "token log-probabilities are not returned"),
    "response_format": ((None, {"type": "text"}), "the model writes free text only (no JSON mode or schema)"),
    "stop": ((None, [], ""), "stop sequences are not supported (a reply ends at the model's end token or "
                             "max_completion_tokens)"),
    "presence_penalty": ((None, 0, 0.0), "use no_repeat_ngram_size to keep a reply from repeating itself"),
    "frequency_penalty": ((None, 0, 0.0), "use no_repeat_ngram_size to keep a reply from repeating itself"),
    "modalities": ((None, ["text"]), "the model writes text only"),
    "audio": ((None,), "the model writes text only"),
    "prediction": ((None,), "predicted outputs are not supported"),
    "reasoning_effort": ((None,), "the model does not reason"),
    "web_search_options": ((None,), "the model cannot search the web"),
    "store": ((None, False), "completions are not stored"),
    "metadata": ((None, {}), "completions are not stored, so they take no metadata"),
    "service_tier": ((None, "auto", "default"), "there is one service tier"),
}
ACCEPTED = ("model", "messages", "max_completion_tokens", "max_tokens", "n", "temperature", "top_p", "seed",
            "stream", "stream_options", "user", *EXTRA_OPTIONS)
ROLES = ("system", "developer", "user", "assistant", "tool", "function")


class RouteError(BadRequest):
    """A BadRequest that names the body field at fault (OpenAI's `param`)."""

    def __init__(self, kind: ErrorKind, message: str, param: str | None = None):
        super().__init__(kind, message)
        self.param = param


@dataclass
class Completion:
    """What the OpenAI route needs beside a ChatRequest: the completion's id, creation time and served model
    name, and whether (and how) to stream it."""

    model: str
    stream: bool = False
    include_usage: bool = False
    id: str = ""
    created: int = 0

    def __post_init__(self):
        self.id = self.id or f"chatcmpl-{uuid.uuid4().hex}"
        self.created = self.created or int(time.time())


@dataclass
class Streamed:
    """A streamed request's state while its batch decodes: its Completion, the TextStream of its first choice
    (model.chatbot), and whether sending to it failed."""

    completion: Completion
    text: Any
    failed: bool = False


def invalid(param: str, message: str) -> RouteError:
    """A 400 InvalidOption about body field `param`."""
    return RouteError(ErrorKind.INVALID_OPTION, f"{param}: {message}", param)


def parse_chat(body: Any, max_chars: int, model_name: str) -> ChatRequest:
    """A ChatRequest (with its Completion) from a Chat Completions body already parsed as JSON; raises BadRequest.

    The request's option_values are the JSON API's names (max_length, num_replies, ...), checked later by
    model.schema.parse_options like any JSON request's.
    """
    if not isinstance(body, dict):
        raise RouteError(ErrorKind.MISSING_TEXT, "the body must be a JSON object with \"model\" and \"messages\"")
    check_fields(body)
    if not isinstance(body.get("model"), str):
        raise invalid("model", f"required: the served model's name, {model_name!r} (GET {MODELS_PATH})")
    if body["model"] != model_name:
        raise RouteError(ErrorKind.NOT_FOUND, f"model: this server serves {model_name!r} (GET {MODELS_PATH}), "
                                              f"not {body['model'][:80]!r}", "model")
    text = last_user_text(body.get("messages"))
    stream = flag(body, "stream")
    completion = Completion(model_name, stream, include_usage=stream_usage(body, stream))
    request = ChatRequest(check_text(text, max_chars), option_values=decoding_options(body))
    request.completion = completion
    return request


def check_fields(body: dict) -> None:
    """A 400 for any field this route does not know, or one it cannot honour at the value asked."""
    for name, value in body.items():
        if name in UNSUPPORTED:
            harmless, why = UNSUPPORTED[name]
            if value not in harmless:
                raise invalid(name, f"not supported by this model: {why}")
        elif name not in ACCEPTED:
            raise invalid(name, f"unknown field; this route takes {', '.join(ACCEPTED)}")


def last_user_text(messages: Any) -> str:
    """The text of the last message, which must be the user's (the model is single-turn: the rest is not read)."""
    if not isinstance(messages, list) or not messages:
        raise RouteError(ErrorKind.MISSING_TEXT, "messages: a non-empty list of {\"role\", \"content\"} is required",
                         "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise RouteError(ErrorKind.MISSING_TEXT, f"messages[{i}]: an object with a role ({', '.join(ROLES)}) "
                                                     "is required", f"messages[{i}]")
    last = len(messages) - 1
    if messages[last]["role"] != "user":
        raise RouteError(ErrorKind.MISSING_TEXT, f"messages[{last}]: the last message must be the user's (role "
                                                 "\"user\"): the bot answers it", f"messages[{last}]")
    return content_text(messages[last].get("content"), f"messages[{last}].content")


def content_text(content: Any, param: str) -> str:
    """A message's text: a string, or a list of {"type": "text", "text"} parts joined; a 400 for other parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RouteError(ErrorKind.MISSING_TEXT, f"{param}: a string or a list of text parts is required", param)
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise invalid(f"{param}[{j}]", f"only text parts are supported (this model reads text), not "
                                           f"{str(kind)[:40]!r}")
        texts.append(part["text"])
    return "\n".join(texts)


def flag(body: dict, name: str) -> bool:
    """A boolean field (null or absent: false)."""
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise invalid(name, f"must be true or false, not {value!r:.40}")
    return bool(value)


def stream_usage(body: dict, stream: bool) -> bool:
    """stream_options.include_usage: whether a stream ends with a usage chunk (only with stream: true)."""
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise invalid("stream_options", "only allowed with \"stream\": true")
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise invalid("stream_options", "the only stream option is include_usage")
    return flag(options, "include_usage")


def decoding_options(body: dict) -> dict:
    """The body's decoding fields under the JSON API's names (model/schema.py OPTIONS); values unchecked.

    temperature 0 asks for the likeliest reply, i.e. greedy search (top_p then chooses nothing); n > 1 without
    sampling is beam search with at least n beams, its n best replies.
    """
    values = {name: body[name] for name in EXTRA_OPTIONS + ("top_p", "seed") if body.get(name) is not None}
    values.update(max_length=reply_limit(body), num_replies=body.get("n"), temperature=body.get("temperature"))
    if values["temperature"] == 0 and not isinstance(values["temperature"], bool):
        if "top_k" in values:
            raise invalid("top_k", "samples, while temperature 0 asks for the likeliest reply: send one of them")
        values.pop("top_p", None)
        values["temperature"] = None
    n = values["num_replies"]
    sampling = any(values.get(name) is not None for name in ("temperature", "top_p", "top_k"))
    if isinstance(n, int) and not isinstance(n, bool) and n > 1 and not sampling:
        beams = values.get("beam_size")
        values["beam_size"] = max(n, beams) if isinstance(beams, int) and not isinstance(beams, bool) else n
    return {name: value for name, value in values.items() if value is not None}


def reply_limit(body: dict) -> Any:
    """max_completion_tokens, or its older name max_tokens: the reply's longest length in tokens."""
    newer, older = body.get("max_completion_tokens"), body.get("max_tokens")
    if newer is not None and older is not None and newer != older:
        raise invalid("max_tokens", "differs from max_completion_tokens: send one of them")
    return newer if newer is not None else older


def option_param(field: str) -> str:
    """The OpenAI body field behind a JSON API option name (for an InvalidOption's param)."""
    return {"max_length": "max_completion_tokens", "num_replies": "n"}.get(field, field)


def error_body(error: BadRequest, param: str | None = None) -> dict:
    """OpenAI's error object for a BadRequest: type invalid_request_error (server_error for a 500), code: our kind."""
    kind = "server_error" if error.kind.status >= 500 else "invalid_request_error"
    return {"error": {"message": error.message, "type": kind, "param": getattr(error, "param", None) or param,
                      "code": error.kind.type_name}}


def finish_reason(ids: list, eos: int) -> str:
    """'stop' when the reply ended at the model's end token, 'length' when max_completion_tokens cut it."""
    return "stop" if ids and ids[-1] == eos else "length"


def usage(reply: Any) -> dict:
    """OpenAI's usage of a model.schema.Reply: the encoded prompt's tokens and every choice's, EOS included."""
    completion_tokens = sum(len(ids) for ids in reply.token_ids)
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": reply.prompt_tokens + completion_tokens}


def completion_body(completion: Completion, reply: Any, eos: int) -> dict:
    """The `chat.completion` object for a model.schema.Reply: one choice per reply, best first."""
    choices = [{"index": i, "message": {"role": "assistant", "content": text, "refusal": None}, "logprobs": None,
                "finish_reason": finish_reason(ids, eos)}
               for i, ((text, _), ids) in enumerate(zip(reply.replies, reply.token_ids))]
    return {"id": completion.id, "object": "chat.completion", "created": completion.created,
            "model": completion.model, "choices": choices, "system_fingerprint": None,
            "usage": usage(reply)}


def chunk(completion: Completion, index: int, delta: dict, finish: str | None = None) -> str:
    """One server-sent event holding a `chat.completion.chunk` of choice `index`."""
    return event({"id": completion.id, "object": "chat.completion.chunk", "created": completion.created,
                  "model": completion.model, "system_fingerprint": None,
                  "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]})


def usage_chunk(completion: Completion, reply: Any) -> str:
    """The last chunk of a stream with stream_options.include_usage: no choices, the usage."""
    return event({"id": completion.id, "object": "chat.completion.chunk", "created": completion.created,
                  "model": completion.model, "system_fingerprint": None, "choices": [],
                  "usage": usage(reply)})


def event(value: dict) -> str:
    """A server-sent event line: data: <JSON>, then a blank line. UTF-8 as it is (the response is UTF-8)."""
    return f"data: {json.dumps(value, ensure_ascii=False)}\n\n"


def models_body(model_name: str) -> dict:
    """GET v1/models: the one served model."""
    return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "torchserve"}]}
