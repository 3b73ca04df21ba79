"""Training: masked loss, vectorised vs step-loop equality, checkpoints, resume, a tiny real run."""
from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import pytest
import torch

from harness.tiny import make_tiny_chitchat
from model.chatbot import Chatbot
from model.checkpoint import build_model, default_config, load_chatbot
from model.voc import Voc
from train import main as train_main
from train.data import load_data
from train.engine import (
    make_batch,
    mask_nll_loss,
    sos_row,
    step_loop_loss,
    teacher_forced_loss,
)

WORDS = "red green blue cat dog bird one two three big small".split()
TINY = ["--hidden-size", "24", "--encoder-n-layers", "1", "--decoder-n-layers", "2", "--batch-size", "16",
        "--min-count", "1", "--learning-rate", "0.005", "--device", "cpu", "--print-every", "1000"]


def write_tiny_corpus(path: Path, n: int = 240, seed: int = 0) -> Path:
    """query<TAB>response lines with a learnable rule: the response is the query reversed."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        query = rng.choices(WORDS, k=rng.randint(1, 6))
        lines.append(f"{' '.join(query)}\t{' '.join(reversed(query))}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_tiny_corpus(tmp_path / "pairs.tsv")


def tiny_voc() -> Voc:
    voc = Voc("tiny")
    voc.add_sentence(" ".join(WORDS))
    return voc


def random_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Pairs of varied lengths on both sides, so batches have padding in source and target."""
    rng = random.Random(seed)
    return [(" ".join(rng.choices(WORDS, k=rng.randint(1, 8))), " ".join(rng.choices(WORDS, k=rng.randint(1, 8))))
            for _ in range(n)]


def run_main(args: list[str]) -> int:
    return train_main.main(args)


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


# ---------------------------------------------------------------- loss

def test_mask_nll_loss_matches_hand_computation():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, math.log(2.0)], [5.0, -1.0, 0.5]])  # (B=3, V=3)
    target = torch.tensor([2, 2, 1])
    mask = torch.tensor([True, True, False])
    nll_0 = -(3.0 - math.log(math.exp(1) + math.exp(2) + math.exp(3)))  # -log softmax(row 0)[2]
    nll_1 = -math.log(2.0 / 4.0)  # softmax(row 1) = (1, 1, 2) / 4
    mean, total = mask_nll_loss(logits, target, mask)
    assert total.item() == pytest.approx(nll_0 + nll_1, rel=1e-6)
    assert mean.item() == pytest.approx((nll_0 + nll_1) / 2, rel=1e-6)  # the masked row counts nowhere


def test_teacher_forced_objective_is_sum_of_step_means_and_loss_is_token_mean():
    torch.manual_seed(0)
    voc = tiny_voc()
    encoder, decoder = build_model(default_config(hidden_size=16, dropout=0.0), voc.num_words)
    batch = make_batch(voc, random_pairs(10), torch.device("cpu"))
    objective, nll_sum, n_tokens = teacher_forced_loss(encoder, decoder, batch)
    with torch.no_grad():  # hand computation from the full logits
        enc_out, enc_hidden = encoder(batch.input, batch.lengths)
        dec_in = torch.cat((sos_row(batch.input.size(1), batch.input.device), batch.target[:-1]))
        logits, _ = decoder(dec_in, enc_hidden[: decoder.n_layers], enc_out, batch.src_mask)
        nll = -torch.log_softmax(logits, 2).gather(2, batch.target.unsqueeze(2)).squeeze(2) * batch.mask
    assert n_tokens == int(batch.mask.sum())
    assert objective.item() == pytest.approx((nll.sum(1) / batch.mask.sum(1)).sum().item(), rel=1e-5)
    assert nll_sum.item() == pytest.approx(nll.sum().item(), rel=1e-5)


# ---------------------------------------------------------------- vectorised == step loop

@pytest.mark.parametrize("attn", ["dot", "general", "concat"])
def test_decoder_features_mirror_decoder_forward(attn):
    torch.manual_seed(0)
    voc = tiny_voc()
    encoder, decoder = build_model(default_config(hidden_size=16, dropout=0.0, attn_model=attn), voc.num_words)
    batch = make_batch(voc, random_pairs(6), torch.device("cpu"))
    enc_out, enc_hidden = encoder(batch.input, batch.lengths)
    hidden = enc_hidden[: decoder.n_layers]
    logits, _ = decoder(batch.target, hidden, enc_out, batch.src_mask)
    features, _ = decoder.features(batch.target, hidden, enc_out, batch.src_mask)
    torch.testing.assert_close(decoder.out(features), logits)


