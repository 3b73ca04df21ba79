"""A bound on request bodies for the KServe runtime, as TorchServe's max_request_size is: uvicorn reads any body.

A body whose Content-Length is over the limit gets a 413 InputTooLong before any of it is read; a chunked body gets
it once it grows past the limit (the app then reads the end of the request, and whatever it answers is dropped).
"""
from __future__ import annotations

from serving.wire import ErrorKind

from .protocols import refused, route_of


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
            return await self.refuse(scope, int(length), send)
        seen, refused = 0, False

        async def bounded():
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    refused = True
                    await self.refuse(scope, seen, send)
            return {"type": "http.disconnect"} if refused else message

        async def unless_refused(message):
            if not refused:
                await send(message)

        return await self.app(scope, bounded, unless_refused)

    async def refuse(self, scope, length: int, send) -> None:
        """413 with the error body of the route's protocol."""
        response = refused(route_of(scope.get("path", "")), ErrorKind.INPUT_TOO_LONG,
                           f"the request body has {length} bytes or more; send at most {self.limit}")
        body = response.body.encode()
        headers = [(b"content-type", response.content_type.encode()), (b"content-length", str(len(body)).encode())]
        headers += [(name.encode(), value.encode()) for name, value in response.headers.items()]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
