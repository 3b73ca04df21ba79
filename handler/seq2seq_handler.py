"""TorchServe handler for the seq2seq chatbot: one batched greedy decode per TorchServe batch.

Wire format (one HTTP request = one entry of the batch):

  Raw text: any Content-Type but JSON or a form, e.g. `curl -T hello.txt` or
  `curl --data-binary @hello.txt -H 'Content-Type: text/plain'` (a form field text=... works too)
    -> 200 text/plain; charset=utf-8, body: the reply and a newline,
       header X-Unknown-Words: the dropped words, comma-separated (absent when none)
  JSON: Content-Type: application/json, body {"text": "hello there"}
    -> 200 application/json {"reply": "hi .", "unknown_words": ["zorblax"]}

  A rejected request gets its own 4xx status and an application/json body
  {"code": <status>, "type": <ErrorType>, "message": <what to fix>, "unknown_words": [...]}:
    400 EmptyInput            no body, or only whitespace
    400 InvalidEncoding       the body is not UTF-8
    400 MalformedJSON         Content-Type application/json but the body does not parse
    400 MissingText           JSON that is not an object with a string "text"
    413 InputTooLong          more than max_chars characters (default 1000)
    415 UnsupportedMediaType  a form without a "text" field: plain `curl -d/--data-binary` sends
                              one, and TorchServe parses forms before the handler sees the body
    422 NoKnownWords          no word of the text is in the vocabulary (unknown_words lists them)
  The other requests of the same batch are answered normally.

Model-config YAML (packed into the .mar), section `handler:`:
  quantize: int8    CPU only, GRU/Linear weights: int8 (model/int8.py: int8 weights, each input row
                    quantised on its own range), fp16 (float16 weights, float32 maths), false (float32);
                    int8 and fp16 replies are bit for bit the same whatever shares their batch
  threads: 1        torch threads per worker (0: torch's default, one per core)
  threads_alone: 0  torch threads for a batch of one request, i.e. when nothing else is queued (0: as
                    threads); more cut its latency only on cores nothing else uses: OpenMP waits for
                    every thread at every op, so one busy neighbour process makes it ~100x slower
  max_chars: 1000   longest accepted text, in characters

Must run on Python 3.9 / torch 2.4 (the pytorch/torchserve image). TorchServe requires
exactly one class in this module, so requests and errors are plain dicts.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from http import HTTPStatus
from typing import Any

import torch
from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.base_handler import BaseHandler

# The archive unpacks the `model` package next to this file; the worker may start elsewhere.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import model  # noqa: E402
from model import CheckpointError, from_checkpoint, read_checkpoint  # noqa: E402

logger = logging.getLogger(__name__)

DEFAULT_MAX_CHARS = 1000
JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
BODY_FIELDS = ("body", "data", "text")  # raw body, multipart field "data", form field "text"

# Custom metrics: name -> type. They must also be declared in handler/metrics.yaml,
# with dimensions [ModelName] (+ [Reason] for bad requests), or TorchServe drops them.
METRICS = {
    "seq2seq_requests_decoded_total": MetricTypes.COUNTER,
    "seq2seq_bad_requests_total": MetricTypes.COUNTER,
    "seq2seq_unknown_words_total": MetricTypes.COUNTER,
    "seq2seq_reply_words": MetricTypes.HISTOGRAM,
    "seq2seq_batch_size": MetricTypes.HISTOGRAM,
    "seq2seq_decode_seconds": MetricTypes.HISTOGRAM,
}


def request_error(code: int, kind: str, message: str, unknown_words: list[str] | None = None) -> dict:
    """The JSON error body for one rejected request."""
    return {"code": code, "type": kind, "message": message, "unknown_words": list(unknown_words or [])}


def one_line(text: str) -> str:
    """`text` as one printable log line: torch's messages hold newlines and terminal escapes."""
    return "".join(c for c in " ".join(text.split()) if c.isprintable())


def media_type(value: str | None) -> str:
    """'application/json; charset=utf-8' -> 'application/json'; '' when no type was sent."""
    return (value or "").split(";")[0].strip().lower()


def request_header(context, idx: int, name: str) -> str:
    """An HTTP header of request `idx`, whatever its case ('' when absent)."""
    for key, value in (context.get_all_request_header(idx) or {}).items():
        if key.lower() == name and isinstance(value, str):
            return value
    return ""


