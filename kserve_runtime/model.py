"""KServe's adapter for the serving core: the archive's chatbot as a `kserve.Model`, batched as TorchServe batches.

Routes (<model>: the served name, TorchServe's by default, config.properties' load_models):
- v1 `POST /v1/models/<model>:predict` `{"instances": [{"text": "hello", <options>}, "or a bare text", ...]}` ->
  `{"predictions": [<the JSON API's reply body, or the error body of that instance>, ...]}`;
- v2 `POST /v2/models/<model>/infer` with a BYTES input `text` (one or more texts) and the options as request
  `parameters` -> outputs `reply` (BYTES: each text's reply, "" where it got an error) and `error` (BYTES: "" or
  that text's error body as JSON);
- the OpenAI API under KServe's `/openai` prefix (openai_routes.py);
- KServe's own: v2 health and readiness, `/metrics` (with the core's seq2seq_* metrics beside KServe's).

A request with one instance (or one text) that is refused gets the error's own status and body, as from TorchServe;
in a request with several, each refused one is an error body among the others' replies (200): one bad instance
never fails the others. A full queue is a 503 ServiceUnavailable.
"""
from __future__ import annotations

import logging
import uuid
from typing import Any

import torch
from kserve import Model
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from prometheus_client import Counter, Histogram

from serving.core import COUNT_BUCKETS, METRICS, Incoming, Metrics, Response, json_error, load_core
from serving.wire import JSON_TYPE, TEXT_TYPE, BadRequest, ErrorKind, internal_error, load_json, to_text

from .archive import Archive
from .batcher import MicroBatcher, QueueFull

logger = logging.getLogger(__name__)
V2_INPUT = "text"  # the v2 input that holds the texts
V2_PROTOCOL_PARAMETERS = ("binary_data_output", "content_type", "headers")  # KServe's own, not decoding options


class Rejected(Exception):
    """A request answered with an error: its core Response (status and JSON body) goes back as it is."""

    def __init__(self, response: Response):
        super().__init__(response.body)
        self.response = response


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


def error(kind: ErrorKind, message: str) -> Response:
    """The core's error response (the JSON API's body) for what the adapter itself refuses."""
    return json_error(BadRequest(kind, message))


def busy(detail: str) -> Response:
    """The 503 of a full queue."""
    return error(ErrorKind.SERVICE_UNAVAILABLE, f"the server is busy ({detail}): retry shortly")


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

    def submit(self, request: Incoming) -> Any:
        """Queue a request for the next batch (its Job); Rejected with a 503 when the queue is full."""
        try:
            return self.batcher.submit(request)
        except QueueFull as e:
            raise Rejected(busy(str(e))) from None

    async def answer(self, requests: list[Incoming]) -> list[Response]:
        """Each request's Response, decoded in the batches it lands in (a request's instances usually share one)."""
        jobs = []
        try:
            for request in requests:
                jobs.append(self.submit(request))
            return [final(await job.final()) for job in jobs]
        except BaseException:  # refused, or the client went away: the others need not be decoded
            for job in jobs:
                job.cancel()
            raise

    async def predict(self, payload: Any, headers: dict | None = None, response_headers: dict | None = None) -> Any:
        """v1 (a dict with "instances") or v2 (an InferRequest)."""
        if isinstance(payload, InferRequest):
            return await self.predict_v2(payload)
        return await self.predict_v1(payload)

    async def predict_v1(self, payload: Any) -> dict:
        """{"instances": [...]} -> {"predictions": [...]}: each instance a JSON API request ({"text", options} or a
        bare text)."""
        if isinstance(payload, (bytes, bytearray)):  # sent without a JSON Content-Type: KServe left it unparsed
            try:
                payload = load_json(to_text(payload, {}))
            except BadRequest as e:
                raise Rejected(error(e.kind, e.message)) from None
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(instances, list) or not instances:
            raise Rejected(error(ErrorKind.MISSING_TEXT, 'the body must be {"instances": [{"text": ...}, ...]}'))
        responses = await self.answer([Incoming("", {"text": i} if isinstance(i, str) else i, JSON_TYPE)
                                       for i in instances])
        one_failed(responses)
        return {"predictions": [r.json() for r in responses]}

    async def predict_v2(self, request: InferRequest) -> InferResponse:
        """A BYTES input `text` (its options as request parameters) -> outputs `reply` and `error`."""
        texts = v2_texts(request)
        options = {k: v for k, v in (request.parameters or {}).items() if k not in V2_PROTOCOL_PARAMETERS}
        incoming = [Incoming("", {"text": t, **options}, JSON_TYPE) if isinstance(t, str) else
                    Incoming("", t, TEXT_TYPE) for t in texts]  # bytes that are not UTF-8: InvalidEncoding
        responses = await self.answer(incoming)
        one_failed(responses)
        replies = [r.json().get("reply", "") if r.status == 200 else "" for r in responses]
        errors = ["" if r.status == 200 else r.body.strip() for r in responses]
        outputs = [InferOutput("reply", [len(texts)], "BYTES", replies),
                   InferOutput("error", [len(texts)], "BYTES", errors)]
        return InferResponse(request.id or str(uuid.uuid4()), self.name, outputs)

    def stop(self):
        if self.batcher is not None:
            self.batcher.close()


def final(value: Any) -> Response:
    """A job's final value as a Response (the batcher hands an exception over if a batch failed outside the core)."""
    return value if isinstance(value, Response) else json_error(internal_error("answering its batch"))


def one_failed(responses: list[Response]) -> None:
    """A lone request that was refused gets its own status and body (Rejected); several go back as they are."""
    if len(responses) == 1 and responses[0].status != 200:
        raise Rejected(responses[0])


def v2_texts(request: InferRequest) -> list:
    """The texts of the BYTES input `text`: str, or bytes where they are not UTF-8; Rejected when there is none."""
    found = next((i for i in request.inputs if i.name == V2_INPUT), None)
    if found is None or found.datatype != "BYTES":
        raise Rejected(error(ErrorKind.MISSING_TEXT, f'the request needs a BYTES input named "{V2_INPUT}"'))
    texts = []
    for value in flatten(found.data):
        if isinstance(value, (bytes, bytearray)):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                value = bytes(value)
        texts.append(value)
    if not texts:
        raise Rejected(error(ErrorKind.EMPTY_INPUT, f'the input "{V2_INPUT}" holds no text'))
    return texts


def flatten(data: Any) -> list:
    """A tensor's nested lists (or numpy array) as one flat list."""
    if hasattr(data, "tolist"):
        data = data.tolist()
    if isinstance(data, (list, tuple)):
        return [v for item in data for v in flatten(item)]
    return [data]
