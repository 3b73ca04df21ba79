"""Training data pipeline: loaders, tutorial-exact preparation counts, split, batching, corpus fetch."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import requests
import torch

from model.voc import EOS_token, PAD_token
from train import get_cornell
from train.data import (
    _utterance_text,
    batch_to_tensors,
    filter_pairs,
    load_chatterbot,
    load_convokit,
    load_cornell,
    load_tsv,
    prepare,
    prepare_with_stats,
    random_batches,
    split_heldout,
)

ROOT = Path(__file__).resolve().parents[1]
CORNELL_PATH = Path(os.environ.get("DATA_PATH") or ROOT.parent / "shared/data/cornell")
SEP = " +++$+++ "


def write_cornell(folder: Path, lines: dict[str, str], conversations: list[list[str]]) -> Path:
    """A Cornell-format corpus in ISO-8859-1, newest line first as in the original file."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [SEP.join([lid, "u0", "m0", "BOB", text]) for lid, text in reversed(lines.items())]
    (folder / "movie_lines.txt").write_bytes(("\n".join(rows) + "\n").encode("iso-8859-1"))
    convs = [SEP.join(["u0", "u1", "m0", repr(ids)]) for ids in conversations]
    (folder / "movie_conversations.txt").write_bytes(("\n".join(convs) + "\n").encode("iso-8859-1"))
    return folder


TINY_LINES = {
    "L1": "Hello there.",
    "L2": "Hi! How are you?",
    "L3": "Fine, thanks.",
    "L4": "",  # empty text: pairs touching it are dropped
    "L5": "Café au lait?",  # 0xE9 in the file
    "L6": "Yes\tplease.",  # a tab: the tutorial's csv round trip cuts this text in two
    "L7": "No.",
}
TINY_CONVERSATIONS = [["L1", "L2", "L3"], ["L4", "L5", "L6", "L7"]]


# ---------------------------------------------------------------- loaders

def test_load_cornell_pairs_encoding_and_csv_round_trip(tmp_path):
    corpus = write_cornell(tmp_path / "c", TINY_LINES, TINY_CONVERSATIONS)
    assert b"Caf\xe9" in (corpus / "movie_lines.txt").read_bytes()
    assert load_cornell(corpus) == [
        ("Hello there.", "Hi! How are you?"),
        ("Hi! How are you?", "Fine, thanks."),
        # The tutorial writes '"Yes\tplease."' and splits on every tab, so both pairs
        # touching L6 come back cut; its response "No." is lost, as in the tutorial.
        ("Café au lait?", '"Yes'),
        ('"Yes', 'please."'),
    ]


def test_load_convokit_orders_lines_like_the_tutorial(tmp_path):
    def utt(uid, conv, text, reply_to):
        return json.dumps({"id": uid, "conversation_id": conv, "text": text, "speaker": "u0",
                           "meta": {"movie_id": "m0"}, "reply-to": reply_to, "timestamp": None, "vectors": []})

    # Newest line first within a conversation, as in movie-corpus; conversation B comes first.
    rows = [utt("L9", "L8", "Bye.", "L8"), utt("L8", "L8", "See you.", None),
            utt("L3", "L1", "Fine.", "L2"), utt("L2", "L1", "How are you? ", "L1"),
            utt("L1", "L1", "Hello.", None), utt("L0", "L0", "   ", None), utt("L4", "L0", "Alone.", "L0")]
    path = tmp_path / "utterances.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert load_convokit(path) == [
        ("See you.", "Bye."),
        ("Hello.", "How are you?"),
        ("How are you?", "Fine."),
    ]


def test_load_tsv(tmp_path, caplog):
    path = tmp_path / "pairs.tsv"
    path.write_bytes("hi\thello\r\n\nno tab here\nq\tr\textra\nçava\toui\n".encode())
    with caplog.at_level(logging.WARNING):
        pairs = load_tsv(path)
    assert pairs == [("hi", "hello"), ("q", "r"), ("çava", "oui")]
    assert "no tab" in caplog.text