def find_body(context, idx: int, row: dict) -> tuple[Any, str]:
    """(body as the worker decoded it: bytes, str or parsed JSON; its media type) of request `idx`.

    The body is the raw request body, a multipart field "data", or a form field "text";
    None when there is none (an empty form, or curl -d without a "text=" field).
    """
    for field in BODY_FIELDS:
        if field in row:
            header = context.get_request_header(idx, field)  # per field: {"content-type": ...}
            return row[field], media_type(header.get("content-type") if isinstance(header, dict) else None)
    return None, media_type(request_header(context, idx, "content-type"))


def missing_body_error(content_type: str) -> dict:
    """Why a request had no body: an HTML form without a "text" field, or nothing at all."""
    if content_type in FORM_TYPES:
        return request_error(415, "UnsupportedMediaType",
                             f"the body was sent as a form ({content_type}; plain curl -d and --data-binary "
                             "send one) without a \"text\" field: send raw text with -H 'Content-Type: "
                             "text/plain' or curl -T, JSON {\"text\": ...}, or the form field text=...")
    return request_error(400, "EmptyInput", "the request has no body")


def decode_text(body: Any, max_chars: int) -> tuple[str, dict | None]:
    """(text, None) for a usable raw body, else ("", error)."""
    if isinstance(body, (bytes, bytearray)):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            return "", request_error(400, "InvalidEncoding", "the request body is not valid UTF-8 text")
    if not isinstance(body, str):
        return "", request_error(400, "InvalidEncoding", "the request body is not text")
    return check_text(body, max_chars)


def decode_json(body: Any, max_chars: int) -> tuple[str, dict | None]:
    """(text, None) for a JSON body {"text": "..."}, else ("", error)."""
    if isinstance(body, (bytes, bytearray)):  # the worker could not parse it (or decoding is off)
        try:
            body = json.loads(bytes(body).decode("utf-8"))
        except UnicodeDecodeError:
            return "", request_error(400, "InvalidEncoding", "the JSON body is not valid UTF-8")
        except ValueError as e:  # json.JSONDecodeError; its message quotes positions, not the text
            return "", request_error(400, "MalformedJSON", f"the body is not valid JSON: {e}")
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        return "", request_error(400, "MissingText", 'the JSON body must be an object with a string field "text"')
    return check_text(body["text"], max_chars)


def check_text(text: str, max_chars: int) -> tuple[str, dict | None]:
    """(text, None) unless it is blank or longer than max_chars characters."""
    if not text.strip():
        return "", request_error(400, "EmptyInput", "the text is empty or only whitespace")
    if len(text) > max_chars:
        return "", request_error(413, "InputTooLong",
                                 f"the text has {len(text)} characters; send at most {max_chars}")
    return text, None


