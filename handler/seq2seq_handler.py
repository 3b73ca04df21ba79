"""TorchServe handler for the seq2seq chatbot: each TorchServe batch decoded together, one batched search per
decoding mode (greedy, beam, sampling), each request isolated from the others.

Wire format (one HTTP request = one entry of the batch):

  Raw text: any Content-Type but JSON or a form, e.g. `curl -T hello.txt` or
  `curl --data-binary @hello.txt -H 'Content-Type: text/plain'` (a form field text=... works too)
    -> 200 text/plain; charset=utf-8, body: the reply and a newline,
       header X-Unknown-Words: the dropped words, comma-separated (absent when none);
       header X-Truncated: true when the text was cut to the model's max_length tokens
  JSON: Content-Type: application/json, body {"text": "hello there", <decoding options>}
    -> 200 application/json {"reply": "hi .", "score": -1.2, "unknown_words": ["zorblax"], "truncated": false}
       (truncated: the text was cut to the model's max_length tokens; unknown_words is always
       empty for a byte-level BPE model, which knows every text)
       (+ "replies": [{"reply", "score"}, ...] when num_replies > 1); the options are
       model/schema.py's OPTIONS (max_length, beam_size, num_replies, temperature, top_k,
       top_p, seed, no_repeat_ngram_size, min_length); raw-text requests get the model-config's defaults

  OpenAI Chat Completions: POST /predictions/<model>/<version>/v1/chat/completions (TorchServe passes the path
  after the version in the header url_path), and GET .../v1/models: openai_api.py; "stream": true answers
  text/event-stream, each token sent as it is decoded (send_intermediate_predict_response) in the same batched
  search as the rest of the batch.

  A text body is read in its Content-Type's charset (default UTF-8; a leading BOM is dropped).
  A rejected request gets its own status and an application/json body
  {"code": <status>, "type": <ErrorType>, "message": <what to fix>, "unknown_words": [...]}; the
  kinds and statuses are the one table wire.ErrorKind (README, docs/SECURITY.md). The other
  requests of the same batch are answered normally, whatever one request holds: every stage runs
  per request behind a guard, and a batched decode that fails is retried request by request, so an
  exception our code did not anticipate costs only its own request a 500 InternalError.

Model-config YAML (packed into the .mar), section `handler:`:
  quantize: int8    CPU only, GRU/Linear weights: int8 (model/int8.py: int8 weights, each input row
                    quantised on its own range), fp16 (float16 weights, float32 maths), false (float32);
                    int8 and fp16 replies are bit for bit the same whatever shares their batch
  threads: 1        torch threads per worker (0: torch's default, one per core)
  threads_alone: 0  torch threads for a batch of one request, i.e. when nothing else is queued (0: as
                    threads); more cut its latency only on cores nothing else uses: OpenMP waits for
                    every thread at every op, so one busy neighbour process makes it ~100x slower
  max_chars: 1000   longest accepted text, in characters
  beam_size, num_replies, ...: decoding defaults; limits: {max_length, beam_size, num_replies}

Must run on Python 3.9 / torch 2.4 (the pytorch/torchserve image). TorchServe requires
exactly one class in this module, so the request and error types live in wire.py beside it.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Union

import torch
from ts.handler_utils.utils import send_intermediate_predict_response
from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.base_handler import BaseHandler

# The archive unpacks the `model` package and wire.py next to this file; the worker may start elsewhere.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import openai_api  # noqa: E402
from wire import (  # noqa: E402
    BODY_FIELDS,
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

import model  # noqa: E402
from model import CheckpointError, NoKnownWordsError, load_chatbot  # noqa: E402
from model.checkpoint import quantize_mode  # noqa: E402
from model.schema import InvalidOption, Reply, options_from_config, parse_options  # noqa: E402
from model.voc import EOS_token  # noqa: E402

logger = logging.getLogger(__name__)

# What each stage hands the next, per request: the request (with its Reply once decoded), why it has none, or a
# response known without decoding
Outcome = Union[ChatRequest, BadRequest, Answered]
ROUTES = ("", openai_api.CHAT_PATH, openai_api.MODELS_PATH)  # the url_path values this handler answers

# Custom metrics: name -> type. They must also be declared in handler/metrics.yaml,
# with dimensions [ModelName] (+ [Reason] for bad requests, [le] for buckets), or TorchServe drops them.
METRICS = {
    "seq2seq_requests_decoded_total": MetricTypes.COUNTER,
    "seq2seq_bad_requests_total": MetricTypes.COUNTER,
    "seq2seq_unknown_words_total": MetricTypes.COUNTER,
    "seq2seq_decode_fallbacks_total": MetricTypes.COUNTER,
    "seq2seq_reply_words_bucket": MetricTypes.COUNTER,
    "seq2seq_reply_words_sum": MetricTypes.COUNTER,
    "seq2seq_batch_size_bucket": MetricTypes.COUNTER,
    "seq2seq_batch_size_sum": MetricTypes.COUNTER,
    "seq2seq_decode_seconds": MetricTypes.HISTOGRAM,
}
# TorchServe's Prometheus histograms have the client library's latency buckets (0.005 ... 10 s), which
# fit decode seconds but not counts: words per reply and requests per batch are cumulative counters per
# upper bound instead (label `le`, as a histogram's buckets: histogram_quantile reads them), plus a _sum.
# Each batch updates each bucket once (a metric update is a log line the frontend parses), so few buckets.
COUNT_BUCKETS = {
    "seq2seq_reply_words": (1, 2, 4, 6, 8, 10, 15, 20),  # a reply has at most limits.max_length tokens
    "seq2seq_batch_size": (1, 2, 4, 8, 16, 32),  # up to the model-config's batchSize
}


def one_line(text: str) -> str:
    """`text` as one printable log line: torch's messages hold newlines and terminal escapes."""
    return "".join(c for c in " ".join(text.split()) if c.isprintable())


