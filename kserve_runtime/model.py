"""KServe's adapter for the serving core: the archive's chatbot as a `kserve.Model`, batched as TorchServe batches.

Routes (<model>: the served name, TorchServe's by default, config.properties' load_models):
- v1 `POST /v1/models/<model>:predict` and v2 `POST /v2/models/<model>/infer` (protocols.py: KServe's envelopes
  around the JSON API's requests and replies);
- the OpenAI API under KServe's `/openai` prefix (openai_routes.py);
- KServe's own: v2 health and readiness, `/metrics` (with the core's seq2seq_* metrics beside KServe's).

It keeps serving/pipeline.py's adapter contract: a request's texts are admitted to the batcher together (a 413
naming jobQueueSize when they are more than it holds, a 503 only when too few slots are free now), each batch is
one core.answer call, and the refusals it makes itself (too many, busy, client gone, stopping) come from the
route's protocol object.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from kserve import Model
from kserve.protocol.infer_type import InferRequest
from prometheus_client import Counter, Histogram

from serving.loading import load_core
from serving.metrics import COUNT_BUCKETS, METRICS, Metrics
from serving.pipeline import protocol_for
from serving.wire import ErrorKind, Incoming, Response, internal_error

from .archive import Archive
from .batcher import Abandoned, MicroBatcher, QueueFull, Stopped, TooMany
from .client_watch import current_client
from .protocols import V1, V2, Rejected, client_gone, refused

logger = logging.getLogger(__name__)


class PrometheusMetrics(Metrics):
    """The core's metrics as prometheus_client metrics in the default registry, which KServe's /metrics serves:
    the same names as TorchServe's (a "counts" metric is a histogram of its COUNT_BUCKETS), label ModelName."""

    def __init__(self, model_name: str):
        super().__init__()
        self.model_name = model_name
        self.metrics = {}
        for name, kind in METRICS.items():
            labels = ["ModelName", "Reason"] if name == "seq2seq_bad_requests_total" else ["ModelName"]
            about = name.replace("_", " ")
            if kind == "counter":
                self.metrics[name] = Counter(name, about, labels)
            else:
                self.metrics[name] = Histogram(name, about, labels, **(
                    {"buckets": COUNT_BUCKETS[name]} if kind == "counts" else {}))

    def observe(self, name: str, value: float, *dimensions: str) -> None:
        metric = self.metrics[name].labels(self.model_name, *dimensions)
        if isinstance(metric, Histogram):
            metric.observe(value)
        elif value:
            metric.inc(value)

    def observe_counts(self, name: str, values: list[int]) -> None:
        for value in values:
            self.observe(name, value)


class Seq2seqModel(Model):
    """The archive's chatbot behind KServe's v1 and v2 protocols (and, through openai_routes, OpenAI's API)."""

    def __init__(self, name: str, archive: Archive):
        super().__init__(name)
        self.archive = archive
        self.core = None
        self.batcher = None

    def load(self) -> bool:
        """Load the checkpoint as TorchServe's handler does (the same model-config), and set up batching."""
        device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        self.core = load_core(str(self.archive.checkpoint), self.archive.handler_section, self.name, device,
                              PrometheusMetrics(self.name))
        config = self.archive.model_config
        self.batcher = MicroBatcher(self.core.answer, int(config.get("batchSize", 1)),
                                    float(config.get("maxBatchDelay", 100)), int(config.get("jobQueueSize", 100)))
        self.ready = True
        return self.ready

    def submit_all(self, requests: list[Incoming]) -> list:
        """Queue a request's texts together (their Jobs); Rejected, in the route's protocol, when they can never fit
        (413), do not fit now (503) or the server is stopping (503)."""
        try:
            return self.batcher.submit_all(requests)
        except TooMany as e:
            kind, message = ErrorKind.INPUT_TOO_LONG, str(e)
        except QueueFull as e:
            kind, message = ErrorKind.SERVICE_UNAVAILABLE, f"the server is busy ({e}): retry shortly"
        except Stopped as e:
            kind, message = ErrorKind.SERVICE_UNAVAILABLE, str(e)
        raise Rejected(refused(requests[0].route, kind, message))

    async def answer(self, requests: list[Incoming]) -> list[Response]:
        """Each request's Response, decoded in the batches it lands in (a request's texts usually share one). If
        the client goes away first, its jobs leave the queue and any batch not started yet (Rejected, 499)."""
        jobs = self.submit_all(requests)
        current_client().on_gone(lambda: [job.abandon() for job in jobs])
        finals = [await job.final() for job in jobs]
        if any(isinstance(value, Abandoned) for value in finals):
            raise Rejected(client_gone(requests[0].route))
        return [final(request, value) for request, value in zip(requests, finals)]

    async def predict(self, payload: Any, headers: dict | None = None, response_headers: dict | None = None) -> Any:
        """v1 (a dict with "instances") or v2 (an InferRequest)."""
        if isinstance(payload, InferRequest):
            return V2.reply(payload, await self.answer(V2.parse(payload)), self.name)
        return V1.reply(await self.answer(V1.parse(payload)))

    def stop(self):
        if self.batcher is not None:
            self.batcher.close()


def final(request: Incoming, value: Any) -> Response:
    """A job's final value as a Response: the batcher hands over Stopped when the server stops before the job was
    answered, or an exception if a batch failed outside the core's guards."""
    if isinstance(value, Response):
        return value
    if isinstance(value, Stopped):
        return refused(request.route, ErrorKind.SERVICE_UNAVAILABLE, str(value))
    return protocol_for(request.route).error(internal_error("answering its batch"))
