"""A bound on request bodies for the KServe runtime, as TorchServe's max_request_size is: uvicorn reads any body.

A body whose Content-Length is over the limit gets a 413 InputTooLong before any of it is read; a chunked body that
grows past it is cut off (the request ends as if its client had gone away).
"""
from __future__ import annotations

import json

from serving.wire import BadRequest, ErrorKind


class BodyLimit:
    """ASGI middleware: refuse HTTP request bodies of more than `limit` bytes."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.limit:
            return await self.refuse(int(length), send)
        seen = 0

        async def bounded():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    return {"type": "http.disconnect"}
            return message

        return await self.app(scope, bounded, send)

    async def refuse(self, length: int, send) -> None:
        """413 with the core's error body."""
        body = json.dumps(BadRequest(ErrorKind.INPUT_TOO_LONG, f"the request body has {length} bytes; send at "
                                     f"most {self.limit}").body()).encode() + b"\n"
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