def test_load_chatterbot_gives_string_pairs():
    pairs = load_chatterbot()
    assert len(pairs) > 1000
    assert all(isinstance(q, str) and isinstance(r, str) and q.strip() and r.strip() for q, r in pairs)
    assert ("What is AI?", "Artificial Intelligence is the branch of engineering and science devoted to "
            "constructing machines that think.") in pairs
    assert ("In what year were the first Air Jordan sneakers released?", "1984") in pairs


def test_load_chatterbot_unknown_language():
    with pytest.raises(FileNotFoundError, match="klingon"):
        load_chatterbot("klingon")


@pytest.mark.parametrize("value, text", [("hi", "hi"), (1984, "1984"), (2.5, "2.5"), (True, "True"),
                                         (None, ""), ({"a": 1}, ""), (["x"], "")])
def test_utterance_text(value, text):
    assert _utterance_text(value) == text


# ---------------------------------------------------------------- prepare

HAND_PAIRS = [
    ("Hi there!", "Hello."),  # hi there ! / hello .
    ("Hi!", "Hello there."),  # hi ! / hello there .
    ("Hi there, you!", "Hello."),  # "you" is seen once: trimmed
    ("One two three four five six seven eight nine ten", "Hi."),  # 10 words: filtered out
    ("Hello?", "Unique words here."),  # ? unique words here: seen once, trimmed
]


def test_prepare_counts_by_hand(caplog):
    with caplog.at_level(logging.INFO, logger="train.data"):
        voc, kept, stats = prepare_with_stats(HAND_PAIRS, max_length=10, min_count=3)
    # Words of the 4 length-filtered pairs: hello 4, . 4, hi 3, there 3, ! 3, and once each:
    # you ? unique words here -> 10 words, 13 with PAD/SOS/EOS; 5 seen >= 3 times.
    assert (stats.pairs_read, stats.pairs_filtered, stats.words_counted) == (5, 4, 13)
    assert (stats.keep_words, stats.total_words, stats.pairs_kept) == (5, 10, 2)
    assert kept == [("hi there !", "hello ."), ("hi !", "hello there .")]
    assert set(voc.word2index) == {"hi", "there", "!", "hello", "."}
    assert voc.num_words == 8
    for line in ["Read 5 sentence pairs", "Trimmed to 4 sentence pairs", "Counted words: 13",
                 "keep_words 5 / 10 = 0.5000", "Trimmed from 4 pairs to 2, 0.5000 of total"]:
        assert line in caplog.messages


def test_prepare_returns_voc_and_pairs():
    voc, kept = prepare(HAND_PAIRS, max_length=10, min_count=1)
    assert len(kept) == 4 and voc.num_words == 13


def test_filter_pairs_boundary():
    nine, ten = " ".join("abcdefghi"), " ".join("abcdefghij")
    assert filter_pairs([(nine, "x"), (ten, "x"), ("x", ten), ("x", nine)], 10) == [(nine, "x"), ("x", nine)]


def test_prepare_on_tiny_cornell(tmp_path):
    voc, kept, stats = prepare_with_stats(load_cornell(write_cornell(tmp_path / "c", TINY_LINES, TINY_CONVERSATIONS)),
                                          min_count=1)
    assert stats.pairs_read == 4
    assert ("cafe au lait ?", "yes") in kept  # accent stripped, csv quote gone
    assert "cafe" in voc.word2index


# ---------------------------------------------------------------- split

def test_split_heldout_deterministic_disjoint_and_global_rng_free():
    pairs = [(f"q{i}", f"r{i}") for i in range(100)]
    random.seed(1)
    first = split_heldout(pairs, 0.05, seed=3)
    random.seed(2)
    random.random()
    second = split_heldout(pairs, 0.05, seed=3)
    assert first == second
    train, heldout = first
    assert len(heldout) == 5 and len(train) == 95
    assert not set(train) & set(heldout)
    assert sorted(train + heldout) == sorted(pairs)
    assert train == [p for p in pairs if p in set(train)]  # input order kept
    assert split_heldout(pairs, 0.05, seed=4)[1] != heldout


