"""The serving core's wire format: typed request and outcome values, and the one table of error kinds.

A request's way through the core: `parse_body` turns what an engine received into a ChatRequest or raises
BadRequest; the decode gives the ChatRequest its model.schema.Reply; the response is built from the one or the
other. Every stage runs per request behind a guard (pipeline.py), so whatever one request's bytes make any code raise,
only that request gets an error.

Part of the serving core, shipped in the .mar; pure Python 3.9 (no torch, no engine).
"""
from __future__ import annotations

import codecs
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
BODY_FIELDS = ("body", "data", "text")  # raw body, multipart field "data", form field "text"
CONTEXT_FIELD = "context"  # the JSON API's earlier turns (context_field)


class ErrorKind(Enum):
    """Why a request got no reply: the JSON body's `type`, with its HTTP status (the one table)."""

    EMPTY_INPUT = ("EmptyInput", 400)
    INVALID_ENCODING = ("InvalidEncoding", 400)
    MALFORMED_JSON = ("MalformedJSON", 400)
    MISSING_TEXT = ("MissingText", 400)
    INVALID_OPTION = ("InvalidOption", 400)
    NOT_FOUND = ("NotFound", 404)  # a path after the model version that names no route
    INPUT_TOO_LONG = ("InputTooLong", 413)
    UNSUPPORTED_MEDIA_TYPE = ("UnsupportedMediaType", 415)
    NO_KNOWN_WORDS = ("NoKnownWords", 422)
    CLIENT_CLOSED_REQUEST = ("ClientClosedRequest", 499)  # the client went away before its reply (nginx's 499)
    INTERNAL_ERROR = ("InternalError", 500)  # our bug, scoped to the one request it hit
    SERVICE_UNAVAILABLE = ("ServiceUnavailable", 503)  # no room in the queue now, or the server is stopping

    def __init__(self, type_name: str, status: int):
        self.type_name = type_name
        self.status = status


