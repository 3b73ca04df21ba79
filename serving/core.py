"""The engine-free serving core: requests in (a route, a body, its Content-Type), responses out (a status, a
Content-Type, headers and a body), one batched decode per batch, and a stream of events for each streamed request.

    core = load_core(checkpoint_path, model_config["handler"], model_name)
    responses = core.answer([Incoming("", b"how are you?", "text/plain")])    # Response(200, "text/plain...", ...)

The routes (`ROUTES`): "" is the JSON and text API, `v1/chat/completions` and `v1/models` the OpenAI API. What a
request may hold, how its options are checked, the OpenAI mapping, the error kinds and their bodies are all here (and
in wire.py, openai_api.py); an engine's adapter only moves bytes: TorchServe's handler (handler/seq2seq_handler.py)
and the KServe model (kserve_runtime/). Neither parses options, maps OpenAI fields or builds an error body itself.

Every stage runs per request behind a guard, and a batched decode that fails is retried request by request, so
whatever one request holds costs only that request an error (a request-scoped 500 for our own bug).

Streaming: a request with "stream": true gets its response in pieces through `emit(index, Response)`: the first
piece carries the status and headers, then one piece per decoded token, and the last piece is its entry in
answer()'s result (an error event if the decode failed after the stream began).

Shipped inside the .mar (the archive's `serving` package): Python 3.9, torch 2.4, no TorchServe, no KServe.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

import torch

from model import CheckpointError, NoKnownWordsError, load_chatbot
from model.chatbot import Chatbot
from model.checkpoint import quantize_mode
from model.schema import InvalidOption, Reply, options_from_config, parse_options
from model.voc import EOS_token

from . import openai_api
from .wire import (
    FORM_TYPES,
    JSON_TYPE,
    TEXT_TYPE,
    Answered,
    BadRequest,
    ChatRequest,
    ErrorKind,
    internal_error,
    load_json,
    media_type,
    parse_body,
    to_text,
)

logger = logging.getLogger(__name__)

# What each stage hands the next, per request: the request (with its Reply once decoded), why it has none, or a
# response known without decoding
Outcome = Union[ChatRequest, BadRequest, Answered]
ROUTES = ("", openai_api.CHAT_PATH, openai_api.MODELS_PATH)  # the JSON and text API, and the OpenAI API

# The core's metrics: name -> kind. TorchServe needs them declared in handler/metrics.yaml too (dimensions
# [ModelName], + [Reason] for bad requests, [le] for buckets); the KServe runtime registers them with
# prometheus_client beside KServe's own.
METRICS = {
    "seq2seq_requests_decoded_total": "counter",
    "seq2seq_bad_requests_total": "counter",
    "seq2seq_unknown_words_total": "counter",
    "seq2seq_decode_fallbacks_total": "counter",
    "seq2seq_reply_words": "counts",
    "seq2seq_batch_size": "counts",
    "seq2seq_decode_seconds": "histogram",
}
# Upper bounds of the "counts" metrics (words per reply, requests per batch): histograms of small integers
COUNT_BUCKETS = {
    "seq2seq_reply_words": (1, 2, 4, 6, 8, 10, 15, 20),  # a reply has at most limits.max_length tokens
    "seq2seq_batch_size": (1, 2, 4, 8, 16, 32),  # up to the model-config's batchSize
}


@dataclass
class Incoming:
    """One request as an engine received it: its route (ROUTES), its body (bytes, text, parsed JSON, or None when it
    has none) and its Content-Type; failed: the stage at which the adapter could not read it (it gets a 500)."""

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


def json_error(error: BadRequest) -> Response:
    """The JSON API's response for a refused request: its status and {"code", "type", "message", "unknown_words"}."""
    return Response(error.kind.status, JSON_TYPE, json.dumps(error.body()) + "\n")


Emit = Callable[[int, Response], None]  # emit(request index, piece): send a piece of a streamed response now


