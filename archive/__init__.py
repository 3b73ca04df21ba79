"""The archive builder (python -m archive.build_mar) and the model store it writes to."""