def test_split_heldout_edges():
    pairs = [("a", "b")] * 10
    assert split_heldout(pairs, 0.0, seed=0) == (pairs, [])
    with pytest.raises(ValueError):
        split_heldout(pairs, 1.0, seed=0)


# ---------------------------------------------------------------- batching

def test_batch_to_tensors_shapes_padding_mask_and_order():
    pairs = [("hi there", "hello"), ("hi there you are", "hello there"), ("hi you are", "hello there you are")]
    voc, _ = prepare(pairs, min_count=1)
    original = list(pairs)
    inp, lengths, target, mask, max_target_len = batch_to_tensors(voc, pairs)
    assert pairs == original  # caller's list untouched
    assert lengths.tolist() == [5, 4, 3] and lengths.dtype == torch.int64 and lengths.device.type == "cpu"
    assert inp.shape == (5, 3) and inp.dtype == torch.long
    # Column b is the b-th longest input: words, EOS, then PAD.
    w = voc.word2index
    assert inp[:, 0].tolist() == [w["hi"], w["there"], w["you"], w["are"], EOS_token]
    assert inp[:, 2].tolist() == [w["hi"], w["there"], EOS_token, PAD_token, PAD_token]
    # Targets follow the same (sorted) order.
    assert max_target_len == 5 and target.shape == (5, 3)
    assert target[:, 0].tolist() == [w["hello"], w["there"], EOS_token, PAD_token, PAD_token]
    assert target[:, 1].tolist() == [w["hello"], w["there"], w["you"], w["are"], EOS_token]
    assert mask.dtype == torch.bool and mask.shape == target.shape
    assert mask.sum(0).tolist() == [3, 5, 2]
    assert torch.equal(mask, target != PAD_token)
    torch.nn.utils.rnn.pack_padded_sequence(torch.zeros(5, 3, 2), lengths)  # accepted as is


def test_random_batches_reproducible_and_resumable():
    pairs = [(f"q{i}", f"r{i}") for i in range(50)]
    assert list(random_batches(pairs, 4, 6, 7)) == list(random_batches(pairs, 4, 6, 7))
    full = list(random_batches(pairs, 4, 6, random.Random(7)))
    assert len(full) == 6 and all(len(b) == 4 and set(b) <= set(pairs) for b in full)
    assert full != list(random_batches(pairs, 4, 6, 8))

    rng = random.Random(7)
    gen = random_batches(pairs, 4, 6, rng)
    head = [next(gen) for _ in range(3)]
    state = rng.getstate()  # what a checkpoint saves after 3 iterations
    resumed = random.Random()
    resumed.setstate(state)
    assert head + list(random_batches(pairs, 4, 3, resumed)) == full


def test_random_batches_empty():
    with pytest.raises(ValueError):
        next(random_batches([], 4, 1))


# ---------------------------------------------------------------- CLI