def is_request(context, idx: int) -> bool:
    """Whether batch entry idx is an HTTP request of its own: under TorchServe's KServe envelope the entries
    are the instances of one request, and only the first has headers."""
    return idx < len(context.request_processor or [])


def request_header(context, idx: int, name: str) -> str:
    """An HTTP header of request `idx`, whatever its case ('' when absent)."""
    if not is_request(context, idx):
        return ""
    for key, value in (context.get_all_request_header(idx) or {}).items():
        if isinstance(key, str) and key.lower() == name and isinstance(value, str):
            return value
    return ""


def request_path(context, idx: int) -> str:
    """The path after /predictions/{model}/{version}/ of request idx ('' for /predictions/{model}): TorchServe's
    frontend sets the header url_path (first empty, then the path; the last value is the one kept)."""
    return request_header(context, idx, "url_path").strip("/")


def find_body(context, idx: int, row: dict) -> tuple[Any, str]:
    """(body as the worker decoded it: bytes, str, parsed JSON or None; its Content-Type) of request `idx`.

    The body is the raw request body, a multipart field "data", or a form field "text"; None
    when there is none (an empty form, or curl -d without a "text=" field). The raw body's type is
    the request's Content-Type header: the frontend passes the worker its media type without the
    charset parameter.
    """
    for name in BODY_FIELDS:
        if name in row:
            header = context.get_request_header(idx, name) if is_request(context, idx) else None  # per field
            part_type = header.get("content-type") if isinstance(header, dict) else None
            return row[name], (request_header(context, idx, "content-type") if name == "body" else "") or part_type
    return None, request_header(context, idx, "content-type")


def input_headers(encoded: Any) -> dict:
    """X-Unknown-Words (the dropped words, comma-separated) and X-Truncated: true, when they apply to the encoded
    text (model.voc.Encoded)."""
    headers = {}
    if encoded.unknown_words:
        headers["X-Unknown-Words"] = ",".join(encoded.unknown_words)
    if encoded.truncated:
        headers["X-Truncated"] = "true"
    return headers


def log_failure(what: str, error: Exception, level: int = logging.ERROR) -> None:
    """Log an exception of our own code in one line: its type and where it was raised, never its message
    (a KeyError's message, say, can be the user's words)."""
    frames = traceback.extract_tb(error.__traceback__)[-6:]
    where = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(frames))
    logger.log(level, "%s: %s at %s", what, type(error).__name__, where)