@pytest.mark.parametrize("attn", ["dot", "general", "concat"])
def test_vectorised_loss_and_gradients_equal_step_loop(attn):
    voc = tiny_voc()
    torch.manual_seed(1)
    encoder, decoder = build_model(default_config(hidden_size=32, dropout=0.0, attn_model=attn), voc.num_words)
    batch = make_batch(voc, random_pairs(12, seed=3), torch.device("cpu"))
    assert not bool(batch.mask.all()) and not bool(batch.src_mask.all())  # padding on both sides
    results = []
    for loss in (lambda: step_loop_loss(encoder, decoder, batch, teacher_forcing=True),
                 lambda: teacher_forced_loss(encoder, decoder, batch)):
        encoder.zero_grad()
        decoder.zero_grad()
        objective, nll_sum, n_tokens = loss()
        objective.backward()
        grads = {n: p.grad.clone() for n, p in [*encoder.named_parameters(), *decoder.named_parameters()]}
        results.append((objective.detach(), nll_sum.detach() / n_tokens, grads))
    (obj_a, tok_a, grads_a), (obj_b, tok_b, grads_b) = results
    torch.testing.assert_close(obj_b, obj_a, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(tok_b, tok_a, rtol=1e-4, atol=1e-4)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-4, msg=name)
    assert any(g.abs().sum() > 0 for g in grads_a.values())


# ---------------------------------------------------------------- training runs

