"""asr_s2s.lm and the built-in language model (asr_s2s_register_lms: ``lstm``) with its ``lm`` scorer.

A tiny LSTM LM is trained for real with ``asr-s2s train-lm`` on the fixture
transcripts, packaged, reloaded and fused into beam search.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml

from asr_s2s.errors import ConfigError, ManifestError, ModelPackageError, TokenizerError
from asr_s2s.lm import LMTrainConfig, collate_text, lm_loss, load_lm_config, read_text, split_valid, token_batches
from asr_s2s.package import load_lm_package, load_package
from conftest import make_search

TINY_LM = {"lm": {"name": "lstm", "embed_dim": 16, "hidden_size": 64, "num_layers": 1, "dropout": 0.0},
           "train": {"epochs": 40, "lr": 0.02, "warmup_steps": 5, "max_batch_tokens": 100, "valid_fraction": 0.25}}


@pytest.fixture(scope="module")
def text_file(tmp_path_factory, fixture_utterances):
    path = tmp_path_factory.mktemp("lm") / "text.txt"
    path.write_text("".join(f"{u.text.lower()}\n\n" for u in fixture_utterances))  # blank lines are skipped
    return path


@pytest.fixture(scope="module")
def lm_package(tmp_path_factory, text_file):
    from asr_s2s.cli import main

    folder = tmp_path_factory.mktemp("lm_exp")
    config = folder / "lm.yaml"
    config.write_text(yaml.safe_dump(TINY_LM))
    assert main(["train-lm", "--text", str(text_file), "--valid-text", str(text_file), "--config", str(config),
                 "--exp-dir", str(folder), "--quiet"]) == 0
    return folder


# -- text and batches ---------------------------------------------------------------------------
def test_read_text_normalises_and_skips_blank_lines(text_file, fixture_utterances, tokenizer):
    sentences = read_text([text_file], tokenizer)
    assert [tokenizer.decode(s) for s in sentences] == [u.text for u in fixture_utterances]


def test_unrepresentable_text_names_file_and_line(tmp_path, tokenizer):
    path = tmp_path / "bad.txt"
    path.write_text("GOOD TEXT\nPRICE 5 EURO\nALSO GOOD\n")
    with pytest.raises(TokenizerError, match=r"(?s)1 line\(s\).*bad.txt:2: characters \['5'\]"):
        read_text([path], tokenizer)
    with pytest.raises(ManifestError, match="cannot read"):
        read_text([tmp_path / "missing.txt"], tokenizer)


def test_split_valid_is_deterministic_and_disjoint():
    sentences = [[i] for i in range(100)]
    train, valid = split_valid(sentences, 0.1, seed=3)
    assert len(valid) == 10 and sorted(train + valid) == sentences
    assert split_valid(sentences, 0.1, seed=3) == (train, valid)
    with pytest.raises(ConfigError, match="valid_fraction"):
        split_valid(sentences, 1.5, seed=0)


def test_token_batches_cover_everything_within_the_cap():
    sentences = [[1] * n for n in (3, 9, 1, 7, 2, 30, 5)]
    batches = token_batches(sentences, max_tokens=20, shuffle=True, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(len(sentences)))
    for batch in batches:
        assert len(batch) == 1 or max(len(sentences[i]) + 2 for i in batch) * len(batch) <= 20


# -- the model ----------------------------------------------------------------------------------
def test_incremental_steps_equal_the_padded_forward(lm_package, tokenizer):
    lm, _ = load_lm_package(lm_package / "lm")
    sentences = [tokenizer.encode("THE CAT"), tokenizer.encode("A DOG RAN HOME")]
    inputs, _ = collate_text(sentences, tokenizer.sos_id, tokenizer.eos_id)
    with torch.inference_mode():
        full = torch.log_softmax(lm(inputs), -1)
        alone = torch.log_softmax(lm(inputs[:1, : len(sentences[0]) + 1]), -1)
        state = lm.init_state(2, torch.device("cpu"))
        for u in range(inputs.shape[1]):
            logp, state = lm.step(inputs[:, u], state)
            torch.testing.assert_close(logp, full[:, u], atol=1e-5, rtol=0)
    torch.testing.assert_close(alone[0], full[0, : len(sentences[0]) + 1], atol=1e-5, rtol=0), "padding never leaks back"


def test_training_learns_the_text(lm_package, text_file, tokenizer):
    """Perplexity falls well below the uniform 1/V; the log shows each epoch."""
    import json

    rows = [json.loads(line) for line in (lm_package / "lm_train_log.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert len(epochs) == TINY_LM["train"]["epochs"]
    assert epochs[-1]["valid_ppl"] < epochs[0]["valid_ppl"] and epochs[-1]["valid_ppl"] < 3.0
    lm, _ = load_lm_package(lm_package / "lm")
    sentences = read_text([text_file], tokenizer)
    inputs, targets = collate_text(sentences, tokenizer.sos_id, tokenizer.eos_id)
    with torch.inference_mode():
        loss, count = lm_loss(lm, inputs, targets)
    assert float(loss) / count == pytest.approx(torch.log(torch.tensor(epochs[-1]["valid_ppl"])).item(), abs=1e-3)


def test_resume_continues_from_the_checkpoint(lm_package, text_file, tmp_path):
    from asr_s2s.cli import main

    config = tmp_path / "lm.yaml"
    short = dataclasses.asdict(LMTrainConfig(epochs=2, max_batch_tokens=400, warmup_steps=1))
    config.write_text(yaml.safe_dump({"lm": TINY_LM["lm"], "train": short}))
    args = ["train-lm", "--text", str(text_file), "--config", str(config), "--exp-dir", str(tmp_path / "exp"), "--quiet"]
    assert main(args + ["--epochs", "1"]) == 0
    assert main(args + ["--resume"]) == 0
    import json

    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "exp" / "lm_train_log.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "epoch"]
    assert epochs == [1, 2]


def test_lm_config_typo_is_named(tmp_path):
    path = tmp_path / "lm.yaml"
    path.write_text("train: {epoch: 3}\n")
    with pytest.raises(ConfigError, match="unknown key 'epoch'.*epochs"):
        load_lm_config(path)


# -- packages -----------------------------------------------------------------------------------
def test_packages_are_not_confused(lm_package, trained_package):
    with pytest.raises(ModelPackageError, match="language-model package .* not a model package"):
        load_package(lm_package / "lm")
    with pytest.raises(ModelPackageError, match="acoustic model package, not a language-model package"):
        load_lm_package(trained_package)


def test_lm_tokens_must_match_the_acoustic_model(lm_package, tmp_path, random_model):
    import shutil

    from asr_s2s_plugins.lstm_lm import LMScorer

    other = tmp_path / "lm"
    shutil.copytree(lm_package / "lm", other)
    tokens = (other / "tokens.txt").read_text().splitlines()
    (other / "tokens.txt").write_text("\n".join(tokens[:-1] + ["<extra>", tokens[-1]]) + "\n")
    with pytest.raises(ModelPackageError):
        LMScorer.from_model(random_model, path=str(other))


# -- shallow fusion ---------------------------------------------------------------------------
def test_fusion_share_is_the_lm_sentence_log_probability(lm_package, random_model, registry, fixture_batch):
    params = {"lm": {"path": str(lm_package / "lm")}}
    with torch.inference_mode():
        states, lengths = random_model.encode(fixture_batch.feats[:3], fixture_batch.feat_lengths[:3])
    weights = {"decoder": 1.0, "lm": 0.5}
    lm, tok = load_lm_package(lm_package / "lm")
    for nbest in make_search(random_model, registry, weights, params, beam_size=3, nbest=2, max_length_ratio=0.3)(states, lengths):
        for hyp in nbest:
            inputs, targets = collate_text([list(hyp.tokens)], tok.sos_id, tok.eos_id)
            with torch.inference_mode():
                loss, _ = lm_loss(lm, inputs, targets)
            assert hyp.scores["lm"] == pytest.approx(-float(loss), abs=1e-3)
            assert hyp.score == pytest.approx(hyp.scores["decoder"] + 0.5 * hyp.scores["lm"], abs=1e-4)


def test_zero_weight_lm_changes_nothing(lm_package, random_model, registry, fixture_batch):
    with torch.inference_mode():
        states, lengths = random_model.encode(fixture_batch.feats[:3], fixture_batch.feat_lengths[:3])
    params = {"lm": {"path": str(lm_package / "lm")}}
    plain = make_search(random_model, registry, {"decoder": 1.0}, {}, beam_size=3)(states, lengths)
    zero = make_search(random_model, registry, {"decoder": 1.0, "lm": 0.0}, params, beam_size=3)(states, lengths)
    assert plain == zero


def test_lm_pulls_a_random_acoustic_model_towards_the_text(lm_package, random_model, registry, fixture_batch, fixture_utterances):
    """An untrained acoustic model plus a heavily weighted LM spells sentences the LM knows."""
    with torch.inference_mode():
        states, lengths = random_model.encode(fixture_batch.feats[:2], fixture_batch.feat_lengths[:2])
    params = {"lm": {"path": str(lm_package / "lm")}}
    nbest = make_search(random_model, registry, {"decoder": 0.01, "lm": 1.0}, params, beam_size=4)(states, lengths)
    known = {u.text for u in fixture_utterances}
    assert all(random_model.tokenizer.decode(n[0].tokens) in known for n in nbest)


def test_cli_lm_flag_needs_a_weight(run_cli, trained_package, lm_package, tmp_path):
    from conftest import FIXTURE_DIR

    code, _, err = run_cli("evaluate", "--model", trained_package, "--data-dir", FIXTURE_DIR, "--lm", lm_package / "lm",
                           "--output-dir", tmp_path / "d", "--quiet")
    assert code == 2 and "--scorer lm=WEIGHT" in err
    code, out, err = run_cli("evaluate", "--model", trained_package, "--data-dir", FIXTURE_DIR, "--lm", lm_package / "lm",
                             "--scorer", "lm=0.2", "--scorer", "ctc=0.3", "--output-dir", tmp_path / "d", "--json", "--quiet")
    assert code == 0, err
    import json

    assert json.loads(out)["utterances"] == 8


def test_resume_from_a_crafted_checkpoint_is_refused_unrun(run_cli, text_file, tmp_path):
    from conftest import write_pickle_bomb

    config = tmp_path / "lm.yaml"
    config.write_text(yaml.safe_dump(TINY_LM))
    marker = tmp_path / "marker"
    checkpoint = write_pickle_bomb(tmp_path / "exp" / "checkpoint.pt", marker)
    args = ["train-lm", "--text", text_file, "--config", config, "--exp-dir", tmp_path / "exp", "--quiet"]
    code, out, err = run_cli(*args, "--resume")
    assert code == 2 and out == ""
    assert f"{checkpoint}: refused to load" in err and "GLOBAL exec" in err
    assert not marker.exists()
    code, _, err = run_cli(*args)  # without --resume: the run there is not overwritten either
    assert code == 2 and "already holds a training run" in err and "--resume" in err
    assert not marker.exists() and checkpoint.is_file()


# -- starting the decoder from the LM -----------------------------------------------------------
def _lm_sized_model(make_model, tiny_config):
    """The tiny acoustic model with the tiny LM's decoder sizes (embedding 16, 64 units, 1 layer)."""
    decoder = dict(tiny_config.model.decoder, embed_dim=TINY_LM["lm"]["embed_dim"], hidden_size=TINY_LM["lm"]["hidden_size"])
    return make_model(decoder=decoder)


