"""TorchServe's model worker in-process: requests framed as the frontend sends them, decoded by TorchServe's own
`otf_message_handler`, batched by `Service.retrieve_data_for_inference`, and the responses encoded by
`create_predict_response`. Bodies reach the handler exactly as in production (JSON parsed, text/* decoded,
anything else bytes). Used by test_handler.py and the fuzzing in test_reliability.py.
"""
from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import yaml
from ts.context import Context
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
from ts.protocol.otf_message_handler import _retrieve_input_data, create_predict_response
from ts.service import Service

from handler import seq2seq_handler
from harness.launcher import MODEL_NAME, REPO

FORM = "application/x-www-form-urlencoded"


class FakeSocket:
    """Just enough of a socket for TorchServe's frame decoder."""

    def __init__(self, data: bytes):
        self.stream = io.BytesIO(data)

    def recv(self, n: int) -> bytes:
        return self.stream.read(n)


def frame(*parts: bytes) -> bytes:
    return b"".join(struct.pack("!i", len(p)) + p for p in parts)


def request(body: bytes | str | None, content_type: str = "", field: str = "body", request_type: str = "",
            headers: dict | None = None) -> dict:
    """One batch entry as the worker builds it from the frontend's message.

    body None: no body parameter at all (what the frontend sends for a form without fields).
    request_type: the HTTP Content-Type header (defaults to content_type). headers: more HTTP headers.
    """
    if isinstance(body, str):
        body = body.encode("utf-8")
    parameters = []
    if body is not None:
        parameters.append(_retrieve_input_data(FakeSocket(frame(field.encode(), content_type.encode(), body))))
    headers = {"Content-Type": request_type or content_type, **(headers or {})}
    return {"requestId": b"", "parameters": parameters,
            "headers": [{"name": name.encode(), "value": value.encode()} for name, value in headers.items()]}


def json_request(payload: object) -> dict:
    return request(json.dumps(payload), "application/json")


@dataclass
class Response:
    status: int
    content_type: str
    headers: dict
    body: str

    def json(self):
        return json.loads(self.body)


def make_context(model_dir: Path, handler_options: dict | None = None, gpu: int | None = None) -> Context:
    """TorchServe's Context as the worker builds it for a model from the archive in `model_dir`."""
    model_config = yaml.safe_load((REPO / "handler" / "model-config.yaml").read_text())
    model_config["handler"].update(handler_options or {})
    metrics = MetricsCacheYamlImpl(str(REPO / "handler" / "metrics.yaml"))
    metrics.initialize_cache()
    metrics.model_name = MODEL_NAME
    manifest = {"model": {"modelName": "seq2seq", "serializedFile": "1_checkpoint.tar",
                          "handler": "seq2seq_handler.py", "configFile": "model-config.yaml"}}
    return Context(MODEL_NAME, str(model_dir), manifest, model_config["batchSize"], gpu, "0.12.0",
                   metrics=metrics, model_yaml_config=model_config)


def run_batch(handler, entries: list[dict]) -> list[Response]:
    """Send one batch through handler.handle as TorchServe's Service.predict does, and encode the
    responses as the worker does (that must not raise: it would kill the worker)."""
    for i, entry in enumerate(entries):
        entry["requestId"] = f"req-{i}".encode()
    headers, inputs, request_ids = Service.retrieve_data_for_inference(entries)
    context = handler.context
    context.request_processor, context.request_ids = headers, request_ids
    context.metrics.set_request_ids(request_ids)
    bodies = handler.handle(inputs, context)
    assert len(bodies) == len(entries)
    create_predict_response(bodies, request_ids, "Prediction success", 200, context)  # what the worker sends
    return [Response(context.get_response_status(i)[0], context.get_response_content_type(i),
                     dict(context.get_response_headers(i)), body.decode("utf-8") if isinstance(body, bytes) else body)
            for i, body in enumerate(bodies)]


def start_handler(model_dir: Path, **handler_options) -> seq2seq_handler.Seq2seqHandler:
    handler = seq2seq_handler.Seq2seqHandler()
    handler.initialize(make_context(model_dir, handler_options))
    return handler