def test_tiny_training_run_lowers_heldout_loss_and_writes_outputs(corpus, tmp_path):
    save_dir = tmp_path / "run"
    args = ["--corpus", "tsv", "--data-path", str(corpus), "--iterations", "60", "--save-every", "20",
            "--heldout-fraction", "0.1", "--save-dir", str(save_dir), *TINY]
    assert run_main(args) == 0
    assert sorted(p.name for p in save_dir.glob("*_checkpoint.tar")) == [
        "20_checkpoint.tar", "40_checkpoint.tar", "60_checkpoint.tar", "best_checkpoint.tar"]
    assert (save_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = load(save_dir / "60_checkpoint.tar")["history"]
    assert [h[0] for h in history] == [20, 40, 60]
    heldout = [h[2] for h in history]
    assert heldout[-1] < heldout[0] - 0.3, heldout
    assert heldout[0] < math.log(len(WORDS) + 3)  # already better than guessing uniformly
    best = load(save_dir / "best_checkpoint.tar")
    assert best["heldout_loss"] == min(heldout) and best["iteration"] == [20, 40, 60][heldout.index(min(heldout))]


def test_best_checkpoint_is_the_lowest_heldout_loss_not_the_last(corpus, tmp_path, monkeypatch):
    """A run whose held-out loss rises again (as the demo's does) keeps its best checkpoint."""
    losses = iter([2.0, 1.5, 1.8])
    monkeypatch.setattr(train_main, "evaluate", lambda *args, **kwargs: next(losses))
    save_dir = tmp_path / "run"
    assert run_main(["--corpus", "tsv", "--data-path", str(corpus), "--iterations", "30", "--save-every", "10",
                     "--save-dir", str(save_dir), "--best-min-heldout", "1", *TINY]) == 0
    best = load(save_dir / "best_checkpoint.tar")
    assert (best["iteration"], best["heldout_loss"]) == (20, 1.5)
    assert load(save_dir / "30_checkpoint.tar")["heldout_loss"] == 1.8


def test_checkpoint_round_trip_weights_only(corpus, tmp_path):
    save_dir = tmp_path / "run"
    parser = train_main.build_parser()
    args = parser.parse_args(["--corpus", "tsv", "--data-path", str(corpus), "--iterations", "5",
                              "--save-dir", str(save_dir), *TINY])
    voc, pairs, heldout = load_data(args)
    run = train_main.new_run(args, voc, torch.device("cpu"))
    train_main.train(run, args, pairs, heldout, torch.device("cpu"), save_dir)

    ckpt = load(save_dir / "5_checkpoint.tar")
    assert load_chatbot(save_dir / "5_checkpoint.tar").checkpoint["iteration"] == 5
    assert ckpt["config"] == train_main.model_config(args)
    assert ckpt["voc"] == voc.to_dict()
    for key in ("encoder_optimizer", "decoder_optimizer", "history", "rng", "args"):
        assert key in ckpt
    assert math.isfinite(ckpt["loss"]) and math.isfinite(ckpt["heldout_loss"])
    for name, value in run.encoder.state_dict().items():
        assert torch.equal(ckpt["encoder"][name], value), name

    texts = ["red cat", "one two three", "big dog unknownword", "zzz"]
    live = Chatbot(voc, run.encoder.eval(), run.decoder.eval(), args.max_length, torch.device("cpu"))
    assert load_chatbot(ckpt).reply_batch(texts) == live.reply_batch(texts)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(corpus, tmp_path):
    # teacher forcing 0.5 exercises both paths and the coin's saved state; dropout stays on
    common = ["--corpus", "tsv", "--data-path", str(corpus), "--save-every", "3", "--teacher-forcing-ratio", "0.5",
              "--dropout", "0.2", *TINY]
    assert run_main([*common, "--iterations", "6", "--save-dir", str(tmp_path / "straight")]) == 0
    assert run_main([*common, "--iterations", "3", "--save-dir", str(tmp_path / "first")]) == 0
    assert run_main(["--resume", str(tmp_path / "first" / "3_checkpoint.tar"), "--iterations", "6",
                     "--save-dir", str(tmp_path / "resumed")]) == 0
    straight = load(tmp_path / "straight" / "6_checkpoint.tar")
    resumed = load(tmp_path / "resumed" / "6_checkpoint.tar")
    for part in ("encoder", "decoder"):
        for name, value in straight[part].items():
            torch.testing.assert_close(resumed[part][name], value, rtol=0, atol=0, msg=f"{part} {name}")
    for part in ("encoder_optimizer", "decoder_optimizer"):
        for index, state in straight[part]["state"].items():
            for key, value in state.items():
                torch.testing.assert_close(resumed[part]["state"][index][key], value, rtol=0, atol=0)
    assert resumed["history"] == straight["history"]
    assert resumed["iteration"] == 6 and [h[0] for h in resumed["history"]] == [3, 6]


def test_resume_refuses_a_checkpoint_without_training_state(corpus, tmp_path, caplog):
    save_dir = tmp_path / "run"
    assert run_main(["--corpus", "tsv", "--data-path", str(corpus), "--iterations", "1", "--save-dir",
                     str(save_dir), *TINY]) == 0
    ckpt = load(save_dir / "1_checkpoint.tar")
    served_only = {k: ckpt[k] for k in ("format", "config", "voc", "encoder", "decoder")}
    torch.save(served_only, tmp_path / "model_only.tar")
    with caplog.at_level(logging.ERROR):
        assert run_main(["--resume", str(tmp_path / "model_only.tar")]) == 2
    assert "no training state" in caplog.text


def test_dry_run_trains_one_batch_and_saves_nothing(corpus, tmp_path, monkeypatch, caplog):
    steps = []
    real_step = train_main.train_step
    monkeypatch.setattr(train_main, "train_step", lambda *a, **k: steps.append(1) or real_step(*a, **k))
    save_dir = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        assert run_main(["--corpus", "tsv", "--data-path", str(corpus), "--dry-run", "--save-dir", str(save_dir),
                         *TINY]) == 0
    assert len(steps) == 1
    assert not save_dir.exists()
    assert "dry run: trained on 1 batch" in caplog.text
    assert "Read 240 sentence pairs" in caplog.text  # the data counts come through logging


def test_missing_corpus_is_a_clear_error(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert run_main(["--corpus", "cornell", "--data-path", str(tmp_path / "nowhere"), "--dry-run"]) == 2
    assert "make data" in caplog.text


def test_the_served_checkpoint_is_the_lowest_held_out_loss_only_where_held_out_loss_measures_something():
    from train.main import serving_choice

    history = [[250, 3.0, 2.9], [500, 1.5, 3.1]]  # a small corpus: held-out loss rises as the bot learns
    assert serving_choice(history, 3.4, 31, 500)[0]  # 31 unseen pairs: the latest checkpoint is served
    assert "31 held-out pairs are fewer than --best-min-heldout 500" in serving_choice(history, 3.4, 31, 500)[1]
    assert not serving_choice(history, 3.4, 3000, 500)[0]  # Cornell-sized: the lowest held-out loss stays
    chosen, why = serving_choice(history, 2.5, 3000, 500)
    assert chosen and why == "the lowest held-out loss so far (3000 held-out pairs)"


def test_extra_pairs_always_train_and_are_never_held_out(tmp_path):
    from argparse import Namespace

    from train.data import load_data

    extra = tmp_path / "smalltalk.tsv"
    extra.write_text("zorblax hello\tquuxly hi\nzorblax bye\tquuxly bye\n", encoding="utf-8")
    settings = Namespace(corpus="chatterbot", data_path=None, language="english", tokenizer="word", vocab_size=0,
                         min_count=1, heldout_fraction=0.5, seed=0, max_length=10, extra_pairs=str(extra))
    voc, train, heldout = load_data(settings)
    assert {("zorblax hello", "quuxly hi"), ("zorblax bye", "quuxly bye")} <= set(train)
    assert not any("zorblax" in q for q, _ in heldout) and "quuxly" in voc.word2index


def test_extra_pairs_that_preparation_drops_are_named_in_a_warning(tmp_path, caplog):
    """The tutorial's filter keeps sides of fewer than max_length words: a longer line written to be learnt must
    not vanish silently (punctuation counts: 'my name is seq. i am a chatbot.' is 10 tokens)."""
    from argparse import Namespace

    from train.data import load_data

    extra = tmp_path / "smalltalk.tsv"
    extra.write_text("zorblax hello\tquuxly hi\nzorblax name\tmy name is seq. i am a chatbot.\n", encoding="utf-8")
    settings = Namespace(corpus="chatterbot", data_path=None, language="english", tokenizer="word", vocab_size=0,
                         min_count=1, heldout_fraction=0.05, seed=0, max_length=10, extra_pairs=str(extra))
    with caplog.at_level("WARNING", logger="train.data"):
        _, train, _ = load_data(settings)
    assert ("zorblax hello", "quuxly hi") in train
    assert f"1 of the 2 pairs of {extra} are not trained on: a side has 10 tokens or more" in caplog.text


def test_the_bundled_small_talk_is_trained_on_whole(caplog):
    """Every line of train/smalltalk/<language>.tsv survives the demo recipe's preparation."""
    from argparse import Namespace

    from train.data import load_data

    for language, tokenizer, max_length in (("english", "word", 10), ("chinese", "bpe", 24)):
        settings = Namespace(corpus="chatterbot", data_path=None, language=language, tokenizer=tokenizer,
                             vocab_size=2000, min_count=1, heldout_fraction=0.05, seed=0, max_length=max_length,
                             extra_pairs=str(Path(__file__).resolve().parent.parent / "train" / "smalltalk" /
                                             f"{language}.tsv"))
        with caplog.at_level("WARNING", logger="train.data"):
            load_data(settings)
    assert "not trained on" not in caplog.text


def test_minutes_stop_a_run_at_its_time_with_a_checkpoint(corpus, tmp_path, monkeypatch):
    """--minutes: the run stops at the first --print-every iteration past its time, and saves a checkpoint there."""
    clock = iter(range(0, 10_000, 30))  # each reading of the clock is 30 s after the last
    monkeypatch.setattr(train_main.time, "monotonic", lambda: next(clock))
    save_dir = tmp_path / "run"
    assert run_main(["--corpus", "tsv", "--data-path", str(corpus), "--iterations", "100", "--save-every", "50",
                     "--minutes", "1", "--save-dir", str(save_dir), *TINY, "--print-every", "5"]) == 0
    # the deadline is read at 0 s, then at iterations 5 (30 s), 10 (60 s: not past) and 15 (90 s: past)
    assert sorted(p.name for p in save_dir.glob("[0-9]*_checkpoint.tar")) == ["15_checkpoint.tar"]
    assert load(save_dir / "15_checkpoint.tar")["iteration"] == 15


def test_a_chitchat_run_with_context_trains_and_serves_the_context_it_learnt(tmp_path):
    """A run on a corpus in chitchat-dataset's format, reading the turn before, records it: the bot reads it."""
    corpus = make_tiny_chitchat(tmp_path / "chitchat.json", conversations=12)
    save_dir = tmp_path / "run"
    assert run_main(["--corpus", "chitchat", "--data-path", str(corpus), "--context-turns", "1", "--iterations", "4",
                     "--save-every", "4", "--save-dir", str(save_dir), *TINY]) == 0
    bot = load_chatbot(save_dir / "4_checkpoint.tar")
    assert bot.context_turns == 1 and bot.encode("hello", ["hi there"]).earlier_turns == 1
