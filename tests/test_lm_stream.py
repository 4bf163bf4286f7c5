"""The LM text on disk (asr_s2s.lm_data, asr_s2s.lm_encode) and its batches (asr_s2s.lm_batches).

The token files hold what :func:`asr_s2s.lm.read_text` reads, in the same order; a text of one window is batched
exactly as the in-memory trainer batched it; the cache is reused for the same text and rebuilt for another.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random

import pytest
import yaml

from asr_s2s import lm_data, lm_encode
from asr_s2s.errors import ConfigError, ManifestError, TokenizerError
from asr_s2s.lm import collate_text, read_text, split_valid, token_batches
from asr_s2s.lm_batches import StreamBatches, collate_window, windows
from asr_s2s.lm_data import TokenStream, describe_sources, prepare_lm_data
from asr_s2s.tokenizer import BLANK, CHARACTERS, SOS_EOS, CharTokenizer

# lines that normalize_text changes (or drops), between lines it keeps as they are
TRICKY = ["THE CAT SAT", "the cat, sat!", "  LEADING SPACE", "TRAILING SPACE  ", "'TIS THE SEASON", "DON'T STOP'",
          "ROCK 'N' ROLL", "", "   ", "CAFÉ NAÏVE", "HYPHEN-ATED / SLASHED_WORD", "A''B", "TAB\tSEPARATED", "O'CLOCK",
          "X", "'", "MULTIPLE   SPACES", "\u2018QUOTED\u2019", "CARRIAGE\rRETURN"]


def _text(tmp_path, lines, name="text.txt", end="\n"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + end, encoding="utf-8")
    return path


def _sentences(stream: TokenStream) -> list[list[int]]:
    offsets = stream.offsets(0, stream.sentences)
    tokens = stream.read(0, stream.tokens)
    return [tokens[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]


def _encode(tmp_path, texts, tokenizer, split=None, valid=()):
    return prepare_lm_data(describe_sources(texts, valid or (texts if split is None else ())), tokenizer, split, tmp_path / "exp")


@pytest.mark.parametrize("end", ["\n", ""])
def test_token_files_hold_what_read_text_reads(tmp_path, tokenizer, end):
    """Groups of normalised lines take the byte-table path, the others normalize_text; both give read_text's ids."""
    rng = random.Random(0)
    normal = ["SHE SAID NOTHING", "I'M HERE", "A", "ROCK'N'ROLL IS HERE"]
    lines = [rng.choice(normal) for _ in range(300)]
    for i in (5, 70, 200):  # one line to normalise in some groups of 64
        lines[i] = rng.choice(TRICKY)
    lines += TRICKY + normal * 40
    path = _text(tmp_path, lines, end=end)
    data = _encode(tmp_path, [path], tokenizer)
    assert data.train.dtype == "uint8"
    assert _sentences(data.train) == read_text([path], tokenizer)


def test_a_token_list_over_256_entries_is_stored_as_uint16(tmp_path):
    tokenizer = CharTokenizer([BLANK, SOS_EOS, *CHARACTERS, *(f"<x{i}>" for i in range(300))])
    path = _text(tmp_path, TRICKY * 3)
    data = _encode(tmp_path, [path], tokenizer)
    assert data.train.dtype == "uint16" and (data.folder / "train.tokens").stat().st_size == 2 * data.train.tokens
    assert _sentences(data.train) == read_text([path], tokenizer)


def test_unrepresentable_lines_are_named_after_the_whole_pass(tmp_path, tokenizer):
    lines = ["GOOD TEXT"] * 100 + [f"PRICE {i} EURO" for i in range(7)] + ["ALSO GOOD", "ÆSIR"]
    path = _text(tmp_path, lines)
    with pytest.raises(TokenizerError, match=r"(?s)8 line\(s\).*text.txt:101: characters \['0'\]") as error:
        _encode(tmp_path, [path], tokenizer, split=(0.1, 0))
    assert str(error.value).count("text.txt:") == 5, "five are listed"
    assert not [p for p in (tmp_path / "exp" / "text_cache").iterdir()], "nothing half-written is left"
    with pytest.raises(ManifestError, match="cannot read"):
        describe_sources([tmp_path / "missing.txt"])
    with pytest.raises(ManifestError, match="no text in"):
        _encode(tmp_path, [_text(tmp_path, ["", "  ", "!!"], "blank.txt")], tokenizer)


