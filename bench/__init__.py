"""Benchmarks: serving load (serve_bench), decoding cost, quantisation and reply quality, word vs BPE tokens,
training speed (train_bench). Each prints `name: value` last lines."""
