"""The serving core's metrics: their names and kinds (METRICS), and where they go.

An adapter gives the core a Metrics: TorchServe's handler one whose `observe` is TorchServe's metrics API, summed in
the worker (BufferedMetrics); the KServe runtime a prometheus_client registry (kserve_runtime/model.py).

Shipped inside the .mar (the archive's `serving` package): Python 3.9, no torch, no engine.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

# The core's metrics: name -> kind. TorchServe needs them declared in handler/metrics.yaml too (dimensions
# [ModelName], + [Reason] for bad requests, [le] for buckets); the KServe runtime registers them with
# prometheus_client beside KServe's own.
METRICS = {
    "seq2seq_requests_decoded_total": "counter",
    "seq2seq_bad_requests_total": "counter",
    "seq2seq_unknown_words_total": "counter",
    "seq2seq_decode_fallbacks_total": "counter",
    "seq2seq_reply_words": "counts",
    "seq2seq_batch_size": "counts",
    "seq2seq_decode_seconds": "histogram",
}
# Upper bounds of the "counts" metrics (words per reply, requests per batch): histograms of small integers
COUNT_BUCKETS = {
    "seq2seq_reply_words": (1, 2, 4, 6, 8, 10, 15, 20),  # a reply has at most limits.max_length tokens
    "seq2seq_batch_size": (1, 2, 4, 8, 16, 32),  # up to the model-config's batchSize
}


class Metrics:
    """Where the core's metrics go (METRICS): to the function `observe` (name, value, *dimensions) an adapter gives,
    or to a subclass's own `observe` and `observe_counts`. Without either they are dropped."""

    def __init__(self, observe: Callable[..., None] | None = None):
        self.sink = observe

    def observe(self, name: str, value: float, *dimensions: str) -> None:
        """Add `value` to metric `name` (for a "counts" metric: to its name_bucket or name_sum)."""
        if self.sink is not None:
            self.sink(name, value, *dimensions)

    def observe_counts(self, name: str, values: list[int]) -> None:
        """Count `values` in the buckets of a "counts" metric (as cumulative name_bucket counters with an `le`
        dimension, which histogram_quantile reads), and their total in name_sum."""
        for bound in (*COUNT_BUCKETS[name], "+Inf"):
            self.observe(f"{name}_bucket", sum(1 for v in values if bound == "+Inf" or v <= bound), str(bound))
        self.observe(f"{name}_sum", sum(values))


class BufferedMetrics(Metrics):
    """Metrics whose counters are summed here and handed to `observe` at most once every `interval` seconds.

    A TorchServe worker writes every metric update as a log line that the frontend reads back and logs again: ~15
    lines a batch, ~0.35 ms of the worker's time and ~0.5 ms of a lone request's latency (docs/benchmarks.md).
    Summed, a busy worker hands over one line per counter and interval. A timer hands over what is pending, so
    counts are at most `interval` late (the first batch after a quiet interval goes out at once); histogram
    observations cannot be summed and go out as they come. A worker killed with counts pending loses them (at most
    one interval's). interval 0: every update at once, as Metrics.
    """

    def __init__(self, observe: Callable[..., None] | None, interval: float):
        super().__init__(observe)
        self.interval = interval
        self.pending: dict[tuple, float] = {}  # (name, dimensions) -> sum not yet handed over
        self.lock, self.handing_over = threading.Lock(), threading.Lock()
        self.timer: threading.Timer | None = None
        self.last = float("-inf")  # time.monotonic() of the last hand-over

    def observe(self, name: str, value: float, *dimensions: str) -> None:
        """Add `value` to counter `name` (sent within `interval`); a histogram's observation is sent now."""
        if self.interval <= 0 or METRICS.get(name) == "histogram":
            super().observe(name, value, *dimensions)
            return
        with self.lock:
            self.pending[(name, dimensions)] = self.pending.get((name, dimensions), 0) + value
            if self.timer is None:
                self.timer = threading.Timer(max(0.0, self.last + self.interval - time.monotonic()), self.flush)
                self.timer.daemon = True
                self.timer.start()

    def flush(self) -> None:
        """Hand every pending sum to `observe`; returns once they, and any the timer took before, are handed over."""
        with self.handing_over:  # one hand-over at a time; `observe` waits only for `lock`, never for this
            with self.lock:
                pending, self.pending, self.last = self.pending, {}, time.monotonic()
                if self.timer is not None:
                    self.timer.cancel()  # a no-op from the timer's own thread
                    self.timer = None
            for (name, dimensions), value in pending.items():
                super().observe(name, value, *dimensions)
