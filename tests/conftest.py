"""Shared serving fixtures: a tiny checkpoint, a .mar built from it, real TorchServe on free ports.

Fixtures (any test file can use them):
  serving_checkpoint   Path of a tiny random-weight checkpoint (vocabulary: TINY_SENTENCES)
  serving_chatbot      the Chatbot that checkpoint rebuilds: the reference for every reply
  bpe_checkpoint       Path of a tiny random-weight byte-level BPE checkpoint (tokens learnt from BPE_SENTENCES)
  seq2seq_mar          tools/build_mar.py's .mar for it, in a session model store
  torchserve           one native TorchServe for the session (token auth off), model "my_s2s"
  torchserve_factory   start(**options) -> another TorchServe (token_auth=..., model_config={...});
                       every server it started is stopped at the end of the session
  kserve               one KServe runtime (python -m kserve_runtime, .venv-kserve) serving the same .mar
  kserve_factory       start(model_config={...}) -> another KServe runtime, on a .mar built with that model-config

`harness.launcher.start_torchserve(...)` is the context manager behind them: it always stops the Java process and
its Python workers, even when startup or the test fails.

Marker `server`: a test that starts TorchServe (Java), a browser or a load balancer, set here for every test that
uses a server fixture and in the test files for those that start one themselves. `make test-unit` runs the rest
(`pytest -m "not server"`) in about a minute and a half; `make test` runs everything.
"""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
import torch
import yaml

from harness.kserve import KServe, start_kserve
from harness.launcher import REPO, TorchServe, build_mar, start_torchserve
from harness.tiny import make_tiny_bpe_checkpoint, make_tiny_checkpoint
from model import Voc, build_model, default_config, load_chatbot
from tools.server_config import model_config

MODEL_SENTENCES = ["hello there .", "how are you ?", "i am fine .", "what is your name ?", "my name is bob .",
             "where are you going ?", "i am going home .", "good night !"]


def tiny_checkpoint(attn_model: str = "dot", hidden: int = 24, seed: int = 0) -> dict:
    """An untrained checkpoint dict (default init, tutorial layer counts) over MODEL_SENTENCES' words."""
    torch.manual_seed(seed)
    voc = Voc("tiny")
    for sentence in MODEL_SENTENCES:
        voc.add_sentence(sentence)
    config = default_config(hidden_size=hidden, attn_model=attn_model)
    encoder, decoder = build_model(config, voc.num_words)
    return {"config": config, "voc": voc.to_dict(), "encoder": encoder.state_dict(),
            "decoder": decoder.state_dict()}


@pytest.fixture(scope="session")
def bpe_checkpoint(tmp_path_factory) -> Path:
    return make_tiny_bpe_checkpoint(tmp_path_factory.mktemp("bpe") / "1_checkpoint.tar")


@pytest.fixture(scope="session")
def serving_checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "1_checkpoint.tar")


@pytest.fixture(scope="session")
def serving_chatbot(serving_checkpoint):
    """What the chat CLI and the handler rebuild from the checkpoint: the reference for replies."""
    options = model_config()["handler"]  # the same weight precision the served model uses
    return load_chatbot(serving_checkpoint, quantize=options.get("quantize", False))


@pytest.fixture(scope="session")
def seq2seq_mar(serving_checkpoint, tmp_path_factory) -> Path:
    return build_mar(serving_checkpoint, tmp_path_factory.mktemp("model-store"))


@pytest.fixture(scope="session")
def torchserve_factory(seq2seq_mar, serving_checkpoint, tmp_path_factory):
    """start(token_auth=False, model_config=None, **config_overrides) -> a running TorchServe.

    model_config: keys to change in handler/model-config.yaml (e.g. {"batchSize": 16}); the server
    then gets its own .mar built with them. config_overrides: config.properties keys.
    """
    with ExitStack() as servers:
        def start(token_auth: bool = False, model_config: dict | None = None, **config_overrides) -> TorchServe:
            workdir = tmp_path_factory.mktemp("torchserve")
            store = seq2seq_mar.parent
            if model_config:
                store = archive_with(model_config, serving_checkpoint, workdir).parent
            return servers.enter_context(start_torchserve(workdir, store, token_auth, config_overrides))
        yield start


@pytest.fixture(scope="session")
def torchserve(torchserve_factory) -> TorchServe:
    """The session's TorchServe: repo config (token auth off), free ports, the tiny model."""
    return torchserve_factory()


def archive_with(model_config: dict, checkpoint: Path, workdir: Path) -> Path:
    """A .mar of `checkpoint` whose model-config has these keys changed."""
    config = yaml.safe_load((REPO / "handler" / "model-config.yaml").read_text())
    config.update(model_config)
    (workdir / "model-config.yaml").write_text(yaml.safe_dump(config))
    return build_mar(checkpoint, workdir / "model-store", workdir / "model-config.yaml")


@pytest.fixture(scope="session")
def kserve_factory(seq2seq_mar, serving_checkpoint, tmp_path_factory):
    """start(model_config=None) -> a running KServe runtime (its own .mar when model_config changes keys)."""
    with ExitStack() as servers:
        def start(model_config: dict | None = None) -> KServe:
            workdir = tmp_path_factory.mktemp("kserve")
            mar = archive_with(model_config, serving_checkpoint, workdir) if model_config else seq2seq_mar
            return servers.enter_context(start_kserve(workdir, mar))
        yield start


@pytest.fixture(scope="session")
def kserve(kserve_factory) -> KServe:
    """The session's KServe runtime, serving the same archive as the session's TorchServe."""
    return kserve_factory()


SERVER_FIXTURES = {"torchserve", "torchserve_factory", "kserve", "kserve_factory", "queue_server", "page"}


def pytest_collection_modifyitems(items):
    """Mark every test that uses a running server as `server`."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)
