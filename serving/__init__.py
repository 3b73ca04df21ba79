"""Helpers to run TorchServe natively (tests, benchmarks, soak); not shipped in the .mar."""