def run_module(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_cli_prints_counts(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("".join(f"{q}\t{r}\n" for q, r in HAND_PAIRS), encoding="utf-8")
    result = run_module("train.data", "--corpus", "tsv", "--data-path", str(path))
    assert result.returncode == 0, result.stderr
    for line in ["Read 5 sentence pairs", "Counted words: 13", "keep_words 5 / 10 = 0.5000",
                 "Trimmed from 4 pairs to 2, 0.5000 of total"]:
        assert line in result.stdout


def test_cli_missing_path_fails():
    result = run_module("train.data", "--corpus", "tsv")
    assert result.returncode == 1
    assert "--corpus tsv needs --data-path" in result.stdout + result.stderr


# ---------------------------------------------------------------- get_cornell

def sha256_hex(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_get_cornell_offline_fails_with_instructions(tmp_path, monkeypatch, caplog):
    def no_network(*args, **kwargs):
        raise requests.ConnectionError("network is unreachable")

    monkeypatch.setattr(get_cornell.requests, "get", no_network)
    with caplog.at_level(logging.ERROR):
        assert get_cornell.main(["--dest", str(tmp_path / "cornell")]) == 1
    assert "could not download" in caplog.text and "--data-path /path/to/cornell" in caplog.text


def test_get_cornell_from_dir_links_without_copying(tmp_path, monkeypatch):
    source = write_cornell(tmp_path / "src", TINY_LINES, TINY_CONVERSATIONS)
    dest = tmp_path / "data" / "cornell"
    assert get_cornell.main(["--data-path", str(source), "--dest", str(dest)]) == 1  # not the original checksum
    monkeypatch.setattr(get_cornell, "CONVERSATIONS_SHA256", sha256_hex(source / "movie_conversations.txt"))
    assert get_cornell.main(["--data-path", str(source), "--dest", str(dest)]) == 0
    assert dest.is_symlink() and dest.resolve() == source.resolve()
    assert get_cornell.main(["--data-path", str(source), "--dest", str(dest)]) == 0  # idempotent
    assert get_cornell.main(["--dest", str(dest)]) == 0  # already there: no download


def test_get_cornell_from_dir_missing_files(tmp_path):
    assert get_cornell.main(["--data-path", str(tmp_path), "--dest", str(tmp_path / "dest")]) == 1
    assert not (tmp_path / "dest").exists()


def test_get_cornell_download_verifies_and_extracts(tmp_path, monkeypatch):
    source = write_cornell(tmp_path / "src", TINY_LINES, TINY_CONVERSATIONS)
    archive = tmp_path / "corpus.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in get_cornell.REQUIRED_FILES:
            zf.write(source / name, get_cornell.ZIP_FOLDER + name)
        zf.writestr("__MACOSX/cornell movie-dialogs corpus/._movie_lines.txt", b"junk")
    monkeypatch.setattr(get_cornell, "download", lambda url, target, timeout: target.write_bytes(archive.read_bytes()))
    monkeypatch.setattr(get_cornell, "CONVERSATIONS_SHA256", sha256_hex(source / "movie_conversations.txt"))

    with pytest.raises(get_cornell.CorpusError, match="sha256"):
        get_cornell.fetch(get_cornell.URL, tmp_path / "bad", 5)  # the real zip checksum does not match
    dest = tmp_path / "cornell"
    monkeypatch.setattr(get_cornell, "ZIP_SHA256", sha256_hex(archive))
    assert get_cornell.main(["--dest", str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == sorted(get_cornell.REQUIRED_FILES)
    assert (dest / "movie_lines.txt").read_bytes() == (source / "movie_lines.txt").read_bytes()


# ---------------------------------------------------------------- the real corpus

@pytest.mark.skipif(not (CORNELL_PATH / "movie_lines.txt").is_file(),
                    reason=f"Cornell corpus not found at {CORNELL_PATH} (set DATA_PATH to its folder)")
def test_real_cornell_counts_match_the_tutorial():
    pairs = load_cornell(CORNELL_PATH)
    voc, kept, stats = prepare_with_stats(pairs)
    assert stats.pairs_read == 221_267  # tutorial: 221,282; 10 lines are missing from this copy
    assert stats.pairs_filtered == 64_269
    assert stats.words_counted == 18_008
    assert (stats.keep_words, stats.total_words) == (7_823, 18_005)
    assert stats.pairs_kept == len(kept) == 53_163
    assert voc.num_words == 7_823 + 3
    get_cornell.check_corpus_dir(CORNELL_PATH)  # the original conversations file


def test_context_dropout_leaves_out_earlier_turns_at_its_rate_and_resumes():
    pairs = [("how are you", "fine", "hello"), ("hello", "hi", "")] * 50
    drawn = [p for batch in random_batches(pairs, 50, 40, 3, context_dropout=0.25) for p in batch]
    with_turns = [p for p in drawn if p[0] == "how are you"]
    dropped = sum(len(p) == 2 for p in with_turns) / len(with_turns)
    assert 0.2 < dropped < 0.3 and all(len(p) == 3 for p in drawn if p[0] == "hello")  # none to drop there
    assert all(len(p) == 3 for batch in random_batches(pairs, 8, 5, 3) for p in batch)  # 0: nothing dropped
