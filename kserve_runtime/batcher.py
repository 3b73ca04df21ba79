"""Dynamic batching for an asyncio server, as TorchServe does it: requests that arrive together decode together.

KServe's Python server has none (its batcher is a Go sidecar that exists only in a cluster, for v1 only), so the
KServe runtime batches here. The rules are TorchServe's, from the archive's model-config:
- a batch is up to `batchSize` requests; the first waits at most `maxBatchDelay` ms for others, and requests that
  queued while the previous batch decoded join at once (under load batches fill while the decoder works);
- one decoder thread, off the event loop, as one TorchServe worker: the loop keeps taking requests meanwhile;
- the queue is bounded (`jobQueueSize`): a request that finds it full is refused at once (QueueFull, a 503),
  never left to wait without bound;
- a request whose client went away before its batch started is dropped from it (`Job.cancel`).

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
    """The batcher's queue holds jobQueueSize requests already."""


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
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="decoder")
        self.task: asyncio.Task | None = None
        self.batches = 0  # batches answered, for the tests and logs

    def submit(self, request: Any) -> Job:
        """Queue a request (its Job's events will say what it gets); QueueFull when jobQueueSize are waiting."""
        self.start()
        job = Job(request)
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull(f"{self.queue.maxsize} requests are waiting already") from None
        return job

    def start(self) -> None:
        """Start the batching loop on the running event loop (once)."""
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        """Forever: take a batch, answer it in the decoder thread, hand each job its pieces and response."""
        loop = asyncio.get_running_loop()
        while True:
            jobs = [job for job in await self.take() if not job.cancelled]
            if not jobs:
                continue
            emit = self.emitter(loop, jobs)
            try:
                responses = await loop.run_in_executor(self.executor, self.answer, [j.request for j in jobs], emit)
            except Exception as e:  # answer() never raises by contract; if it does, every job still gets an end
                logger.exception("a batch of %d failed outside the core's guards", len(jobs))
                responses = [e] * len(jobs)
            self.batches += 1
            for job, response in zip(jobs, responses):
                job.events.put_nowait(("final", response))

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
        """Stop the loop and the decoder thread."""
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=False)
