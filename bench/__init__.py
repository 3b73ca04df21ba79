"""Benchmarks: serving load test (serve_bench) and quantisation quality (quant_quality)."""
