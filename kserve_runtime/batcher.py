"""Dynamic batching for an asyncio server, as TorchServe does it: requests that arrive together decode together.

KServe's Python server has none (its batcher is a Go sidecar that exists only in a cluster, for v1 only), so the
KServe runtime batches here. The rules are TorchServe's, from the archive's model-config:
- a batch is up to `batchSize` requests; the first waits at most `maxBatchDelay` ms for others, and requests that
  queued while the previous batch decoded join at once (under load batches fill while the decoder works);
- one decoder thread, off the event loop, as one TorchServe worker: the loop keeps taking requests meanwhile;
- the queue is bounded (`jobQueueSize`) and a request's jobs (a v1 request's instances, say) are admitted together
  or not at all: more jobs than the queue holds is TooMany (a 413 naming the limit, whatever the load), fewer than
  that but more than the free slots is QueueFull (a 503: retry), never left to wait without bound;
- a job whose client went away before its batch started is dropped from it (`Job.cancel`), and leaves its slot;
- stopping (`close`) answers every job not answered yet with Stopped, and a crash of the loop is logged and its
  batch answered with the exception, so no request waits forever.

Plain asyncio: no KServe import, so it is tested without the server.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """Too few of the queue's jobQueueSize slots are free for a request's jobs right now (retry)."""


class TooMany(Exception):
    """A request has more jobs than the queue holds at all (jobQueueSize): it can never be admitted."""


class Abandoned(Exception):
    """The job's client went away before its reply."""


class Stopped(Exception):
    """The server is stopping: the job was not answered, and will not be."""


@dataclass
class Job:
    """One request waiting for its batch: what to answer, and a queue of what it gets back: ("piece", x) for each
    streamed piece (in order), then ("final", response)."""

    request: Any
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False

    def cancel(self) -> None:
        """The client went away: leave the job out of any batch not started yet, and drop what it would get."""
        self.cancelled = True

    def abandon(self) -> None:
        """Cancel the job and end its events with Abandoned now (its reply, if a batch gives it one, is dropped)."""
        self.cancel()
        self.events.put_nowait(("final", Abandoned("the client went away")))

    async def final(self) -> Any:
        """The final response, skipping streamed pieces."""
        while True:
            kind, value = await self.events.get()
            if kind == "final":
                return value


# answer(requests, emit) -> one response per request; emit(i, piece) sends a piece of request i's stream
Answer = Callable[[list, Callable[[int, Any], None]], list]


class MicroBatcher:
    """Collect concurrent requests into batches and answer each batch with one call of `answer`, in a thread."""

    def __init__(self, answer: Answer, max_batch_size: int, max_delay_ms: float, max_queue: int):
        if max_batch_size < 1 or max_queue < 1 or max_delay_ms < 0:
            raise ValueError("batchSize and jobQueueSize must be at least 1 and maxBatchDelay at least 0")
        self.answer = answer
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay_ms / 1000
        self.max_queue = max_queue
        self.queue: asyncio.Queue = asyncio.Queue()  # bounded by waiting(): cancelled jobs free their slots
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="decoder")
        self.task: asyncio.Task | None = None
        self.current: list[Job] = []  # the batch being decoded
        self.closed = False
        self.batches = 0  # batches answered, for the tests and logs

    def submit(self, request: Any) -> Job:
        """Queue a request (its Job's events will say what it gets); QueueFull when jobQueueSize are waiting."""
        return self.submit_all([request])[0]

    def submit_all(self, requests: list) -> list[Job]:
        """Queue a request's jobs together, or none of them: TooMany when they are more than the queue holds,
        QueueFull when fewer slots are free now, Stopped once the batcher is closed."""
        if self.closed:
            raise Stopped("the server is stopping")
        if len(requests) > self.max_queue:
            raise TooMany(f"{len(requests)} texts in one request; the queue holds {self.max_queue} "
                          f"(the model-config's jobQueueSize): send at most {self.max_queue} at a time")
        free = self.max_queue - self.waiting()
        if len(requests) > free:
            raise QueueFull(f"{free} of {self.max_queue} queue slots are free, {len(requests)} needed")
        self.start()
        jobs = [Job(request) for request in requests]
        for job in jobs:
            self.queue.put_nowait(job)
        return jobs

    def waiting(self) -> int:
        """Jobs queued for a batch whose client is still there (a cancelled one has left its slot)."""
        return sum(not job.cancelled for job in self.queue._queue)  # asyncio.Queue's deque: read, never changed

    def start(self) -> None:
        """Start the batching loop on the running event loop (once)."""
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        """Until closed: take a batch, answer it in the decoder thread, hand each job its pieces and response. A
        crash is logged and its batch answered with the exception, and the loop goes on."""
        loop = asyncio.get_running_loop()
        while True:
            self.current = [job for job in await self.take() if not job.cancelled]
            if not self.current:
                continue
            emit = self.emitter(loop, self.current)
            try:
                responses = await loop.run_in_executor(self.executor, self.answer,
                                                       [j.request for j in self.current], emit)
            except asyncio.CancelledError:  # close(): it answers the batch
                raise
            except BaseException as e:  # answer() never raises by contract; if it does, every job still gets an end
                logger.exception("a batch of %d failed outside the core's guards", len(self.current))
                responses = [e] * len(self.current)
            self.batches += 1
            for job, response in zip(self.current, responses):
                job.events.put_nowait(("final", response))
            self.current = []

    async def take(self) -> list[Job]:
        """The next batch: the first job, all that are already queued, then more until maxBatchDelay or batchSize."""
        jobs = [await self.queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_delay
        while len(jobs) < self.max_batch_size:
            if not self.queue.empty():
                jobs.append(self.queue.get_nowait())
                continue
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        return jobs

    @staticmethod
    def emitter(loop: asyncio.AbstractEventLoop, jobs: list[Job]) -> Callable[[int, Any], None]:
        """emit(i, piece) for the decoder thread: hands the piece to job i on the event loop's thread."""
        def emit(i: int, piece: Any) -> None:
            if not jobs[i].cancelled:
                loop.call_soon_threadsafe(jobs[i].events.put_nowait, ("piece", piece))
        return emit

    def close(self) -> None:
        """Stop taking batches and answer every job not answered yet (queued, or in the batch being decoded) with
        Stopped; the decoder thread finishes its batch in the background."""
        self.closed = True
        if self.task is not None:
            self.task.cancel()
        stopped = Stopped("the server is stopping: retry on another replica")
        for job in self.current:
            job.events.put_nowait(("final", stopped))
        self.current = []
        while not self.queue.empty():
            self.queue.get_nowait().events.put_nowait(("final", stopped))
        self.executor.shutdown(wait=False)
