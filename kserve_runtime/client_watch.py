"""Notice a client that goes away while its request waits, on every route (v1, v2 and OpenAI alike).

KServe calls a model's predict() with the parsed body only, so the model cannot ask the request whether its client
is still there. This ASGI middleware watches the connection once the body has been read: when the client closes
it, the request's `client_gone()` event is set, and the model takes its jobs out of the queue (and out of any batch
not started yet) instead of decoding replies nobody reads. Anything downstream that reads the connection after the
body (Starlette's streaming responses do) gets the disconnect as well.
"""
from __future__ import annotations

import asyncio
import contextvars

_GONE: contextvars.ContextVar[asyncio.Event | None] = contextvars.ContextVar("client_gone", default=None)


def client_gone() -> asyncio.Event:
    """The current request's event, set once its client has gone (a fresh, never-set one outside a request)."""
    return _GONE.get() or asyncio.Event()


class ClientWatch:
    """ASGI middleware: set the request's client_gone() event when its client disconnects."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        gone, watcher = asyncio.Event(), None

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        async def watched_receive():
            nonlocal watcher
            if watcher is not None:  # the body was read: only a disconnect is left to come
                await gone.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
            elif not message.get("more_body", False):
                watcher = asyncio.ensure_future(watch())
            return message

        token = _GONE.set(gone)
        try:
            await self.app(scope, watched_receive, send)
        finally:
            _GONE.reset(token)
            if watcher is not None:
                watcher.cancel()
