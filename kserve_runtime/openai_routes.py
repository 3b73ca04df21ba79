"""The OpenAI API on KServe: `/openai/v1/chat/completions` (SSE streaming included) and `/openai/v1/models`.

KServe's own OpenAI classes import vLLM, so the runtime adds its routes to `kserve.model_server.app` before the
server starts, under KServe's `/openai` prefix (`/v1/models` is KServe's v1 protocol). The serving core answers
them as on TorchServe: the SDK's base_url is `http://127.0.0.1:8180/openai/v1`.
"""
from __future__ import annotations

import json
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response as HTTPResponse
from starlette.responses import StreamingResponse

from serving import openai_api
from serving.wire import Incoming, Response

from .batcher import Abandoned
from .client_watch import current_client
from .model import Seq2seqModel, final
from .protocols import OPENAI_PREFIX, Rejected, client_gone

PREFIX = OPENAI_PREFIX


def to_http(response: Response) -> HTTPResponse:
    """A core Response as Starlette's."""
    return HTTPResponse(response.body, response.status, response.headers, media_type=response.content_type)


def finite(value: Any) -> Any:
    """`value` with every non-finite float as a string: JSON has no Infinity or NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def invalid_body(request: Request, error: RequestValidationError) -> HTTPResponse:
    """FastAPI's 422 for a body that does not fit KServe's v2 schema, renderable whatever the body held (FastAPI's
    own handler fails on a non-finite number such as `"shape": Infinity`, and KServe then answers 500)."""
    body = json.dumps({"detail": finite(json.loads(json.dumps(error.errors(), default=str)))})
    return HTTPResponse(body, 422, media_type="application/json")


def add_routes(app: FastAPI, model: Seq2seqModel) -> None:
    """Serve the OpenAI API of `model` on `app`, the core's error responses for requests it refuses, and a 422 for
    any body KServe's v2 schema refuses."""
    app.add_exception_handler(Rejected, lambda request, e: to_http(e.response))
    app.add_exception_handler(RequestValidationError, invalid_body)

    @app.get(f"{PREFIX}/{openai_api.MODELS_PATH}")
    async def models() -> HTTPResponse:
        return to_http(model.core.answer([Incoming(openai_api.MODELS_PATH)])[0])

    @app.post(f"{PREFIX}/{openai_api.CHAT_PATH}")
    async def chat_completions(request: Request) -> HTTPResponse:
        incoming = Incoming(openai_api.CHAT_PATH, await request.body(), request.headers.get("content-type", ""))
        [job] = model.submit_all([incoming])
        first = await first_event(job)
        if first is None:  # the client went away before its batch: it was never decoded
            return to_http(client_gone(incoming.route))
        kind, value = first
        if kind == "final":
            return to_http(final(incoming, value))
        return StreamingResponse(pieces(job, incoming, value), value.status, value.headers,
                                 media_type=value.content_type)


async def pieces(job, incoming: Incoming, first: Response):
    """A streamed response's bodies: the first piece, each piece as it is decoded, then the last; the job is
    cancelled if the client goes away (Starlette then stops this generator)."""
    try:
        yield first.body
        while True:
            kind, value = await job.events.get()
            yield final(incoming, value).body if kind == "final" else value.body
            if kind == "final":
                return
    finally:
        job.cancel()


async def first_event(job: Any) -> tuple | None:
    """The job's first event, or None if the client went away first (the job is then cancelled)."""
    current_client().on_gone(job.abandon)
    kind, value = await job.events.get()
    return None if kind == "final" and isinstance(value, Abandoned) else (kind, value)
