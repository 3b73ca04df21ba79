"""TorchServe's adapter for the serving core (serving/pipeline.py): each TorchServe batch decoded together, one batched
search per decoding mode, each request isolated from the others.

The core's protocol objects own every request format, option, OpenAI mapping, stream event and error body (README:
"Talk to the bot", "OpenAI-compatible API"); serving/pipeline.py writes down the adapter contract. This handler only
moves requests and responses in and out of TorchServe:
- in: each batch entry's body as the worker decoded it (raw body, multipart field "data" or form field "text"), its
  Content-Type, and its route, the path after /predictions/{model}/{version}/, which TorchServe 0.12's frontend
  puts in the request header `url_path` ("" for /predictions/{model}: the JSON and text API);
- out: each request's status, Content-Type and headers through TorchServe's context, its body as the return value,
  and the pieces of a streamed response through `send_intermediate_predict_response` as they are decoded;
- metrics: the core's seq2seq_* metrics through TorchServe's metrics API (declared in handler/metrics.yaml), counters
  summed in the worker and handed over once every `metrics_interval_s` (serving.metrics.BufferedMetrics).

Model-config YAML (packed into the .mar), section `handler:` (serving/loading.py's load_core reads it):
  quantize: int8    CPU only, GRU/Linear weights: int8 (model/int8.py), fp16, false (float32)
  threads: 1        torch threads per worker (0: torch's default, one per core)
  threads_alone: 0  torch threads for a batch of one request (0: as threads)
  compiled_decode: true  greedy search's loop compiled (model/greedy_loop.py); false: the Python loop, to compare
  metrics_interval_s: 1  the seq2seq_* counters reach TorchServe at most this late (0: every update at once)
  max_chars: 1000   longest accepted text, in characters
  beam_size, num_replies, ...: decoding defaults; limits: {max_length, beam_size, num_replies}

Must run on Python 3.9 / torch 2.4 (the pytorch/torchserve image). TorchServe requires exactly one class in this
module; the archive unpacks the `model` and `serving` packages beside it.
"""
from __future__ import annotations

import atexit
import logging
import os
import sys
import time
from http import HTTPStatus
from typing import Any

import torch
from ts.handler_utils.utils import send_intermediate_predict_response
from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.base_handler import BaseHandler

# The archive unpacks the `model` and `serving` packages next to this file; the worker may start elsewhere.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from serving.loading import load_core, metrics_interval  # noqa: E402
from serving.metrics import METRICS, BufferedMetrics  # noqa: E402
from serving.pipeline import log_failure, protocol_for  # noqa: E402
from serving.wire import BODY_FIELDS, Incoming, Response, internal_error  # noqa: E402

logger = logging.getLogger(__name__)
METRIC_TYPES = {"counter": MetricTypes.COUNTER, "counts": MetricTypes.COUNTER, "histogram": MetricTypes.HISTOGRAM}


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


def find_body(context, idx: int, row: dict) -> tuple[Any, str]:
    """(body as the worker decoded it: bytes, str, parsed JSON or None; its Content-Type) of request `idx`.

    The body is the raw request body, a multipart field "data", or a form field "text"; None when there is none.
    The raw body's type is the request's Content-Type header: the frontend passes the worker its media type
    without the charset parameter.
    """
    for name in BODY_FIELDS:
        if name in row:
            header = context.get_request_header(idx, name) if is_request(context, idx) else None  # per field
            part_type = header.get("content-type") if isinstance(header, dict) else None
            return row[name], (request_header(context, idx, "content-type") if name == "body" else "") or part_type
    return None, request_header(context, idx, "content-type")


def incoming(context, idx: int, row: dict) -> Incoming:
    """Batch entry idx as the core takes it: its route (the url_path header, set first empty and then to the path:
    the last value is the one kept), body and Content-Type."""
    try:
        return Incoming(request_header(context, idx, "url_path").strip("/"), *find_body(context, idx, row))
    except Exception as e:  # our bug: this request alone gets a 500
        log_failure(f"request {idx} could not be read from its batch", e)
        return Incoming("", failed="reading the request")