# -- the held-out split -----------------------------------------------------------------------------
def test_a_text_of_one_block_is_split_as_split_valid_splits_it(tmp_path, tokenizer):
    rng = random.Random(1)
    lines = [" ".join(rng.choice(["A", "DOG", "RAN", "HOME"]) for _ in range(rng.randint(1, 6))) for _ in range(500)]
    path = _text(tmp_path, lines)
    data = _encode(tmp_path, [path], tokenizer, split=(0.1, 3))
    train, valid = split_valid(read_text([path], tokenizer), 0.1, 3)
    assert (_sentences(data.train), _sentences(data.valid)) == (train, valid), "same sentences, same order"
    with pytest.raises(ManifestError, match="at least two sentences"):
        _encode(tmp_path, [_text(tmp_path, ["ONE"], "one.txt")], tokenizer, split=(0.1, 3))
    with pytest.raises(ConfigError, match="valid_fraction"):
        _encode(tmp_path, [path], tokenizer, split=(1.5, 3))


def test_longer_texts_hold_out_the_fraction_of_each_block(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr(lm_encode, "SPLIT_BLOCK", 40)
    lines = [f"SENTENCE {'X' * (i % 7)} {chr(65 + i % 26)}" for i in range(250)]
    data = _encode(tmp_path, [_text(tmp_path, lines)], tokenizer, split=(0.1, 0))
    assert data.valid.sentences == 6 * 4 + 1  # 4 of each of six blocks of 40, and one of the last ten
    everything = sorted(map(tuple, _sentences(data.train) + _sentences(data.valid)))
    assert everything == sorted(map(tuple, read_text([tmp_path / "text.txt"], tokenizer)))


# -- batches ----------------------------------------------------------------------------------------
def _old_token_batches(sentences, max_tokens, shuffle, seed=0):
    """The in-memory batching train-lm had before the token files (for comparison)."""
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    batches, current, longest = [], [], 0
    for i in order:
        length = len(sentences[i]) + 2
        if current and max(longest, length) * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, length)
    if current:
        batches.append(current)
    if shuffle:
        random.Random(seed).shuffle(batches)
    return batches


@pytest.mark.parametrize("max_tokens", [1, 20, 57, 400])
def test_batches_are_cut_as_before(max_tokens):
    rng = random.Random(max_tokens)
    sentences = [[1] * rng.choice([1, 2, 3, 3, 5, 8, 30, 31]) for _ in range(300)]
    for shuffle in (False, True):
        assert token_batches(sentences, max_tokens, shuffle, seed=7) == _old_token_batches(sentences, max_tokens, shuffle, 7)


def test_window_batches_equal_the_padded_sentences():
    rng = random.Random(2)
    sentences = [[rng.randrange(2, 30) for _ in range(rng.randint(1, 12))] for _ in range(50)]
    stream = TokenStream.from_sentences(sentences)
    rows = [3, 9, 17, 0]
    want = collate_text([sentences[i] for i in rows], sos=1, eos=1)
    got = collate_window(stream.read(0, stream.tokens), stream.offsets(0, stream.sentences), rows, sos=1, eos=1)
    for g, w in zip(got, want):
        assert g.tolist() == w.tolist()


def test_an_epoch_visits_every_sentence_once_reading_one_window_at_a_time(monkeypatch):
    rng = random.Random(3)
    sentences = [[len(s) % 28 + 2] * len(s) for s in ([0] * rng.randint(1, 40) for _ in range(400))]
    stream = TokenStream.from_sentences(sentences)
    batches = StreamBatches(stream, max_tokens=120, window_tokens=500)
    assert len(batches.windows) == len(windows(stream, 500)) > 10
    reads = []
    real_read = TokenStream.read
    monkeypatch.setattr(TokenStream, "read", lambda self, a, b: reads.append(b - a) or real_read(self, a, b))
    epochs = []
    for seed in (0, 1):
        seen = []
        for inputs, targets, position in batches.epoch(seed):
            assert inputs.shape[0] == 1 or inputs.numel() + inputs.shape[0] <= 120  # + the <eos> column
            seen += [tuple(row[row >= 0][:-1].tolist()) for row in targets]
        assert sorted(seen) == sorted(map(tuple, sentences)) and len(seen) == len(sentences)
        epochs.append(seen)
    assert epochs[0] != epochs[1], "each epoch has its own order"
    assert max(reads) <= 500 + 40, "a window's tokens at a time (one sentence may start before its end)"
    assert len(list(batches.epoch(0))) == len(batches)