def test_decoder_started_from_the_lm_is_the_lm_without_context(lm_package, make_model, tiny_config, fixture_utterances, tokenizer):
    """With all-zero encoder states (so a zero attention context), the started decoder's logits are the LM's."""
    from asr_s2s.package import init_decoder_from_lm

    model = _lm_sized_model(make_model, tiny_config)
    init_decoder_from_lm(model, lm_package / "lm")
    lm, _ = load_lm_package(lm_package / "lm")
    inputs, _ = collate_text([tokenizer.encode(u.text) for u in fixture_utterances[:3]], tokenizer.sos_id, tokenizer.eos_id)
    states = torch.zeros(3, 5, model.encoder.output_dim)
    with torch.inference_mode():
        got, _ = model.decoder(states, torch.tensor([5, 4, 3]), inputs)
        want = lm(inputs)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    fresh = _lm_sized_model(make_model, tiny_config)
    with torch.inference_mode():
        assert not torch.allclose(fresh.decoder(states, torch.tensor([5, 4, 3]), inputs)[0], want, atol=1e-2)


def test_decoder_and_lm_sizes_must_match(lm_package, make_model):
    from asr_s2s.package import init_decoder_from_lm

    with pytest.raises(ConfigError, match=r"differ in embed_dim 32 vs the LM's 16;") as error:
        init_decoder_from_lm(make_model(), lm_package / "lm")
    assert "hidden_size" not in str(error.value)  # only what differs is named (both have 64 units)