class BadRequest(Exception):
    """A request the server refuses, with what the caller should fix."""

    def __init__(self, kind: ErrorKind, message: str, unknown_words: list[str] | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.unknown_words = list(unknown_words or [])

    def body(self) -> dict:
        """The JSON error body: {"code", "type", "message", "unknown_words"}."""
        return {"code": self.kind.status, "type": self.kind.type_name, "message": self.message,
                "unknown_words": self.unknown_words}


def internal_error(stage: str) -> BadRequest:
    """The request-scoped 500 for an exception our own code raised in `stage`."""
    return BadRequest(ErrorKind.INTERNAL_ERROR,
                      f"the server failed on this request while {stage}; it is logged, and other requests "
                      "are not affected: retry, or report it if it persists")


@dataclass
class Incoming:
    """One request as an engine received it: its route (the path after the model's base URL: "" for the JSON and
    text API, "v1/chat/completions" ...), its body (bytes, text, parsed JSON, or None when it has none) and its
    Content-Type; failed: the stage at which the adapter could not read it (it gets a 500)."""

    route: str
    body: Any = None
    content_type: str = ""
    failed: str = ""


@dataclass
class Response:
    """What an engine sends back for one request (or one piece of a streamed one)."""

    status: int
    content_type: str
    body: str
    headers: dict = field(default_factory=dict)

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass
class ChatRequest:
    """One usable request: its text, whether the reply goes back as JSON, its decoding fields, and what the core
    adds on its way: the checked options, the encoded text, the Reply."""

    text: str
    as_json: bool = False
    option_values: dict = field(default_factory=dict)  # the JSON body's fields beside "text", unchecked
    options: Any = None  # model.schema.DecodeOptions
    encoded: Any = None  # model.voc.Encoded: token ids, dropped unknown words, whether the text was cut
    reply: Any = None  # model.schema.Reply
    completion: Any = None  # openai_api.Completion when it came by the OpenAI route
    earlier_turns: list = field(default_factory=list)  # the conversation before text, oldest first (model/context.py)
    context_sent: bool = False  # a JSON API request with a "context" field: its reply says what was read


@dataclass
class Answered:
    """A request answered without decoding (the OpenAI route's model list): its status, Content-Type and body."""

    body: str
    content_type: str = JSON_TYPE
    status: int = 200


def media_type(value: str | None) -> tuple[str, dict]:
    """('application/json', {'charset': 'utf-8'}) for 'application/json; charset=UTF-8'; ('', {}) when none."""
    kind, *params = (value if isinstance(value, str) else "").split(";")
    parameters = {}
    for param in params:
        name, _, val = param.partition("=")
        parameters[name.strip().lower()] = val.strip().strip('"')
    return kind.strip().lower(), parameters


def parse_body(body: Any, content_type: str | None, max_chars: int) -> ChatRequest:
    """A ChatRequest from a body as the worker decoded it (bytes, str, parsed JSON or None); raises BadRequest."""
    kind, params = media_type(content_type)
    if body is None:
        raise missing_body(kind)
    if kind == JSON_TYPE:
        # bytes: the worker left it unparsed (a charset parameter, or it failed); else what it parsed
        value = load_json(to_text(body, params)) if isinstance(body, (bytes, bytearray)) else body
        if not isinstance(value, dict) or not isinstance(value.get("text"), str):
            raise BadRequest(ErrorKind.MISSING_TEXT, 'the JSON body must be an object with a string field "text"')
        options = {k: v for k, v in value.items() if k not in ("text", CONTEXT_FIELD)}
        request = ChatRequest(check_text(value["text"], max_chars), as_json=True, option_values=options)
        request.earlier_turns = context_field(value.get(CONTEXT_FIELD), max_chars)
        request.context_sent = CONTEXT_FIELD in value
        return request
    if not isinstance(body, (bytes, bytearray, str)):
        raise BadRequest(ErrorKind.INVALID_ENCODING, "the request body is not text")
    return ChatRequest(check_text(to_text(body, params), max_chars))


def context_field(value: Any, max_chars: int) -> list[str]:
    """The JSON API's "context": the turn before the text (a string), or the turns before it, oldest first (a list
    of strings); [] when absent or null. Raises BadRequest for another type, or more than max_chars in all."""
    if value is None:
        return []
    turns = [value] if isinstance(value, str) else value
    if not isinstance(turns, list) or not all(isinstance(turn, str) for turn in turns):
        raise BadRequest(ErrorKind.INVALID_OPTION, f"{CONTEXT_FIELD}: a string (the turn before the text) or a list "
                         "of strings (the turns before it, oldest first)")
    chars = sum(len(turn) for turn in turns)
    if chars > max_chars:
        raise BadRequest(ErrorKind.INPUT_TOO_LONG, f"{CONTEXT_FIELD} has {chars} characters; send at most {max_chars}"
                         " (the model reads only the last turns)")
    return [check_unicode(turn) for turn in turns]


def missing_body(kind: str) -> BadRequest:
    """Why a request had no body: an HTML form without a "text" field, or nothing at all."""
    if kind in FORM_TYPES:
        return BadRequest(ErrorKind.UNSUPPORTED_MEDIA_TYPE,
                          f"the body was sent as a form ({kind}; plain curl -d and --data-binary send one) without "
                          "a \"text\" field: send raw text with -H 'Content-Type: text/plain' or curl -T, JSON "
                          "{\"text\": ...}, or the form field text=...")
    return BadRequest(ErrorKind.EMPTY_INPUT, "the request has no body")


def to_text(body: bytes | bytearray | str, params: dict) -> str:
    """The body as text in its declared charset (default UTF-8, a leading BOM dropped); raises BadRequest."""
    charset = params.get("charset") or "utf-8"
    try:
        codec = codecs.lookup(charset)
    except LookupError:
        raise BadRequest(ErrorKind.UNSUPPORTED_MEDIA_TYPE,
                         f"unknown charset {charset[:40]!r}: send UTF-8 (or name a standard charset)") from None
    if isinstance(body, str):  # the worker decoded it as UTF-8 already; that is lossless to undo
        if codec.name == "utf-8":
            return without_bom(body)
        body = body.encode("utf-8", "surrogatepass")
    try:
        return without_bom(bytes(body).decode(codec.name))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(ErrorKind.INVALID_ENCODING, f"the request body is not valid {codec.name} text") from None


def without_bom(text: str) -> str:
    return text[1:] if text.startswith("\ufeff") else text


def load_json(text: str) -> Any:
    """json.loads, with whatever the parser raises (not only ValueError) as a 400 MalformedJSON."""
    try:
        return json.loads(text)
    except RecursionError:  # "[[[[..." past the interpreter's recursion limit
        raise BadRequest(ErrorKind.MALFORMED_JSON, "the JSON body is nested too deeply") from None
    except json.JSONDecodeError as e:  # its message quotes positions, never the text
        raise BadRequest(ErrorKind.MALFORMED_JSON, f"the body is not valid JSON: {e}") from None
    except ValueError as e:  # Python >= 3.11 refuses integers of over 4,300 digits
        detail = "a number has too many digits" if "digits" in str(e) else type(e).__name__
        raise BadRequest(ErrorKind.MALFORMED_JSON, f"the JSON body cannot be read: {detail}") from None
    except Exception as e:  # whatever else a parser raises
        raise BadRequest(ErrorKind.MALFORMED_JSON, f"the JSON body cannot be read: {type(e).__name__}") from None


def check_text(text: str, max_chars: int) -> str:
    """`text` unless it is blank, longer than max_chars characters or not Unicode; raises BadRequest."""
    if not text.strip():
        raise BadRequest(ErrorKind.EMPTY_INPUT, "the text is empty or only whitespace")
    if len(text) > max_chars:
        raise BadRequest(ErrorKind.INPUT_TOO_LONG, f"the text has {len(text)} characters; send at most {max_chars}")
    return check_unicode(text)


def check_unicode(text: str) -> str:
    """`text` unless it holds an unpaired surrogate; raises BadRequest."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # JSON "\ud800": valid JSON, but not a Unicode character
        raise BadRequest(ErrorKind.INVALID_ENCODING,
                         "the text holds an unpaired UTF-16 surrogate (such as \\ud800), which is not a character"
                         ) from None
    return text