def required_option(options: dict, name: str) -> int:
    """An integer the model-config's handler section must set (its one definition); a clear error when it does
    not."""
    if name not in options:
        raise ValueError(f"the model-config's handler section has no {name}: rebuild the archive with "
                         "handler/model-config.yaml (make mar)")
    return int(options[name])


def guarded(stage: str, idx: int, work: Callable[[], Outcome]) -> Outcome:
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


class Seq2seqHandler(BaseHandler):
    """Chatbot replies for a batch of raw-text or JSON requests, each request isolated from the others."""

    def initialize(self, context):
        """Rebuild the chatbot from the archive's checkpoint on the GPU TorchServe assigned, else the CPU."""
        self.context = context
        self.manifest = context.manifest
        properties = context.system_properties
        options = (getattr(context, "model_yaml_config", None) or {}).get("handler") or {}
        gpu_id = properties.get("gpu_id")
        use_gpu = torch.cuda.is_available() and gpu_id is not None
        self.device = torch.device(f"cuda:{gpu_id}" if use_gpu else "cpu")
        quantize = quantize_mode(options.get("quantize"))  # None (float32), "int8" or "fp16"
        if quantize and use_gpu:
            logger.warning("quantize: %s is ignored on the GPU (quantisation is CPU-only)", quantize)
            quantize = None
        threads = int(options.get("threads", 0))
        if threads > 0 and not use_gpu:  # TorchServe leaves torch at one thread per core in every worker
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.threads_alone = int(options.get("threads_alone", 0)) or self.threads
        self.max_chars = required_option(options, "max_chars")
        self.model_pt_path = os.path.join(properties["model_dir"], self.manifest["model"]["serializedFile"])
        try:
            self.chatbot = load_chatbot(self.model_pt_path, device=self.device, quantize=quantize)
        except CheckpointError as e:
            # One clear line per try: TorchServe retries a failed worker with back-off until the
            # model-config's maxRetryTimeoutInSec, and its own log only says "Backend worker process died".
            logger.error("cannot load the chatbot from %s: %s: %s (rebuild the archive with `make mar`, "
                         "which validates the checkpoint)", os.path.basename(self.model_pt_path), type(e).__name__,
                         one_line(str(e)))
            raise
        # Decoding defaults and limits; a wrong value here fails the load with InvalidOption naming it
        self.defaults, self.limits = options_from_config(options, self.chatbot.max_length)
        self.initialized = True
        logger.info("seq2seq chatbot loaded from %s on %s (quantize=%s, %d %s tokens, max %d chars, model package "
                    "%s)", os.path.basename(self.model_pt_path), self.device, quantize,
                    self.chatbot.voc.num_words, self.chatbot.voc.kind, self.max_chars, os.path.dirname(model.__file__))

    def handle(self, data: list[dict], context) -> list[str]:
        """One response per request, always: TorchServe answers a whole batch 503 if this raises.

        BaseHandler.handle is not used: it would answer a batch whose first request carries a
        `describe: True` or `explain: True` header with one body (TorchServe then fails the batch).
        """
        start = time.time()
        self.context = context
        try:
            return self.postprocess(self.inference(self.preprocess(data)))
        except Exception as e:  # unreachable unless a guard itself is broken: still one reply per request
            log_failure(f"batch of {len(data)} failed outside the per-request guards", e)
            return [self.respond(idx, internal_error("answering its batch")) for idx in range(len(data))]
        finally:
            context.metrics.add_time("HandlerTime", round((time.time() - start) * 1000, 2), None, "ms")

    def preprocess(self, data: list[dict]) -> list[Outcome]:
        """A ChatRequest (text, reply format, token ids), the BadRequest that rejects it or an Answered response,
        per batch entry; each request's route (its url_path) is kept for its response."""
        self.paths = [guarded("reading the path", idx, lambda idx=idx: request_path(self.context, idx))
                      for idx in range(len(data))]
        self.streams = {}  # batch index -> the Streamed reply of a request with "stream": true
        return [guarded("reading the request", idx, lambda idx=idx, row=row: self.read_request(idx, row))
                for idx, row in enumerate(data)]

    def read_request(self, idx: int, row: dict) -> ChatRequest | Answered:
        """Parse, check the decoding options of and encode request `idx`, by its route; raises BadRequest,
        InvalidOption or NoKnownWordsError."""
        path = self.paths[idx]
        if isinstance(path, BadRequest) or path not in ROUTES:
            raise BadRequest(ErrorKind.NOT_FOUND, f"no route {str(path)[:80]!r} after the model's version: this model "
                             f"answers /predictions/{self.context.model_name} (its JSON and text API) and "
                             f".../v1/chat/completions, .../v1/models (OpenAI's API)")
        if path == openai_api.MODELS_PATH:
            return Answered(json.dumps(openai_api.models_body(self.context.model_name)) + "\n")
        if path == openai_api.CHAT_PATH:
            request = self.read_chat(*find_body(self.context, idx, row))
        else:
            request = parse_body(*find_body(self.context, idx, row), self.max_chars)
            request.options = parse_options(request.option_values, self.defaults, self.limits)
        logger.debug("request %d (%s): %r", idx, path or ("json" if request.as_json else "raw"), request.text)
        request.encoded = self.chatbot.encode(request.text)
        return request

    def read_chat(self, body: Any, content_type: str) -> ChatRequest:
        """A Chat Completions request: JSON whatever its Content-Type (the SDKs send application/json); its
        options' errors name the OpenAI field (n, not num_replies)."""
        if isinstance(body, (bytes, bytearray, str)):
            body = load_json(to_text(body, {}))
        elif body is None and media_type(content_type)[0] in FORM_TYPES:  # curl -d without a Content-Type
            raise BadRequest(ErrorKind.UNSUPPORTED_MEDIA_TYPE, "the body was sent as a form: send the Chat "
                             "Completions JSON with -H 'Content-Type: application/json'")
        request = openai_api.parse_chat(body, self.max_chars, self.context.model_name, self.limits)
        try:
            request.options = parse_options(request.option_values, self.defaults, self.limits)
        except InvalidOption as e:
            raise openai_api.invalid(openai_api.option_param(e.field), e.detail) from None
        return request

    def inference(self, requests: list[Outcome], *args, **kwargs) -> list[Outcome]:
        """Decode every usable request in ONE batched call: each gets its Reply, or the error that replaces it."""
        self.start_streams(requests)
        good = [idx for idx, r in enumerate(requests) if isinstance(r, ChatRequest)]
        if not good:
            return requests
        if self.device.type == "cpu":  # a lone request means an idle server: lend it the other cores
            torch.set_num_threads(self.threads_alone if len(good) == 1 else self.threads)
        start = time.perf_counter()
        found = self.decode_batch([requests[idx] for idx in good], good)
        seconds = time.perf_counter() - start
        replies = [f for f in found if isinstance(f, Reply)]
        self.observe("seq2seq_decode_seconds", seconds)
        self.observe_counts("seq2seq_batch_size", [len(good)])
        self.observe_counts("seq2seq_reply_words", [len(r.text.split()) for r in replies])
        self.observe("seq2seq_requests_decoded_total", len(replies))
        # DEBUG: at INFO this line would cost as much as the metrics, every batch
        logger.debug("batch of %d: %d decoded together in %.1f ms", len(requests), len(good), seconds * 1000)
        outcomes = list(requests)
        for idx, reply in zip(good, found):
            if isinstance(reply, Reply):
                requests[idx].reply = reply
            else:
                outcomes[idx] = reply
        return outcomes

    def decode(self, batch: list[ChatRequest], indices: list[int] | None = None) -> list[Reply]:
        """Each request's Reply: one batched search per decoding mode. indices: the batch's request indices, to
        stream the tokens of streamed requests as they are chosen (None: nothing is streamed)."""
        on_token = None
        if indices is not None and any(idx in self.streams for idx in indices):
            on_token = lambda i, token: self.stream_token(indices[i], token)  # noqa: E731
        return self.chatbot.answer([r.encoded for r in batch], [r.options for r in batch], on_token)

    def decode_batch(self, batch: list[ChatRequest], indices: list[int]) -> list[Reply | BadRequest]:
        """Replies for the batch in one call; if that call raises, each request alone, so only a bad one fails
        (streaming nothing more: a streamed reply's rest is sent when it is known, or its error)."""
        try:
            return self.decode(batch, indices)
        except Exception as e:
            # WARNING: the request that fails alone is logged at ERROR below; the others get their replies
            log_failure(f"batched decode of {len(batch)} requests failed, decoding them one by one", e,
                        logging.WARNING)
            self.observe("seq2seq_decode_fallbacks_total", 1)
        return [guarded("decoding the reply", idx, lambda request=request: self.decode([request])[0])
                for idx, request in zip(indices, batch)]

    def start_streams(self, requests: list[Outcome]) -> None:
        """Open the event stream of every usable request with "stream": true (one that cannot be opened gets its
        error instead)."""
        for idx, request in enumerate(requests):
            if isinstance(request, ChatRequest) and request.completion is not None and request.completion.stream:
                started = guarded("starting its stream", idx, lambda idx=idx, r=request: self.start_stream(idx, r))
                if isinstance(started, openai_api.Streamed):
                    self.streams[idx] = started
                else:
                    requests[idx] = started

    def start_stream(self, idx: int, request: ChatRequest) -> openai_api.Streamed:
        """Open request idx's event stream: status 200, the text/event-stream type and each choice's role chunk."""
        # the headers go out with the first piece: what the input lost is known before decoding
        self.set_response(idx, 200, openai_api.EVENT_STREAM, {"Cache-Control": "no-cache",
                                                              **input_headers(request.encoded),
                                                              **openai_api.CONTEXT_HEADERS})
        streamed = openai_api.Streamed(request.completion, self.chatbot.stream())
        self.send(idx, "".join(openai_api.chunk(request.completion, i, {"role": "assistant", "content": ""})
                               for i in range(request.options.num_replies)))
        return streamed

    def stream_token(self, idx: int, token: int) -> None:
        """Send the text one more token of request idx adds, if it completes any. Never raises: a stream that cannot
        be sent to stops streaming, and its request alone gets an error at the end."""
        streamed = self.streams.get(idx)
        if not isinstance(streamed, openai_api.Streamed) or streamed.failed:
            return
        try:
            delta = streamed.stop.push(streamed.text.push(token))
            if delta:
                self.send(idx, openai_api.chunk(streamed.completion, 0, {"content": delta}))
        except Exception as e:
            log_failure(f"request {idx} failed while streaming a token", e)
            streamed.failed = True

    def send(self, idx: int, body: str) -> None:
        """One intermediate response (a piece of request idx's chunked HTTP response), sent now."""
        send_intermediate_predict_response({idx: body}, {idx: self.context.get_request_id(idx)},
                                           "Intermediate Prediction success", 200, self.context)

    def stream_end(self, idx: int, request: ChatRequest, reply: Reply) -> str:
        """The last piece of a streamed reply: the text not streamed yet (all of it for beams and n > 1, one chunk
        per token), each choice's finish chunk, the usage chunk if asked for, and [DONE]."""
        streamed, completion, pieces = self.streams[idx], request.completion, []
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

    def postprocess(self, outcomes: list[Outcome]) -> list[str]:
        """One response body (a line of text or JSON) per request; status and headers set per request index."""
        return [self.respond(idx, outcome) for idx, outcome in enumerate(outcomes)]

    def respond(self, idx: int, outcome: Outcome) -> str:
        """Set request idx's status and headers and return its body, always encodable as UTF-8 (the worker
        encodes it; a lone surrogate there would kill the worker)."""
        try:
            if isinstance(outcome, ChatRequest) and outcome.reply is not None:
                return self.reply_body(idx, outcome, outcome.reply).encode("utf-8", "replace").decode("utf-8")
            if isinstance(outcome, Answered):
                self.set_response(idx, outcome.status, outcome.content_type, {})
                return outcome.body
        except Exception as e:
            log_failure(f"request {idx} failed while writing its reply", e)
            outcome = internal_error("writing the reply")
        if not isinstance(outcome, BadRequest):  # a stage returned nothing usable: our bug
            logger.error("request %d reached the response without a reply or an error", idx)
            outcome = internal_error("answering")
        return self.error_body(idx, outcome)

    def reply_body(self, idx: int, request: ChatRequest, reply: Reply) -> str:
        """Status 200 and the reply: a line of text (unknown words in a header) or JSON."""
        self.observe("seq2seq_unknown_words_total", len(reply.unknown_words))
        # the JSON API's body says these; the text and OpenAI routes' headers do
        headers = {} if request.as_json else input_headers(request.encoded)
        if request.completion is not None:  # the OpenAI route: a chat.completion, or a stream's last events
            headers.update(openai_api.CONTEXT_HEADERS)
            self.set_response(idx, 200, openai_api.EVENT_STREAM if idx in self.streams else JSON_TYPE, headers)
            if idx in self.streams:
                return self.stream_end(idx, request, reply)
            found = openai_api.choices(request.completion, reply, self.chatbot.voc.decode, EOS_token)
            body = openai_api.completion_body(request.completion, reply, found)
            return json.dumps(body, ensure_ascii=False) + "\n"
        self.set_response(idx, 200, JSON_TYPE if request.as_json else TEXT_TYPE, headers)
        if request.as_json:  # UTF-8 as it is (a Chinese reply reads as Chinese); respond() made it encodable
            return json.dumps(reply.body(), ensure_ascii=False) + "\n"
        return reply.text + "\n"  # a line, so `curl -T hello.txt` leaves the prompt on the next line

    def error_body(self, idx: int, error: BadRequest) -> str:
        """The error's status and JSON body for request idx (headers a stage may have set are dropped), in the
        OpenAI route's shape on that route; a stream already begun (status 200 sent) ends with an error event."""
        self.observe("seq2seq_bad_requests_total", 1, error.kind.type_name)
        self.observe("seq2seq_unknown_words_total", len(error.unknown_words))
        if idx in getattr(self, "streams", {}):
            return openai_api.event(openai_api.error_body(error)) + openai_api.DONE
        self.set_response(idx, error.kind.status, JSON_TYPE, {}, drop=("X-Unknown-Words", "X-Truncated"))
        if self.route(idx).startswith("v1/"):
            return json.dumps(openai_api.error_body(error)) + "\n"
        return json.dumps(error.body()) + "\n"

    def route(self, idx: int) -> str:
        """Request idx's url_path ('' when unknown)."""
        paths = getattr(self, "paths", [])
        return paths[idx] if idx < len(paths) and isinstance(paths[idx], str) else ""

    def set_response(self, idx: int, status: int, content_type: str, headers: dict, drop: tuple = ()) -> None:
        """Status, Content-Type and headers of HTTP request idx. Under TorchServe's KServe envelope a batch entry
        is an instance of one request, not a request: the request's status stays 200 and each instance's error
        is its JSON body among the predictions."""
        if not is_request(self.context, idx):
            return
        self.context.set_response_status(status, HTTPStatus(status).phrase, idx)
        self.context.set_response_content_type(idx, content_type)
        response_headers = self.context.get_response_headers(idx)
        for name in drop:
            response_headers.pop(name, None)
        for name, value in headers.items():
            self.context.set_response_header(idx, name, value)

    def observe_counts(self, name: str, values: list[int]) -> None:
        """Count `values` in the bucket counters of `name` (COUNT_BUCKETS: each value in every bucket it fits, and
        in +Inf), one update per bucket, and add their total to name_sum."""
        for bound in (*COUNT_BUCKETS[name], "+Inf"):
            self.observe(f"{name}_bucket", sum(1 for v in values if bound == "+Inf" or v <= bound), str(bound))
        self.observe(f"{name}_sum", sum(values))

    def observe(self, name: str, value: float, *dimensions: str) -> None:
        """Add `value` to the custom metric `name` (declared in metrics.yaml), for this model; never raises."""
        metrics = getattr(self.context, "metrics", None)
        if metrics is None or (value == 0 and METRICS[name] == MetricTypes.COUNTER):
            return
        try:
            metric = metrics.get_metric(name, METRICS[name])
            metric.add_or_update(value, [self.context.model_name, *dimensions])
        except Exception:  # not declared in the metrics config: TorchServe would drop it anyway
            logger.debug("metric %s could not be updated", name, exc_info=True)
