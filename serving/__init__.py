"""The engine-free serving core, shipped inside the .mar, for any engine's adapter (TorchServe's handler, the KServe
runtime). Where each job lives:

    pipeline.py    the request pipeline (read, decode, respond; one batched decode per batch, per-request guards)
                   and the adapter contract both adapters keep
    protocols.py   the protocol contract, and the JSON and text API's parsing, replies and errors
    openai_api.py  OpenAI's Chat Completions: its field table, parsing, replies, errors and stream chunks
    wire.py        the values that pass between them (Incoming, Response, ChatRequest) and the error kinds
    metrics.py     the metrics' names and kinds, and where they go
    loading.py     a checkpoint and a model-config section -> the pipeline, set up
"""
