"""Notice a client that goes away while its request waits, on every route (v1, v2 and OpenAI alike).

KServe calls a model's predict() with the parsed body only, so the model cannot ask the request whether its client
is still there. This ASGI middleware watches the connection once the body has been read: when the client closes
it, the request's Client (`current_client()`) runs what was registered with `on_gone`: the model takes its jobs out
of the queue (and out of any batch not started yet) instead of decoding replies nobody reads. Anything downstream
that reads the connection after the body (Starlette's streaming responses do) gets the disconnect as well.
"""
from __future__ import annotations

import asyncio
import contextvars


class Client:
    """The current request's client: whether it has gone, and what is to happen when it goes (callbacks run on the
    event loop, at once)."""

    def __init__(self):
        self.event = asyncio.Event()
        self.callbacks = []

    @property
    def gone(self) -> bool:
        return self.event.is_set()

    def on_gone(self, callback) -> None:
        """Run callback() when the client goes (now, if it has gone already)."""
        if self.gone:
            callback()
        else:
            self.callbacks.append(callback)

    def went(self) -> None:
        if not self.gone:
            self.event.set()
            for callback in self.callbacks:
                callback()


WATCH_AFTER_S = 0.02  # how long a request waits before its connection is watched (a timer, not a task, until then)
_CLIENT: contextvars.ContextVar[Client | None] = contextvars.ContextVar("client", default=None)


def current_client() -> Client:
    """The current request's Client (a fresh one, which never goes, outside a request)."""
    return _CLIENT.get() or Client()


class ClientWatch:
    """ASGI middleware: tell the request's Client when its client disconnects."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        client, watcher = Client(), None

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            client.went()

        def start_watching() -> None:
            nonlocal watcher
            watcher = asyncio.ensure_future(watch())

        async def watched_receive():
            nonlocal later
            if later is not None:  # the body was read: only a disconnect is left to come
                await client.event.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                client.went()
            elif not message.get("more_body", False):
                # a request answered within WATCH_AFTER_S needs no watch: no task for most requests under load
                later = asyncio.get_running_loop().call_later(WATCH_AFTER_S, start_watching)
            return message

        later = None
        token = _CLIENT.set(client)
        try:
            await self.app(scope, watched_receive, send)
        finally:
            _CLIENT.reset(token)
            if later is not None:
                later.cancel()
            if watcher is not None:
                watcher.cancel()
