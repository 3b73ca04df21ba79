"""The KServe runtime: the same TorchServe archive on KServe's Python model server (python -m kserve_runtime)."""
