"""TorchServe handler that answers each request with its own body: the server's cost without a model.

bench/serve_bench.py serves it with the chatbot's batching and worker settings, so its
throughput is the ceiling the chatbot's is compared with.
"""
from __future__ import annotations


def handle(data, context):
    """One response per request of the batch: its body, unchanged (None when TorchServe probes the handler)."""
    if data is None:
        return None
    return [row.get("body") or row.get("data") or "" for row in data]