class Seq2seqHandler(BaseHandler):
    """Chatbot replies for a batch of raw-text or JSON requests, bad ones rejected one by one."""

    def initialize(self, context):
        """Rebuild the chatbot from the archive's checkpoint on the GPU TorchServe assigned, else the CPU."""
        self.context = context
        self.manifest = context.manifest
        properties = context.system_properties
        options = (getattr(context, "model_yaml_config", None) or {}).get("handler") or {}
        gpu_id = properties.get("gpu_id")
        use_gpu = torch.cuda.is_available() and gpu_id is not None
        self.device = torch.device(f"cuda:{gpu_id}" if use_gpu else "cpu")
        quantize = options.get("quantize", False)
        if quantize and use_gpu:
            logger.warning("quantize: %s is ignored on the GPU (quantisation is CPU-only)", quantize)
            quantize = False
        threads = int(options.get("threads", 0))
        if threads > 0 and not use_gpu:  # TorchServe leaves torch at one thread per core in every worker
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.threads_alone = int(options.get("threads_alone", 0)) or self.threads
        self.max_chars = int(options.get("max_chars", DEFAULT_MAX_CHARS))
        self.model_pt_path = os.path.join(properties["model_dir"], self.manifest["model"]["serializedFile"])
        try:
            with open(self.model_pt_path, "rb") as f:
                self.chatbot = from_checkpoint(read_checkpoint(f), device=self.device, quantize=quantize)
        except (OSError, CheckpointError) as e:
            # One clear line per try: TorchServe retries a failed worker with back-off until the
            # model-config's maxRetryTimeoutInSec, and its own log only says "Backend worker process died".
            logger.error("cannot load the chatbot from %s: %s: %s (rebuild the archive with `make mar`, "
                         "which validates the checkpoint)", os.path.basename(self.model_pt_path), type(e).__name__,
                         one_line(str(e)))
            raise
        self.initialized = True
        logger.info("seq2seq chatbot loaded from %s on %s (quantize=%s, %d words, max %d chars, model package %s)",
                    os.path.basename(self.model_pt_path), self.device, quantize,
                    self.chatbot.voc.num_words, self.max_chars, os.path.dirname(model.__file__))

    def preprocess(self, data: list[dict]) -> list[dict]:
        """One request dict per batch entry: its text and reply format, or the error that rejects it."""
        requests = []
        for idx, row in enumerate(data):
            body, content_type = find_body(self.context, idx, row)
            as_json = content_type == JSON_TYPE
            if body is None:
                text, error = "", missing_body_error(content_type)
            else:
                text, error = (decode_json if as_json else decode_text)(body, self.max_chars)
            logger.debug("request %d (%s): %r", idx, "json" if as_json else "raw", text)
            requests.append({"text": text, "as_json": as_json, "error": error, "reply": None})
        return requests

    def inference(self, requests: list[dict], *args, **kwargs) -> list[dict]:
        """Decode every request without an error in ONE Chatbot.reply_batch call."""
        good = [r for r in requests if r["error"] is None]
        if good:
            if self.device.type == "cpu":  # a lone request means an idle server: lend it the other cores
                torch.set_num_threads(self.threads_alone if len(good) == 1 else self.threads)
            start = time.perf_counter()
            replies = self.chatbot.reply_batch([r["text"] for r in good])
            seconds = time.perf_counter() - start
            for request, reply in zip(good, replies):
                request["reply"] = reply
                if reply.error:
                    request["error"] = request_error(422, "NoKnownWords", reply.error, reply.unknown_words)
            self.observe("seq2seq_decode_seconds", seconds)
            self.observe("seq2seq_batch_size", len(good))
            self.observe("seq2seq_requests_decoded_total", sum(r["error"] is None for r in good))
            self.observe("seq2seq_unknown_words_total", sum(len(r["reply"].unknown_words) for r in good))
            # DEBUG: at INFO this line would cost as much as the metrics, every batch
            logger.debug("batch of %d: %d decoded together in %.1f ms", len(requests), len(good), seconds * 1000)
        return requests

    def postprocess(self, requests: list[dict]) -> list[str]:
        """One response body (a line of text or JSON) per request; status and headers set per request index."""
        return [self.respond(idx, request) for idx, request in enumerate(requests)]

    def respond(self, idx: int, request: dict) -> str:
        """Set request idx's status and headers and return its body."""
        error = request["error"]
        if error is not None:
            self.context.set_response_status(error["code"], HTTPStatus(error["code"]).phrase, idx)
            self.context.set_response_content_type(idx, JSON_TYPE)
            self.observe("seq2seq_bad_requests_total", 1, error["type"])
            return json.dumps(error) + "\n"
        reply = request["reply"]
        self.observe("seq2seq_reply_words", len(reply.text.split()))
        self.context.set_response_status(200, "OK", idx)
        if request["as_json"]:
            self.context.set_response_content_type(idx, JSON_TYPE)
            return json.dumps({"reply": reply.text, "unknown_words": reply.unknown_words}) + "\n"
        self.context.set_response_content_type(idx, TEXT_TYPE)
        if reply.unknown_words:
            self.context.set_response_header(idx, "X-Unknown-Words", ",".join(reply.unknown_words))
        return reply.text + "\n"  # a line, so `curl -T hello.txt` leaves the prompt on the next line

    def observe(self, name: str, value: float, *dimensions: str) -> None:
        """Add `value` to the custom metric `name` (declared in metrics.yaml), for this model."""
        metrics = getattr(self.context, "metrics", None)
        if metrics is None or (value == 0 and METRICS[name] == MetricTypes.COUNTER):
            return
        try:
            metric = metrics.get_metric(name, METRICS[name])
        except Exception:  # not declared in the metrics config: TorchServe would drop it anyway
            logger.debug("metric %s is not declared in the metrics config", name)
            return
        metric.add_or_update(value, [self.context.model_name, *dimensions])