def test_skipping_resumes_the_same_epoch_at_any_batch():
    rng = random.Random(4)
    stream = TokenStream.from_sentences([[2] * rng.randint(1, 20) for _ in range(200)])
    batches = StreamBatches(stream, max_tokens=60, window_tokens=300)
    full = [(x.tolist(), p) for x, _, p in batches.epoch(5)]
    assert [p.batches_done for _, p in full] == list(range(1, len(batches) + 1))
    for skip in (0, 1, 7, len(full) // 2, len(full) - 1, len(full)):
        assert [(x.tolist(), p) for x, _, p in batches.epoch(5, skip=skip)] == full[skip:]


# -- the cache and what the experiment records -----------------------------------------------------------
def test_the_encoded_text_is_reused_for_the_same_text_and_replaced_for_another(tmp_path, tokenizer, monkeypatch):
    path = _text(tmp_path, ["THE CAT", "A DOG"])
    first = _encode(tmp_path, [path], tokenizer)
    assert json.loads((first.folder / "meta.json").read_text())["train"] == {"sentences": 2, "tokens": 12}
    (first.folder.parent / ".stale.tmp").mkdir()  # what a killed encoding leaves

    def must_not_encode(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(lm_data, "encode_texts", must_not_encode)
    assert _encode(tmp_path, [path], tokenizer) == first
    monkeypatch.undo()
    path.write_text("THE CAT\nA DOG RAN\n")
    second = _encode(tmp_path, [path], tokenizer)
    assert second.folder != first.folder and second.train.sentences == 2
    assert [p.name for p in second.folder.parent.iterdir()] == [second.folder.name], "old and stale folders removed"
    other_tokens = CharTokenizer([BLANK, SOS_EOS, *CHARACTERS, "<x>"])
    assert _encode(tmp_path, [path], other_tokens).key != second.key


def test_train_lm_joins_several_texts_and_records_each(run_cli, tmp_path, fixture_utterances, caplog):
    caplog.set_level(logging.INFO)
    corpus = _text(tmp_path, ["SOME BOOK TEXT", "more book text."] * 20, "corpus.txt")
    transcripts = _text(tmp_path, [u.text for u in fixture_utterances], "train_text.txt")
    config = tmp_path / "lm.yaml"
    config.write_text(yaml.safe_dump({"lm": {"name": "lstm", "embed_dim": 8, "hidden_size": 16, "num_layers": 1},
                                      "train": {"epochs": 1, "max_batch_tokens": 200, "valid_fraction": 0.1}}))
    exp = tmp_path / "exp"
    code, out, err = run_cli("train-lm", "--text", corpus, transcripts, "--config", config, "--exp-dir", exp, "--quiet")
    assert code == 0, err
    record = json.loads((exp / "text_sources.json").read_text())
    for source, path in zip(record["sources"], (corpus, transcripts)):
        assert source == {"role": "train", "path": str(path.resolve()), "bytes": path.stat().st_size,
                          "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        assert f"{source['bytes']} bytes, sha256 {source['sha256']}" in err
    assert record["train"]["sentences"] + record["valid"]["sentences"] == 40 + len(fixture_utterances)
    code, out, _ = run_cli("train-lm", "--help")
    assert code == 0 and "asr-s2s lm-text" in out and "ESPnet" in out and "text_sources.json" in out


def test_window_and_interval_must_be_positive(run_cli, tmp_path):
    text = _text(tmp_path, ["A B"])
    for key in ("window_tokens", "checkpoint_every_steps"):
        config = tmp_path / "lm.yaml"
        config.write_text(yaml.safe_dump({"train": {key: 0}}))
        code, _, err = run_cli("train-lm", "--text", text, "--config", config, "--exp-dir", tmp_path / "exp", "--quiet")
        assert code == 2 and f"train.{key} must be a positive integer" in err