class Metrics:
    """Where the core's metrics go (METRICS): to the function `observe` (name, value, *dimensions) an adapter gives,
    or to a subclass's own `observe` and `observe_counts`. Without either they are dropped."""

    def __init__(self, observe: Callable[..., None] | None = None):
        self.sink = observe

    def observe(self, name: str, value: float, *dimensions: str) -> None:
        """Add `value` to metric `name` (for a "counts" metric: to its name_bucket or name_sum)."""
        if self.sink is not None:
            self.sink(name, value, *dimensions)

    def observe_counts(self, name: str, values: list[int]) -> None:
        """Count `values` in the buckets of a "counts" metric (as cumulative name_bucket counters with an `le`
        dimension, which histogram_quantile reads), and their total in name_sum."""
        for bound in (*COUNT_BUCKETS[name], "+Inf"):
            self.observe(f"{name}_bucket", sum(1 for v in values if bound == "+Inf" or v <= bound), str(bound))
        self.observe(f"{name}_sum", sum(values))


class BufferedMetrics(Metrics):
    """Metrics whose counters are summed here and handed to `observe` at most once every `interval` seconds.

    A TorchServe worker writes every metric update as a log line that the frontend reads back and logs again: ~15
    lines a batch, ~0.35 ms of the worker's time and ~0.5 ms of a lone request's latency (docs/benchmarks.md).
    Summed, a busy worker hands over one line per counter and interval. A timer hands over what is pending, so
    counts are at most `interval` late (the first batch after a quiet interval goes out at once); histogram
    observations cannot be summed and go out as they come. A worker killed with counts pending loses them (at most
    one interval's). interval 0: every update at once, as Metrics.
    """

    def __init__(self, observe: Callable[..., None] | None, interval: float):
        super().__init__(observe)
        self.interval = interval
        self.pending: dict[tuple, float] = {}  # (name, dimensions) -> sum not yet handed over
        self.lock, self.handing_over = threading.Lock(), threading.Lock()
        self.timer: threading.Timer | None = None
        self.last = float("-inf")  # time.monotonic() of the last hand-over

    def observe(self, name: str, value: float, *dimensions: str) -> None:
        """Add `value` to counter `name` (sent within `interval`); a histogram's observation is sent now."""
        if self.interval <= 0 or METRICS.get(name) == "histogram":
            super().observe(name, value, *dimensions)
            return
        with self.lock:
            self.pending[(name, dimensions)] = self.pending.get((name, dimensions), 0) + value
            if self.timer is None:
                self.timer = threading.Timer(max(0.0, self.last + self.interval - time.monotonic()), self.flush)
                self.timer.daemon = True
                self.timer.start()

    def flush(self) -> None:
        """Hand every pending sum to `observe`; returns once they, and any the timer took before, are handed over."""
        with self.handing_over:  # one hand-over at a time; `observe` waits only for `lock`, never for this
            with self.lock:
                pending, self.pending, self.last = self.pending, {}, time.monotonic()
                if self.timer is not None:
                    self.timer.cancel()  # a no-op from the timer's own thread
                    self.timer = None
            for (name, dimensions), value in pending.items():
                super().observe(name, value, *dimensions)


@dataclass
class Batch:
    """One batch on its way through the core: each request's outcome, route and Content-Type, the streams of the
    streamed ones (index -> openai_api.Streamed), and where their pieces go."""

    outcomes: list
    routes: list
    emit: Emit | None = None
    streams: dict = field(default_factory=dict)


def one_line(text: str) -> str:
    """`text` as one printable log line: torch's messages hold newlines and terminal escapes."""
    return "".join(c for c in " ".join(text.split()) if c.isprintable())


def log_failure(what: str, error: Exception, level: int = logging.ERROR) -> None:
    """Log an exception of our own code in one line: its type and where it was raised, never its message
    (a KeyError's message, say, can be the user's words)."""
    frames = traceback.extract_tb(error.__traceback__)[-6:]
    where = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(frames))
    logger.log(level, "%s: %s at %s", what, type(error).__name__, where)


def guarded(stage: str, idx: int, work: Callable[[], Any]) -> Any:
    """work(), or the BadRequest it raised, or a request-scoped 500 for any other exception."""
    try:
        return work()
    except BadRequest as e:
        return e
    except NoKnownWordsError as e:
        return BadRequest(ErrorKind.NO_KNOWN_WORDS, str(e), e.unknown_words)
    except InvalidOption as e:
        return BadRequest(ErrorKind.INVALID_OPTION, str(e))
    except Exception as e:  # our bug
        log_failure(f"request {idx} failed while {stage}", e)
        return internal_error(stage)