def test_decoder_start_needs_the_acoustic_models_tokens(lm_package, tmp_path, make_model, tiny_config):
    import shutil

    from asr_s2s.package import init_decoder_from_lm

    other = tmp_path / "lm"
    shutil.copytree(lm_package / "lm", other)
    tokens = (other / "tokens.txt").read_text().splitlines()
    a, b = tokens.index("A"), tokens.index("B")
    tokens[a], tokens[b] = tokens[b], tokens[a]  # as many tokens, in another order
    (other / "tokens.txt").write_text("\n".join(tokens) + "\n")
    with pytest.raises(ModelPackageError, match="differs from the acoustic model's"):
        init_decoder_from_lm(_lm_sized_model(make_model, tiny_config), other)


def test_cli_train_starts_the_decoder_from_the_lm(run_cli, lm_package, fixture_utterances, cmvn, tmp_path):
    from asr_s2s.manifest import write_manifest
    from conftest import TINY_YAML

    config = yaml.safe_load(TINY_YAML.read_text())
    config["train"]["epochs"] = 1
    write_manifest(fixture_utterances[:4], tmp_path / "m.jsonl")
    cmvn.save(tmp_path / "cmvn.json")

    def train(exp: str, *start):
        (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
        return run_cli("train", "--config", tmp_path / "exp.yaml", "--train-manifest", tmp_path / "m.jsonl",
                       "--valid-manifest", tmp_path / "m.jsonl", "--cmvn", tmp_path / "cmvn.json",
                       "--exp-dir", tmp_path / exp, *start, "--threads", "1", "--quiet")

    start = ("--init-decoder-from-lm", lm_package / "lm")
    code, out, err = train("mismatch", *start)  # the tiny config's decoder embeds in 32 dimensions, the LM in 16
    assert code == 2 and out == "" and "embed_dim 32 vs the LM's 16" in err and str(lm_package / "lm") in err
    config["model"]["decoder"].update(embed_dim=16, hidden_size=64)
    for exp, args in (("started", start), ("fresh", ())):
        code, _, err = train(exp, *args)
        assert code == 0, err
    # the LM has learnt these sentences: from its weights, the very first step already predicts most characters
    first = {exp: json.loads((tmp_path / exp / "train_log.jsonl").read_text().splitlines()[0]) for exp in ("started", "fresh")}
    assert first["started"]["step"] == first["fresh"]["step"] == 1
    assert first["started"]["accuracy"] > 0.5 > first["fresh"]["accuracy"]
    code, _, err = train("started", "--init-decoder-from-lm", tmp_path / "moved", "--resume")
    assert code == 0, err  # resumed: the checkpoint holds the decoder, the LM is not read
