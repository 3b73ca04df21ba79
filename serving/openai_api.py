"""The OpenAI Chat Completions route, engine-free: request fields in, chat.completion objects and stream events out.

Each engine puts the route under its own base URL: TorchServe 0.12 sends `/predictions/{model}/{version}/<path>` to
the handler with <path> in the request header `url_path` (base_url `http://host:8080/predictions/<model>/<version>/v1`);
the KServe runtime serves it under KServe's `/openai` prefix (base_url `http://host:8180/openai/v1`). Either way:

  POST v1/chat/completions   the Chat Completions body -> a `chat.completion`, or with "stream": true a
                             text/event-stream of `chat.completion.chunk`s ending in `data: [DONE]`
  GET  v1/models             the served model as a `list` of one `model`

The model answers the last message, which must be the user's. A model trained with context (model/context.py) also
reads the user and assistant turns just before it; system, developer and tool messages, and older turns, are
accepted and not read. Every response says what was read (X-Context-Used: last-user-message, or with earlier
turns "last-user-message; earlier-turns=1; earlier-tokens=7"). Each body
field is honoured, ignored (metadata, caching and routing hints) or refused with a 400 naming it (it asks for
output this model cannot give): the one table FIELDS. An unknown field is accepted and logged once. Errors are
the JSON API's kinds and statuses (wire.ErrorKind) in OpenAI's shape {"error": {"message", "type", "param",
"code"}}, so the SDK raises its matching exception.

Part of the serving core, shipped in the .mar; pure Python 3.9 (no torch, no engine).
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from model.schema import InvalidOption, parse_options
from model.voc import EOS_token

from .protocols import Protocol, context_headers, input_headers
from .wire import (
    FORM_TYPES,
    JSON_TYPE,
    Answered,
    BadRequest,
    ChatRequest,
    ErrorKind,
    Incoming,
    Response,
    check_text,
    load_json,
    media_type,
    to_text,
)

logger = logging.getLogger(__name__)

CHAT_PATH = "v1/chat/completions"
MODELS_PATH = "v1/models"
EVENT_STREAM = "text/event-stream; charset=utf-8"
DONE = "data: [DONE]\n\n"

# The JSON API's decoding options a request may send as extra body fields (as vLLM takes its own)
EXTRA_OPTIONS = ("beam_size", "top_k", "no_repeat_ngram_size", "min_length")
HONOURED, IGNORED, REFUSED = "honoured", "ignored", "refused"


@dataclass(frozen=True)
class Field:
    """How the route treats one Chat Completions body field: honoured; ignored (it only carries metadata, caching
    or routing hints); or refused with a 400 naming it, unless its value is one of `harmless` (values that ask for
    nothing), because it asks for output this model cannot give. note: how it maps, or why it is ignored or
    refused (the README's table says the same)."""

    policy: str
    note: str
    harmless: tuple = ()


NO_TOOLS = "the model only writes text: it cannot call tools"
# The one table of the route's fields (README: "OpenAI-compatible API"). A field not in it is accepted and logged
# once at WARNING by name: a server that lags the SDK by a release must not break every client that upgrades.
FIELDS = {
    "model": Field(HONOURED, "must be the served model's name (GET v1/models)"),
    "messages": Field(HONOURED, "the last message, which must be the user's, is answered; a model trained with "
                                "context reads the turns before it too (X-Context-Used)"),
    "max_completion_tokens": Field(HONOURED, "the reply's longest length in tokens, EOS included; above the "
                                             "model's limit it is clamped to it"),
    "max_tokens": Field(HONOURED, "the older name of max_completion_tokens"),
    "n": Field(HONOURED, "replies: n samples, or without sampling the n best of a beam search"),
    "temperature": Field(HONOURED, "> 0 samples at that temperature; 0 is greedy search"),
    "top_p": Field(HONOURED, "< 1 samples from the nucleus; 0 is greedy search; 1 (keep everything) changes nothing"),
    "seed": Field(HONOURED, "the same seed gives the same sampled replies, alone or in any batch"),
    "stop": Field(HONOURED, "a string or a list of up to 4: the reply ends before the first one it holds"),
    "presence_penalty": Field(HONOURED, "-2..2, subtracted from the logit of every token already in the reply"),
    "frequency_penalty": Field(HONOURED, "-2..2, times the token's count so far, subtracted from its logit"),
    "stream": Field(HONOURED, "server-sent events, a chunk per token as it is decoded"),
    "stream_options": Field(HONOURED, "include_usage: a last chunk with the usage; include_obfuscation is ignored"),
    **{name: Field(HONOURED, "this model's own decoding option (the JSON API's field)") for name in EXTRA_OPTIONS},
    **{name: Field(IGNORED, why) for name, why in (
        ("user", "an end-user id, for abuse monitoring"),
        ("safety_identifier", "an end-user id, for abuse monitoring"),
        ("prompt_cache_key", "a caching hint; nothing is cached"),
        ("prompt_cache_retention", "a caching hint; nothing is cached"),
        ("metadata", "tags for stored completions; nothing is stored"),
        ("store", "nothing is stored"),
        ("service_tier", "there is one service tier"),
        ("verbosity", "a hint for reasoning models' length; max_completion_tokens bounds a reply"),
        ("reasoning_effort", "the model does not reason"),
        ("parallel_tool_calls", "with no tools there are no calls to run in parallel"),
        ("prediction", "a latency hint: the reply is the same without it"),
    )},
    "tools": Field(REFUSED, NO_TOOLS, (None, [])),
    "tool_choice": Field(REFUSED, NO_TOOLS, (None, "none", "auto")),
    "functions": Field(REFUSED, NO_TOOLS, (None, [])),
    "function_call": Field(REFUSED, NO_TOOLS, (None, "none", "auto")),
    "logit_bias": Field(REFUSED, "its token ids are OpenAI's tokenizer's, not this model's", (None, {})),
    "logprobs": Field(REFUSED, "token log-probabilities are not returned", (None, False)),
    "top_logprobs": Field(REFUSED, "token log-probabilities are not returned", (None, 0)),
    "response_format": Field(REFUSED, "the model writes free text only (no JSON mode or schema)",
                             (None, {"type": "text"})),
    "modalities": Field(REFUSED, "the model writes text only", (None, ["text"])),
    "audio": Field(REFUSED, "the model writes text only", (None,)),
    "web_search_options": Field(REFUSED, "the model cannot search the web", (None,)),
}
STREAM_OPTIONS = {"include_usage": HONOURED, "include_obfuscation": IGNORED}
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
MAX_STOPS = 4
MAX_LOGGED_UNKNOWN = 64  # distinct unknown field names logged; a client inventing names cannot fill the log
_logged_unknown: set = set()


class RouteError(BadRequest):
    """A BadRequest that names the body field at fault (OpenAI's `param`)."""

    def __init__(self, kind: ErrorKind, message: str, param: str | None = None):
        super().__init__(kind, message)
        self.param = param


@dataclass
class Completion:
    """What the OpenAI route needs beside a ChatRequest: the completion's id, creation time and served model
    name, whether (and how) to stream it, and its stop strings."""

    model: str
    stream: bool = False
    include_usage: bool = False
    id: str = ""
    created: int = 0
    stop: tuple = ()

    def __post_init__(self):
        self.id = self.id or f"chatcmpl-{uuid.uuid4().hex}"
        self.created = self.created or int(time.time())


@dataclass
class Streamed:
    """A streamed request's state while its batch decodes: its Completion, the ChoiceText of its first choice (fed
    as tokens are decoded), and whether sending to it failed."""

    completion: Completion
    first: Any  # ChoiceText
    failed: bool = False
    unsent: str = ""  # pieces not emitted yet (a core answering without an emit function sends them last)


def invalid(param: str, message: str) -> RouteError:
    """A 400 InvalidOption about body field `param`."""
    return RouteError(ErrorKind.INVALID_OPTION, f"{param}: {message}", param)


def parse_chat(body: Any, max_chars: int, model_name: str, limits: dict) -> ChatRequest:
    """A ChatRequest (with its Completion) from a Chat Completions body already parsed as JSON; raises BadRequest.

    limits: the server's (model.schema.server_limits): a longer max_completion_tokens is clamped to its max_length.
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
    completion = Completion(model_name, stream, include_usage=stream_usage(body, stream), stop=stop_strings(body))
    request = ChatRequest(check_text(text, max_chars), option_values=decoding_options(body, limits))
    request.completion = completion
    request.earlier_turns = earlier_turns(body["messages"])
    return request


def check_fields(body: dict) -> None:
    """A 400 for a refused field at a value that asks for something; an unknown field is logged (once per name)."""
    for name, value in body.items():
        spec = FIELDS.get(name)
        if spec is None:
            log_unknown(name)
        elif spec.policy == REFUSED and value not in spec.harmless:
            raise invalid(name, f"not supported by this model: {spec.note}")


def log_unknown(name: str, where: str = "") -> None:
    """Log an unknown field's name (never its value) at WARNING, the first time it is seen."""
    key = where + str(name)[:80]
    if key in _logged_unknown or len(_logged_unknown) >= MAX_LOGGED_UNKNOWN:
        return
    _logged_unknown.add(key)
    logger.warning("the OpenAI route accepted and ignored an unknown field %r (a newer client's?)", key)


def stop_strings(body: dict) -> tuple:
    """`stop`: a string or a list of up to 4 strings (empty ones are dropped), as a tuple."""
    value = body.get("stop")
    stops = [value] if isinstance(value, str) else value if value is not None else []
    if not isinstance(stops, list) or len(stops) > MAX_STOPS or not all(isinstance(x, str) for x in stops):
        raise invalid("stop", f"must be a string or a list of up to {MAX_STOPS} strings")
    return tuple(x for x in stops if x)


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


def earlier_turns(messages: list) -> list[str]:
    """The user and assistant turns before the last message, oldest first (what a model trained with context
    reads the last of); a turn whose content is not text reads as '' (it was said, its words unknown)."""
    turns = []
    for message in messages[:-1]:
        if message["role"] in ("user", "assistant"):
            try:
                turns.append(content_text(message.get("content"), "messages"))
            except BadRequest:  # an image or audio part in an old turn: the last turn alone must be text
                turns.append("")
    return turns


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
    if not isinstance(options, dict):
        raise invalid("stream_options", "must be an object such as {\"include_usage\": true}")
    for name in options:
        if name not in STREAM_OPTIONS:
            log_unknown(name, "stream_options.")
    return flag(options, "include_usage")


def decoding_options(body: dict, limits: dict) -> dict:
    """The body's decoding fields under the JSON API's names (model/schema.py OPTIONS); values unchecked.

    Sampling is on when the protocol asks for it: temperature > 0, 0 < top_p < 1 or top_k. temperature 0 is greedy
    search, and so is top_p 0 (a nucleus of the likeliest token alone); top_p 1 keeps every token, so it alone
    changes nothing. n > 1 without sampling is beam search with at
    least n beams, its n best replies. A max_completion_tokens over limits' max_length is clamped to it.
    """
    names = EXTRA_OPTIONS + ("top_p", "seed", "presence_penalty", "frequency_penalty")
    values = {name: body[name] for name in names if body.get(name) is not None}
    values.update(max_length=reply_limit(body, limits), num_replies=body.get("n"),
                  temperature=body.get("temperature"))
    if values.get("top_p") == 1 and not isinstance(values["top_p"], bool):
        values.pop("top_p")
    if values.get("top_p") == 0 and not isinstance(values["top_p"], bool):  # a nucleus of the likeliest token
        values.pop("top_p")
        values.pop("top_k", None)
        values["temperature"] = None
    if values["temperature"] == 0 and not isinstance(values["temperature"], bool):
        if "top_k" in values:
            raise invalid("top_k", "samples, while temperature 0 asks for the likeliest reply: send one of them")
        values.pop("top_p", None)
        values["temperature"] = None
    n = values["num_replies"]
    sampling = any(values.get(name) is not None for name in ("temperature", "top_p", "top_k"))
    if is_int(n) and n > 1 and not sampling:
        beams = values.get("beam_size")
        values["beam_size"] = max(n, beams) if is_int(beams) else n
    return {name: value for name, value in values.items() if value is not None}


def is_int(value: Any) -> bool:
    """An integer that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def reply_limit(body: dict, limits: dict) -> Any:
    """max_completion_tokens, or its older name max_tokens, clamped to limits' max_length: OpenAI's field is an
    upper bound, and clients send 256 to 4096 whatever the model. Other values go on unchecked (parse_options
    names what is wrong with them)."""
    newer, older = body.get("max_completion_tokens"), body.get("max_tokens")
    if newer is not None and older is not None and newer != older:
        raise invalid("max_tokens", "differs from max_completion_tokens: send one of them")
    value = newer if newer is not None else older
    most = limits.get("max_length")
    return min(value, most) if is_int(value) and most is not None else value


def option_param(field: str, body: dict) -> str:
    """The OpenAI body field behind a JSON API option name (for an InvalidOption's param), as the client named it:
    max_tokens where it sent the older name of max_completion_tokens."""
    if field == "max_length" and body.get("max_completion_tokens") is None and "max_tokens" in body:
        return "max_tokens"
    return {"max_length": "max_completion_tokens", "num_replies": "n"}.get(field, field)


def error_body(error: BadRequest, param: str | None = None) -> dict:
    """OpenAI's error object for a BadRequest: type invalid_request_error (server_error for a 500), code: our kind."""
    kind = "server_error" if error.kind.status >= 500 else "invalid_request_error"
    return {"error": {"message": error.message, "type": kind, "param": getattr(error, "param", None) or param,
                      "code": error.kind.type_name}}


def finish_reason(ids: list, eos: int) -> str:
    """'stop' when the reply ended at the model's end token, 'length' when max_completion_tokens cut it."""
    return "stop" if ids and ids[-1] == eos else "length"


@dataclass
class Choice:
    """One choice as the client gets it: its text (cut before a stop string), finish_reason, and the tokens the
    model spent on it (to the end of the stop string, or EOS included)."""

    text: str
    finish_reason: str
    tokens: int


def stop_at(text: str, stops: tuple) -> int | None:
    """Where the first stop string in `text` begins (None: none)."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


class ChoiceText:
    """One choice's text as its tokens come, cut before the first stop string it holds: the one accumulator of a
    choice's text, streamed (push gives what may be sent now) or not (every token pushed, then finish).

    stream: a model.chatbot.TextStream (the text the tokens so far decode to, a character split across byte-level
    tokens held back); generation stops at the token after which that text holds a stop string."""

    def __init__(self, stream: Any, stops: tuple):
        self.stream, self.stop, self.tokens = stream, StopFilter(stops), 0

    def push(self, token: int) -> str:
        """What one more token adds to the text that may be sent ('' once a stop string has ended the choice)."""
        if self.stop.stopped:
            return ""
        self.tokens += 1
        return self.stop.push(self.stream.push(token))

    def finish(self, text: str, ids: list, eos: int) -> tuple[str, Choice]:
        """(what is left to send, the Choice): cut where a stop string ended it, else the reply's whole `text`."""
        if self.stop.stopped:
            return "", Choice(self.stop.sent, "stop", self.tokens)
        return self.stop.finish(text), Choice(text, finish_reason(ids, eos), len(ids))


def settle(completion: Completion, reply: Any, stream: Any, eos: int, first: ChoiceText | None = None) -> list:
    """Each reply of a model.schema.Reply as [deltas not sent yet, Choice], its text accumulated token by token by a
    ChoiceText: `first` for the first choice where it was fed as the reply streamed, a new one (stream(): a fresh
    TextStream) for every other choice, one delta per token."""
    settled = []
    for i, ((text, _), ids) in enumerate(zip(reply.replies, reply.token_ids)):
        accumulator, deltas = first, []
        if i > 0 or accumulator is None or not accumulator.tokens:
            accumulator = ChoiceText(stream(), completion.stop)
            deltas = [accumulator.push(token) for token in ids]
        rest, choice = accumulator.finish(text, ids, eos)
        settled.append((deltas + [rest], choice))
    return settled


class StopFilter:
    """A streamed choice's text with its stop strings applied: push(delta) gives what may be sent now, never text
    that a stop string completed later would remove (a suffix that could still begin one is held back)."""

    def __init__(self, stops: tuple):
        self.stops = stops
        self.text = ""  # everything pushed
        self.sent = ""
        self.stopped = False

    def push(self, delta: str) -> str:
        """The part of text so far that is safe to send and not sent yet."""
        if self.stopped or not delta:
            return ""
        self.text += delta
        at = stop_at(self.text, self.stops)
        self.stopped = at is not None
        return self.release(self.text[:at] if self.stopped else self.text[:len(self.text) - self.held_back()])

    def held_back(self) -> int:
        """The length of the longest end of the text that begins a stop string."""
        longest = min(len(self.text), max((len(s) - 1 for s in self.stops), default=0))
        return next((k for k in range(longest, 0, -1) if any(s.startswith(self.text[-k:]) for s in self.stops)), 0)

    def release(self, safe: str) -> str:
        """What `safe` (a prefix of the choice's final text) adds to what was sent."""
        new, self.sent = safe[len(self.sent):], max(safe, self.sent, key=len)
        return new

    def finish(self, final: str) -> str:
        """What is left to send of the choice's final text; ValueError if what was sent does not begin it."""
        if not final.startswith(self.sent):
            raise ValueError("the streamed text is not the beginning of the reply")
        return self.release(final)


def usage(reply: Any, found: list[Choice]) -> dict:
    """OpenAI's usage: the encoded prompt's tokens (model.schema.Reply) and every choice's, EOS included."""
    completion_tokens = sum(c.tokens for c in found)
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": reply.prompt_tokens + completion_tokens}


def completion_body(completion: Completion, reply: Any, found: list[Choice]) -> dict:
    """The `chat.completion` object: one choice per reply, best first."""
    body_choices = [{"index": i, "message": {"role": "assistant", "content": c.text, "refusal": None},
                     "logprobs": None, "finish_reason": c.finish_reason} for i, c in enumerate(found)]
    return {"id": completion.id, "object": "chat.completion", "created": completion.created,
            "model": completion.model, "choices": body_choices, "system_fingerprint": None,
            "usage": usage(reply, found)}


def chunk(completion: Completion, index: int, delta: dict, finish: str | None = None) -> str:
    """One server-sent event holding a `chat.completion.chunk` of choice `index`."""
    return event({"id": completion.id, "object": "chat.completion.chunk", "created": completion.created,
                  "model": completion.model, "system_fingerprint": None,
                  "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]})


def usage_chunk(completion: Completion, reply: Any, found: list[Choice]) -> str:
    """The last chunk of a stream with stream_options.include_usage: no choices, the usage."""
    return event({"id": completion.id, "object": "chat.completion.chunk", "created": completion.created,
                  "model": completion.model, "system_fingerprint": None, "choices": [],
                  "usage": usage(reply, found)})


def event(value: dict) -> str:
    """A server-sent event line: data: <JSON>, then a blank line. UTF-8 as it is (the response is UTF-8)."""
    return f"data: {json.dumps(value, ensure_ascii=False)}\n\n"


def models_body(model_name: str) -> dict:
    """GET v1/models: the one served model."""
    return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "torchserve"}]}


class OpenAIChat(Protocol):
    """OpenAI's Chat Completions protocol (routes v1/chat/completions and v1/models): the body's fields (FIELDS),
    `chat.completion` objects, server-sent `chat.completion.chunk`s as tokens are decoded, and errors as
    {"error": {"message", "type", "param", "code"}}; every response says what of the history was read
    (X-Context-Used)."""

    def parse(self, request: Incoming, core: Any) -> ChatRequest | Answered:
        """v1/models: the model list; v1/chat/completions: JSON whatever its Content-Type (the SDKs send
        application/json), its options' errors naming the OpenAI field (n, not num_replies)."""
        if request.route == MODELS_PATH:
            return Answered(json.dumps(models_body(core.model_name)) + "\n")
        body = request.body
        if isinstance(body, (bytes, bytearray, str)):
            body = load_json(to_text(body, {}))
        elif body is None and media_type(request.content_type)[0] in FORM_TYPES:  # curl -d without a Content-Type
            raise BadRequest(ErrorKind.UNSUPPORTED_MEDIA_TYPE, "the body was sent as a form: send the Chat "
                             "Completions JSON with -H 'Content-Type: application/json'")
        chat = parse_chat(body, core.max_chars, core.model_name, core.limits)
        try:
            chat.options = parse_options(chat.option_values, core.defaults, core.limits)
        except InvalidOption as e:
            raise invalid(option_param(e.field, body), e.detail) from None
        return chat

    def streams(self, request: ChatRequest) -> bool:
        return request.completion is not None and request.completion.stream

    def start_stream(self, request: ChatRequest, core: Any) -> tuple[Streamed, Response]:
        """A streamed request's state and first piece: status 200, the event-stream type, headers (what the input
        lost is known before decoding) and each choice's role chunk."""
        streamed = Streamed(request.completion, ChoiceText(core.chatbot.stream(), request.completion.stop))
        roles = "".join(chunk(request.completion, i, {"role": "assistant", "content": ""})
                        for i in range(request.options.num_replies))
        headers = {"Cache-Control": "no-cache", **input_headers(request.encoded), **context_headers(request.encoded)}
        return streamed, Response(200, EVENT_STREAM, roles, headers)

    def token(self, streamed: Streamed, token: int) -> Response | None:
        """The piece one more token of the first choice adds, if it completes any text (None otherwise)."""
        delta = streamed.first.push(token)
        return Response(200, EVENT_STREAM, chunk(streamed.completion, 0, {"content": delta})) if delta else None

    def reply(self, request: ChatRequest, core: Any, streamed: Streamed | None = None) -> Response:
        """A `chat.completion`, or a stream's last events."""
        headers = {**input_headers(request.encoded), **context_headers(request.encoded)}
        if streamed is not None:
            return Response(200, EVENT_STREAM, self.stream_end(streamed, request, core), headers)
        found = [choice for _, choice in settle(request.completion, request.reply, core.chatbot.stream, EOS_token)]
        body = completion_body(request.completion, request.reply, found)
        return Response(200, JSON_TYPE, json.dumps(body, ensure_ascii=False) + "\n", headers)

    def stream_end(self, streamed: Streamed, request: ChatRequest, core: Any) -> str:
        """The last piece of a streamed reply: the text not streamed yet (all of it for beams and n > 1, one chunk
        per token), each choice's finish chunk, the usage chunk if asked for, and [DONE]."""
        completion, reply = request.completion, request.reply
        if streamed.failed:
            raise RuntimeError("the stream failed")
        pieces, found = [streamed.unsent], []
        for i, (deltas, choice) in enumerate(settle(completion, reply, core.chatbot.stream, EOS_token,
                                                    streamed.first)):
            pieces += [chunk(completion, i, {"content": d}) for d in deltas if d]
            pieces.append(chunk(completion, i, {}, choice.finish_reason))
            found.append(choice)
        if completion.include_usage:
            pieces.append(usage_chunk(completion, reply, found))
        return "".join(pieces) + DONE

    def error(self, error: BadRequest, streamed: Streamed | None = None) -> Response:
        """OpenAI's error object with the kind's status; in a stream already begun, an error event and [DONE]."""
        if streamed is not None:
            return Response(200, EVENT_STREAM, streamed.unsent + event(error_body(error)) + DONE, context_headers())
        return Response(error.kind.status, JSON_TYPE, json.dumps(error_body(error)) + "\n", context_headers())


OPENAI = OpenAIChat()