def input_headers(encoded: Any) -> dict:
    """X-Unknown-Words (the dropped words, comma-separated) and X-Truncated: true, when they apply to the encoded
    text (model.voc.Encoded)."""
    headers = {}
    if encoded.unknown_words:
        headers["X-Unknown-Words"] = ",".join(encoded.unknown_words)
    if encoded.truncated:
        headers["X-Truncated"] = "true"
    return headers


def required_option(section: dict, name: str) -> int:
    """An integer the model-config's handler section must set (its one definition); a clear error when it does
    not."""
    if name not in section:
        raise ValueError(f"the model-config's handler section has no {name}: rebuild the archive with "
                         "handler/model-config.yaml (make mar)")
    return int(section[name])


def switch(section: dict, name: str, default: bool) -> bool:
    """A true/false option of a `handler:` section; ValueError naming it when it is anything else."""
    value = section.get(name, default)
    if not isinstance(value, bool):
        raise ValueError(f"the model-config's handler option {name} must be true or false, not {value!r}")
    return value


def metrics_interval(section: dict) -> float:
    """A `handler:` section's metrics_interval_s (default 1; 0: every metric update at once, BufferedMetrics);
    ValueError naming it when it is not a number >= 0."""
    value = section.get("metrics_interval_s", 1)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"the model-config's handler option metrics_interval_s must be a number of seconds >= 0, "
                         f"not {value!r}")
    return float(value)


def cpu_setup(section: dict, device: torch.device) -> str | None:
    """The weight mode of a `handler:` section on `device` (None: float32; quantisation is CPU-only), with torch's
    thread count set from its `threads` on the CPU (the engines leave torch at one thread per core)."""
    quantize = quantize_mode(section.get("quantize"))  # None (float32), "int8" or "fp16"
    if quantize and device.type != "cpu":
        logger.warning("quantize: %s is ignored on the GPU (quantisation is CPU-only)", quantize)
        quantize = None
    threads = int(section.get("threads", 0))
    if threads > 0 and device.type == "cpu":
        torch.set_num_threads(threads)
    return quantize


def load_core(checkpoint: str, section: dict, model_name: str, device: torch.device | None = None,
              metrics: Metrics | None = None) -> Core:
    """The Core of a checkpoint, set up by a model-config `handler:` section (quantize, threads, compiled_decode,
    max_chars, decoding defaults and limits) on `device` (default: the CPU). Raises CheckpointError (logged in one
    line) or InvalidOption / ValueError naming a wrong model-config value."""
    device = device or torch.device("cpu")
    quantize = cpu_setup(section, device)
    try:
        chatbot = load_chatbot(checkpoint, device=device, quantize=quantize,
                               compiled_decode=switch(section, "compiled_decode", True))
    except CheckpointError as e:
        # One clear line per try: an engine retries a failed load, and its own log only says the worker died
        logger.error("cannot load the chatbot from %s: %s: %s (rebuild the archive with `make mar`, which validates "
                     "the checkpoint)", os.path.basename(str(checkpoint)), type(e).__name__, one_line(str(e)))
        raise
    core = Core(chatbot, section, model_name, metrics)
    logger.info("seq2seq chatbot loaded from %s on %s (quantize=%s, %d %s tokens, max %d chars, model package %s)",
                os.path.basename(str(checkpoint)), device, quantize, chatbot.voc.num_words, chatbot.voc.kind,
                core.max_chars, os.path.dirname(sys.modules[Chatbot.__module__].__file__))
    return core