class Seq2seqHandler(BaseHandler):
    """Chatbot replies for a batch of requests: TorchServe's side of serving/pipeline.py."""

    def initialize(self, context):
        """Rebuild the chatbot from the archive's checkpoint on the GPU TorchServe assigned, else the CPU."""
        self.context = context
        self.manifest = context.manifest
        properties = context.system_properties
        section = (getattr(context, "model_yaml_config", None) or {}).get("handler") or {}
        gpu_id = properties.get("gpu_id")
        use_gpu = torch.cuda.is_available() and gpu_id is not None
        self.device = torch.device(f"cuda:{gpu_id}" if use_gpu else "cpu")
        self.model_pt_path = os.path.join(properties["model_dir"], self.manifest["model"]["serializedFile"])
        metrics = BufferedMetrics(self.observe, metrics_interval(section))
        atexit.register(metrics.flush)  # a worker that exits normally hands over what is pending
        self.core = load_core(self.model_pt_path, section, context.model_name, self.device, metrics)
        self.initialized = True

    def handle(self, data: list[dict], context) -> list[str]:
        """One response per request, always: TorchServe answers a whole batch 503 if this raises.

        BaseHandler.handle is not used: it would answer a batch whose first request carries a
        `describe: True` or `explain: True` header with one body (TorchServe then fails the batch); and the core
        answers a batch in one call (serving/pipeline.py's adapter contract), not in preprocess/inference/postprocess.
        """
        start = time.time()
        self.context = context
        requests = [incoming(context, idx, row) for idx, row in enumerate(data)]
        try:
            responses = self.core.answer(requests, self.emit)
        except Exception as e:  # unreachable unless the core's guards are broken: still one reply per request
            log_failure(f"batch of {len(data)} failed outside the per-request guards", e)
            responses = [protocol_for(r.route).error(internal_error("answering its batch")) for r in requests]
        finally:
            context.metrics.add_time("HandlerTime", round((time.time() - start) * 1000, 2), None, "ms")
        for idx, response in enumerate(responses):
            self.set_response(idx, response)
        return [response.body for response in responses]

    def emit(self, idx: int, piece: Response) -> None:
        """One piece of request idx's streamed response (a chunk of its HTTP response), sent now."""
        self.set_response(idx, piece)
        send_intermediate_predict_response({idx: piece.body}, {idx: self.context.get_request_id(idx)},
                                           "Intermediate Prediction success", 200, self.context)

    def set_response(self, idx: int, response: Response) -> None:
        """Status, Content-Type and headers of HTTP request idx. Under TorchServe's KServe envelope a batch entry
        is an instance of one request, not a request: the request's status stays 200 and each instance's error
        is its JSON body among the predictions."""
        if not is_request(self.context, idx):
            return
        self.context.set_response_status(response.status, HTTPStatus(response.status).phrase, idx)
        self.context.set_response_content_type(idx, response.content_type)
        for name, value in response.headers.items():
            self.context.set_response_header(idx, name, value)

    def observe(self, name: str, value: float, *dimensions: str) -> None:
        """Add `value` to the core's metric `name` (a "counts" metric's name_bucket or name_sum counter) through
        TorchServe's metrics API, for this model; never raises."""
        kind = METRIC_TYPES[METRICS.get(name) or METRICS[name.rsplit("_", 1)[0]]]
        if getattr(self.context, "metrics", None) is None or (value == 0 and kind == MetricTypes.COUNTER):
            return
        try:
            self.context.metrics.get_metric(name, kind).add_or_update(value, [self.context.model_name, *dimensions])
        except Exception:  # not declared in the metrics config: TorchServe would drop it anyway
            logger.debug("metric %s could not be updated", name, exc_info=True)
