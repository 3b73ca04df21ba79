"""The KServe runtime's micro-batcher (kserve_runtime/batcher.py), in plain asyncio: TorchServe's batching rules
(batchSize, maxBatchDelay, jobQueueSize), decoding off the event loop, and cancellation."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from kserve_runtime.batcher import MicroBatcher, QueueFull, Stopped, TooMany


class Recorder:
    """An `answer` that records each batch (and the thread it ran in), optionally slowly, and streams a piece per
    request before answering it."""

    def __init__(self, seconds: float = 0.0):
        self.batches, self.threads, self.seconds = [], [], seconds

    def __call__(self, requests: list, emit) -> list:
        self.batches.append(list(requests))
        self.threads.append(threading.current_thread().name)
        for i, request in enumerate(requests):
            emit(i, f"piece of {request}")
        time.sleep(self.seconds)
        return [f"reply to {r}" for r in requests]


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_requests_share_batches_of_at_most_batch_size():
    async def main():
        answer = Recorder(seconds=0.05)
        batcher = MicroBatcher(answer, max_batch_size=4, max_delay_ms=50, max_queue=100)
        jobs = [batcher.submit(i) for i in range(10)]
        replies = [await job.final() for job in jobs]
        batcher.close()
        return answer, replies

    answer, replies = run(main())
    assert replies == [f"reply to {i}" for i in range(10)]  # each its own reply, in order
    assert [len(b) for b in answer.batches] == [4, 4, 2]
    assert all(name.startswith("decoder") for name in answer.threads)  # never on the event loop's thread


def test_a_lone_request_waits_at_most_the_batch_delay():
    async def main():
        batcher = MicroBatcher(Recorder(), max_batch_size=8, max_delay_ms=30, max_queue=10)
        start = time.perf_counter()
        await batcher.submit("alone").final()
        batcher.close()
        return time.perf_counter() - start

    assert 0.025 <= run(main()) < 0.5


def test_a_full_batch_starts_at_once_and_requests_queued_during_a_decode_fill_the_next():
    async def main():
        answer = Recorder(seconds=0.1)
        batcher = MicroBatcher(answer, max_batch_size=8, max_delay_ms=1000, max_queue=100)
        start = time.perf_counter()
        first = [batcher.submit(f"first {i}") for i in range(8)]  # full: no waiting for the 1 s delay
        await asyncio.sleep(0.05)  # the first batch decodes; these queue meanwhile and fill the next
        later = [batcher.submit(f"later {i}") for i in range(8)]
        await asyncio.gather(*(j.final() for j in first + later))
        batcher.close()
        return answer.batches, time.perf_counter() - start

    batches, seconds = run(main())
    assert batches == [[f"first {i}" for i in range(8)], [f"later {i}" for i in range(8)]]
    assert seconds < 0.9  # two 0.1 s decodes, no maxBatchDelay wait


def test_a_full_queue_refuses_at_once():
    async def main():
        batcher = MicroBatcher(Recorder(seconds=0.2), max_batch_size=1, max_delay_ms=0, max_queue=2)
        jobs = [batcher.submit(0)]
        await asyncio.sleep(0.05)  # job 0 is decoding: the queue is empty again
        jobs += [batcher.submit(1), batcher.submit(2)]
        with pytest.raises(QueueFull):
            batcher.submit(3)
        replies = [await job.final() for job in jobs]
        batcher.close()
        return replies

    assert run(main()) == ["reply to 0", "reply to 1", "reply to 2"]


def test_a_cancelled_request_is_left_out_of_its_batch():
    async def main():
        answer = Recorder(seconds=0.1)
        batcher = MicroBatcher(answer, max_batch_size=4, max_delay_ms=20, max_queue=10)
        busy = batcher.submit("busy")
        await asyncio.sleep(0.05)
        gone, kept = batcher.submit("gone"), batcher.submit("kept")
        gone.cancel()  # its client went away while it queued
        await asyncio.gather(busy.final(), kept.final())
        batcher.close()
        return answer.batches

    assert run(main()) == [["busy"], ["kept"]]


def test_the_event_loop_keeps_running_while_a_batch_decodes():
    async def main():
        batcher = MicroBatcher(Recorder(seconds=0.3), max_batch_size=1, max_delay_ms=0, max_queue=10)
        job = batcher.submit("slow")
        ticks, start = 0, time.perf_counter()
        while time.perf_counter() - start < 0.25:
            await asyncio.sleep(0.01)
            ticks += 1
        await job.final()
        batcher.close()
        return ticks

    assert run(main()) >= 5  # a decode on the loop's thread would have blocked every tick (~25 on an idle machine)


def test_streamed_pieces_come_before_the_final_response_in_order():
    async def main():
        batcher = MicroBatcher(Recorder(), max_batch_size=2, max_delay_ms=10, max_queue=10)
        job = batcher.submit("streamed")
        events = [await job.events.get(), await job.events.get()]
        batcher.close()
        return events

    assert run(main()) == [("piece", "piece of streamed"), ("final", "reply to streamed")]


@pytest.mark.parametrize("size, delay, queue", [(0, 1, 10), (1, -1, 10), (1, 1, 0)])
def test_settings_out_of_range_are_refused(size, delay, queue):
    with pytest.raises(ValueError, match="batchSize"):
        MicroBatcher(Recorder(), size, delay, queue)


def test_a_requests_jobs_are_admitted_together_or_refused_together():
    """More jobs than the queue holds is TooMany at any load; more than the free slots is QueueFull, and admits
    none of them; a job whose client went away leaves its slot."""
    async def main():
        batcher = MicroBatcher(Recorder(seconds=0.2), max_batch_size=1, max_delay_ms=0, max_queue=4)
        with pytest.raises(TooMany, match="jobQueueSize"):
            batcher.submit_all(list(range(5)))  # idle, and still never admissible
        busy = batcher.submit("busy")
        await asyncio.sleep(0.05)  # decoding: the queue is empty
        first = batcher.submit_all(["a", "b", "c"])
        with pytest.raises(QueueFull):
            batcher.submit_all(["d", "e"])  # one slot free: neither is queued
        assert batcher.waiting() == 3
        first[2].cancel()  # its client went away: its slot is free again
        later = batcher.submit_all(["d", "e"])
        replies = [await job.final() for job in [busy, *first[:2], *later]]
        batcher.close()
        return replies

    assert run(main()) == ["reply to busy", "reply to a", "reply to b", "reply to d", "reply to e"]


def test_closing_answers_every_job_not_answered_yet():
    async def main():
        batcher = MicroBatcher(Recorder(seconds=0.3), max_batch_size=1, max_delay_ms=0, max_queue=10)
        jobs = batcher.submit_all(["decoding", "queued 1", "queued 2"])
        await asyncio.sleep(0.05)
        batcher.close()
        finals = [await asyncio.wait_for(job.final(), 1) for job in jobs]
        with pytest.raises(Stopped):
            batcher.submit("after")
        return finals

    assert all(isinstance(f, Stopped) for f in run(main()))


def test_a_crash_of_the_loop_is_logged_and_its_batch_answered(caplog):
    """answer() must not raise; if it does, even with a BaseException, its jobs get the exception and the loop
    goes on with the next batch."""
    calls = []

    def answer(requests, emit):
        calls.append(requests)
        if len(calls) == 1:
            raise SystemExit("out of the guards")
        return [f"reply to {r}" for r in requests]

    async def main():
        batcher = MicroBatcher(answer, max_batch_size=2, max_delay_ms=0, max_queue=10)
        crashed = batcher.submit_all(["x", "y"])
        finals = [await asyncio.wait_for(job.final(), 1) for job in crashed]
        after = await asyncio.wait_for(batcher.submit("z").final(), 1)
        batcher.close()
        return finals, after

    finals, after = run(main())
    assert all(isinstance(f, SystemExit) for f in finals) and after == "reply to z"
    assert "a batch of 2 failed outside the core's guards" in caplog.text