class Core:
    """A chatbot behind the JSON, text and OpenAI APIs: Incoming requests of a batch -> one Response each."""

    def __init__(self, chatbot: Any, section: dict, model_name: str, metrics: Metrics | None = None):
        """section: the model-config's `handler:` section; a wrong value raises InvalidOption naming it."""
        self.chatbot = chatbot
        self.model_name = model_name
        self.metrics = metrics or Metrics()
        self.max_chars = required_option(section, "max_chars")
        self.defaults, self.limits = options_from_config(section, chatbot.max_length)
        self.threads = torch.get_num_threads()
        self.threads_alone = int(section.get("threads_alone", 0)) or self.threads

    def answer(self, incoming: list[Incoming], emit: Emit | None = None) -> list[Response]:
        """One Response per request, decoded together: read, decode, respond. Never raises."""
        batch = self.read(incoming, emit)
        self.decode(batch)
        return self.respond(batch)

    # ------------------------------------------------------------------ reading

    def read(self, incoming: list[Incoming], emit: Emit | None = None) -> Batch:
        """Each request parsed, its options checked and its text encoded (or the BadRequest that rejects it)."""
        outcomes = [internal_error(r.failed) if r.failed else
                    guarded("reading the request", idx, lambda r=r: self.read_request(r))
                    for idx, r in enumerate(incoming)]
        return Batch(outcomes, [r.route if isinstance(r.route, str) else "" for r in incoming], emit)

    def read_request(self, request: Incoming) -> ChatRequest | Answered:
        """Parse, check the options of and encode one request, by its route; raises BadRequest, InvalidOption or
        NoKnownWordsError."""
        if request.route not in ROUTES:
            raise BadRequest(ErrorKind.NOT_FOUND, f"no route {str(request.route)[:80]!r}: this model answers its "
                             f"JSON and text API and {openai_api.CHAT_PATH}, {openai_api.MODELS_PATH} (OpenAI's API)")
        if request.route == openai_api.MODELS_PATH:
            return Answered(json.dumps(openai_api.models_body(self.model_name)) + "\n")
        if request.route == openai_api.CHAT_PATH:
            chat = self.read_chat(request.body, request.content_type)
        else:
            chat = parse_body(request.body, request.content_type, self.max_chars)
            chat.options = parse_options(chat.option_values, self.defaults, self.limits)
        logger.debug("request (%s): %r", request.route or ("json" if chat.as_json else "raw"), chat.text)
        chat.encoded = self.chatbot.encode(chat.text)
        return chat

    def read_chat(self, body: Any, content_type: str) -> ChatRequest:
        """A Chat Completions request: JSON whatever its Content-Type (the SDKs send application/json); its
        options' errors name the OpenAI field (n, not num_replies)."""
        if isinstance(body, (bytes, bytearray, str)):
            body = load_json(to_text(body, {}))
        elif body is None and media_type(content_type)[0] in FORM_TYPES:  # curl -d without a Content-Type
            raise BadRequest(ErrorKind.UNSUPPORTED_MEDIA_TYPE, "the body was sent as a form: send the Chat "
                             "Completions JSON with -H 'Content-Type: application/json'")
        request = openai_api.parse_chat(body, self.max_chars, self.model_name, self.limits)
        try:
            request.options = parse_options(request.option_values, self.defaults, self.limits)
        except InvalidOption as e:
            raise openai_api.invalid(openai_api.option_param(e.field), e.detail) from None
        return request

    # ------------------------------------------------------------------ decoding

    def decode(self, batch: Batch) -> None:
        """Decode every usable request of the batch in ONE batched call: each gets its Reply, or the error that
        replaces it. Streamed requests' streams are opened first and get their tokens as they are chosen."""
        self.start_streams(batch)
        good = [idx for idx, r in enumerate(batch.outcomes) if isinstance(r, ChatRequest)]
        if not good:
            return
        if self.chatbot.device.type == "cpu":  # a lone request means an idle server: lend it the other cores
            torch.set_num_threads(self.threads_alone if len(good) == 1 else self.threads)
        start = time.perf_counter()
        found = self.decode_together(batch, good)
        seconds = time.perf_counter() - start
        replies = [f for f in found if isinstance(f, Reply)]
        self.metrics.observe("seq2seq_decode_seconds", seconds)
        self.metrics.observe_counts("seq2seq_batch_size", [len(good)])
        self.metrics.observe_counts("seq2seq_reply_words", [len(r.text.split()) for r in replies])
        self.metrics.observe("seq2seq_requests_decoded_total", len(replies))
        # DEBUG: at INFO this line would cost as much as the metrics, every batch
        logger.debug("batch of %d: %d decoded together in %.1f ms", len(batch.outcomes), len(good), seconds * 1000)
        for idx, reply in zip(good, found):
            if isinstance(reply, Reply):
                batch.outcomes[idx].reply = reply
            else:
                batch.outcomes[idx] = reply

    def decode_requests(self, batch: Batch, indices: list[int], stream: bool = True) -> list[Reply]:
        """The Replies of the requests at `indices`: one batched search per decoding mode, streaming the tokens of
        streamed requests as they are chosen (unless stream is False)."""
        requests = [batch.outcomes[idx] for idx in indices]
        on_token = None
        if stream and any(idx in batch.streams for idx in indices):
            on_token = lambda i, token: self.stream_token(batch, indices[i], token)  # noqa: E731
        return self.chatbot.answer([r.encoded for r in requests], [r.options for r in requests], on_token)

    def decode_together(self, batch: Batch, indices: list[int]) -> list[Reply | BadRequest]:
        """Replies in one call; if that call raises, each request alone, so only a bad one fails (streaming nothing
        more: a streamed reply's rest is sent when it is known, or its error)."""
        try:
            return self.decode_requests(batch, indices)
        except Exception as e:
            # WARNING: the request that fails alone is logged at ERROR below; the others get their replies
            log_failure(f"batched decode of {len(indices)} requests failed, decoding them one by one", e,
                        logging.WARNING)
            self.metrics.observe("seq2seq_decode_fallbacks_total", 1)
        return [guarded("decoding the reply", idx, lambda idx=idx: self.decode_requests(batch, [idx], False)[0])
                for idx in indices]

    # ------------------------------------------------------------------ streams

    def start_streams(self, batch: Batch) -> None:
        """Open the event stream of every usable request with "stream": true (one that cannot be opened gets its
        error instead). Without an emit function nothing is sent early: the whole stream is the last piece."""
        for idx, request in enumerate(batch.outcomes):
            if isinstance(request, ChatRequest) and request.completion is not None and request.completion.stream:
                started = guarded("starting its stream", idx,
                                  lambda idx=idx, r=request: self.start_stream(batch, idx, r))
                if not isinstance(started, openai_api.Streamed):
                    batch.streams.pop(idx, None)
                    batch.outcomes[idx] = started

    def start_stream(self, batch: Batch, idx: int, request: ChatRequest) -> openai_api.Streamed:
        """Request idx's first piece: status 200, the event-stream type, headers (what the input lost is known
        before decoding) and each choice's role chunk."""
        streamed = batch.streams[idx] = openai_api.Streamed(request.completion, self.chatbot.stream())
        roles = "".join(openai_api.chunk(request.completion, i, {"role": "assistant", "content": ""})
                        for i in range(request.options.num_replies))
        headers = {"Cache-Control": "no-cache", **input_headers(request.encoded), **openai_api.CONTEXT_HEADERS}
        self.send(batch, idx, Response(200, openai_api.EVENT_STREAM, roles, headers))
        return streamed

    def send(self, batch: Batch, idx: int, piece: Response) -> None:
        """One piece of request idx's streamed response, now (kept for its last piece when nothing is emitted)."""
        if batch.emit is not None:
            batch.emit(idx, piece)
        else:
            batch.streams[idx].unsent += piece.body

    def stream_token(self, batch: Batch, idx: int, token: int) -> None:
        """Send the text one more token of request idx adds, if it completes any. Never raises: a stream that cannot
        be sent to stops streaming, and its request alone gets an error at the end."""
        streamed = batch.streams.get(idx)
        if not isinstance(streamed, openai_api.Streamed) or streamed.failed:
            return
        try:
            delta = streamed.stop.push(streamed.text.push(token))
            if delta:
                self.send(batch, idx, Response(200, openai_api.EVENT_STREAM,
                                               openai_api.chunk(streamed.completion, 0, {"content": delta})))
        except Exception as e:
            log_failure(f"request {idx} failed while streaming a token", e)
            streamed.failed = True

    def stream_end(self, batch: Batch, idx: int, request: ChatRequest, reply: Reply) -> str:
        """The last piece of a streamed reply: the text not streamed yet (all of it for beams and n > 1, one chunk
        per token), each choice's finish chunk, the usage chunk if asked for, and [DONE]."""
        streamed, completion = batch.streams[idx], request.completion
        pieces = [streamed.unsent]
        if streamed.failed:
            raise RuntimeError("the stream failed")
        found = openai_api.choices(completion, reply, self.chatbot.voc.decode, EOS_token)
        for i, (choice, ids) in enumerate(zip(found, reply.token_ids)):
            if i == 0 and streamed.text.ids:  # streamed as it was decoded
                deltas = [streamed.stop.finish(choice.text)]
            else:
                stream, stop = self.chatbot.stream(), openai_api.StopFilter(completion.stop)
                deltas = [stop.push(stream.push(token)) for token in ids] + [stop.finish(choice.text)]
            pieces += [openai_api.chunk(completion, i, {"content": d}) for d in deltas if d]
            pieces.append(openai_api.chunk(completion, i, {}, choice.finish_reason))
        if completion.include_usage:
            pieces.append(openai_api.usage_chunk(completion, reply, found))
        return "".join(pieces) + openai_api.DONE

    # ------------------------------------------------------------------ responding

    def respond(self, batch: Batch) -> list[Response]:
        """One Response per request (for a streamed one, its last piece)."""
        return [self.response(batch, idx, outcome) for idx, outcome in enumerate(batch.outcomes)]

    def response(self, batch: Batch, idx: int, outcome: Outcome) -> Response:
        """Request idx's response, its body always encodable as UTF-8 (an engine encodes it; a lone surrogate
        there could kill a worker)."""
        try:
            if isinstance(outcome, ChatRequest) and outcome.reply is not None:
                response = self.reply_response(batch, idx, outcome, outcome.reply)
                response.body = response.body.encode("utf-8", "replace").decode("utf-8")
                return response
            if isinstance(outcome, Answered):
                return Response(outcome.status, outcome.content_type, outcome.body)
        except Exception as e:
            log_failure(f"request {idx} failed while writing its reply", e)
            outcome = internal_error("writing the reply")
        if not isinstance(outcome, BadRequest):  # a stage returned nothing usable: our bug
            logger.error("request %d reached the response without a reply or an error", idx)
            outcome = internal_error("answering")
        return self.error_response(batch, idx, outcome)

    def reply_response(self, batch: Batch, idx: int, request: ChatRequest, reply: Reply) -> Response:
        """Status 200 and the reply: a line of text (unknown words in a header), JSON, or OpenAI's objects."""
        self.metrics.observe("seq2seq_unknown_words_total", len(reply.unknown_words))
        # the JSON API's body says these; the text and OpenAI routes' headers do
        headers = {} if request.as_json else input_headers(request.encoded)
        if request.completion is not None:  # the OpenAI route: a chat.completion, or a stream's last events
            headers.update(openai_api.CONTEXT_HEADERS)
            if idx in batch.streams:
                return Response(200, openai_api.EVENT_STREAM, self.stream_end(batch, idx, request, reply), headers)
            found = openai_api.choices(request.completion, reply, self.chatbot.voc.decode, EOS_token)
            body = openai_api.completion_body(request.completion, reply, found)
            return Response(200, JSON_TYPE, json.dumps(body, ensure_ascii=False) + "\n", headers)
        if request.as_json:  # UTF-8 as it is (a Chinese reply reads as Chinese)
            return Response(200, JSON_TYPE, json.dumps(reply.body(), ensure_ascii=False) + "\n", headers)
        return Response(200, TEXT_TYPE, reply.text + "\n", headers)  # a line: curl leaves the prompt on the next

    def error_response(self, batch: Batch, idx: int, error: BadRequest) -> Response:
        """The error's status and JSON body, in the OpenAI route's shape on that route; a stream already begun
        (status 200 sent) ends with an error event."""
        self.metrics.observe("seq2seq_bad_requests_total", 1, error.kind.type_name)
        self.metrics.observe("seq2seq_unknown_words_total", len(error.unknown_words))
        if idx in batch.streams:
            return Response(200, openai_api.EVENT_STREAM, batch.streams[idx].unsent
                            + openai_api.event(openai_api.error_body(error)) + openai_api.DONE)
        if batch.routes[idx].strip("/").startswith("v1/"):
            return Response(error.kind.status, JSON_TYPE, json.dumps(openai_api.error_body(error)) + "\n")
        return json_error(error)
