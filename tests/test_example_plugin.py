"""The worked example in examples/asr-s2s-repetition-penalty: a third-party scorer, installed for real.

Each test installs the example as pip would: its package is copied into a
site folder beside a ``.dist-info`` whose ``entry_points.txt`` is built from
the example's own ``pyproject.toml``, so the shipped entry point is what gets
discovered. The folder is on ``sys.path`` only for the test that asked for it,
and the module is forgotten afterwards.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import tomllib
from itertools import groupby

import pytest
import torch

from asr_s2s.errors import ConfigError, PluginError
from asr_s2s.registry import ConfigKeyError, Registry
from asr_s2s.recognizer import build_scorers

from conftest import FIXTURE_DIR, REPO, install_example, make_search

EXAMPLE = REPO / "examples" / "asr-s2s-repetition-penalty"
MODULE = "asr_s2s_repetition_penalty"
PROJECT = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
DISTRIBUTION = f"{PROJECT['name']} {PROJECT['version']}"


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Install the example into a fresh site folder on sys.path; uninstalled again after the test."""
    with install_example(EXAMPLE, tmp_path / "site", monkeypatch) as site:
        yield site


@pytest.fixture
def example_registry(installed):
    """A registry that sees the example beside the built-ins."""
    return Registry()


def _excess(tokens, max_run: int, exempt) -> int:
    """Characters past ``max_run`` in runs of one repeated token, counted straight from the tokens."""
    return sum(max(0, len(list(run)) - max_run) for token, run in groupby(tokens) if token not in exempt)


def _exempt(model) -> set[int]:
    return {model.tokenizer.eos_id, model.tokenizer.tokens.index(" ")}


@pytest.fixture
def encoded(random_model, fixture_batch):
    """The untrained model loops on characters often: the penalty has work to do."""
    with torch.inference_mode():
        return random_model.encode(fixture_batch.feats, fixture_batch.feat_lengths)


# -- discovery ---------------------------------------------------------------------------------
def test_shipped_entry_point_is_discovered_and_listed(example_registry, run_cli):
    assert PROJECT["entry-points"]["asr_s2s"] == {"repetition_penalty": MODULE}
    assert "asr-s2s" in " ".join(PROJECT["dependencies"])
    info = example_registry.get("scorer", "repetition_penalty")
    assert (info.plugin, info.distribution) == ("repetition_penalty", DISTRIBUTION)
    assert DISTRIBUTION == "asr-s2s-repetition-penalty 0.1.0"
    assert not info.cls.partial
    assert {"decoder", "length_bonus"} <= set(example_registry.names("scorer")), "built-ins still load beside it"

    code, out, _ = run_cli("plugins", "--json")
    assert code == 0
    assert {"kind": "scorer", "name": "repetition_penalty", "plugin": "repetition_penalty",
            "distribution": DISTRIBUTION} in json.loads(out)
    code, out, _ = run_cli("plugins", "--disable-plugin", "repetition_penalty")
    assert code == 0 and "repetition_penalty" not in out


def test_not_installed_means_unknown(run_cli, random_package, tmp_path):
    """Without the install (and after another test's), the name is unknown, and says so."""
    assert MODULE not in sys.modules
    code, out, err = run_cli(
        "evaluate", "--model", random_package, "--data-dir", FIXTURE_DIR, "--scorer", "repetition_penalty=1.0",
        "--output-dir", tmp_path / "d", "--quiet",
    )
    assert code == 2 and out == ""
    assert "unknown scorer 'repetition_penalty'" in err and "asr-s2s plugins" in err


# -- the scorer on its own ---------------------------------------------------------------------
def test_scores_follow_the_runs_one_token_at_a_time(example_registry, random_model):
    """Four prefixes stepped side by side; each step's scores against a recount from the tokens.

    Between steps the rows are kept, reversed, or pruned with one row duplicated,
    as search does, and each row carries on with its parent's text.
    """
    tok = random_model.tokenizer
    scorer = example_registry.build("scorer", {"name": "repetition_penalty"}, "test", model=random_model)
    ids = torch.tensor([tok.encode(t) for t in ["AAAAB", "AABBB", "A   A", "''''A"]])  # (N, U)
    n = ids.shape[0]
    reorders = [torch.arange(n), torch.arange(n).flip(0), torch.tensor([1, 1, 2, 3])]
    state = scorer.init_state(torch.zeros(n, 3, 8), torch.full((n,), 3))
    prefix = torch.full((n, 1), tok.sos_id)
    exempt = _exempt(random_model)
    for step in range(ids.shape[1] + 1):
        scores, new_state = scorer.score(prefix, state)
        assert scores.shape == (n, len(tok)) and scores.dtype == torch.float32
        for row in range(n):
            done = prefix[row, 1:].tolist()
            expected = [_excess([*done, v], 2, exempt) - _excess(done, 2, exempt) for v in range(len(tok))]
            assert scores[row].tolist() == [-float(e) for e in expected], (tok.decode(done), step)
        assert scores[:, tok.eos_id].eq(0).all() and scores.min() >= -1
        if step == ids.shape[1]:
            break
        index = reorders[step % len(reorders)]
        ids = ids[index]
        prefix = torch.cat([prefix[index], ids[:, step : step + 1]], dim=1)
        state = scorer.select(new_state, index, ids[:, step])
        assert state.last.shape == state.run.shape == (n,) and state.run.dtype == torch.long
    assert any(_excess(row, 2, exempt) for row in prefix[:, 1:].tolist()), "some row ran too long"


def test_max_run_param(example_registry, random_model):
    scorer = example_registry.build("scorer", {"name": "repetition_penalty", "max_run": 1}, "test", model=random_model)
    assert scorer.max_run == 1
    with pytest.raises(ConfigError, match="max_run must be a positive integer, got 0"):
        example_registry.build("scorer", {"name": "repetition_penalty", "max_run": 0}, "test", model=random_model)


# -- in beam search ------------------------------------------------------------------------------
def test_zero_weight_changes_nothing(example_registry, random_model, encoded):
    states, lengths = encoded
    alone = make_search(random_model, example_registry, {"decoder": 1.0}, beam_size=3, nbest=3)(states, lengths)
    zero = make_search(random_model, example_registry, {"decoder": 1.0, "repetition_penalty": 0.0}, beam_size=3, nbest=3)(states, lengths)
    assert zero == alone  # tokens, scores and per-scorer shares identical


@pytest.mark.parametrize("max_run", [1, 2])
def test_share_is_minus_the_excess_repeats(example_registry, random_model, encoded, max_run):
    states, lengths = encoded
    weights = {"decoder": 1.0, "repetition_penalty": 0.01}  # too small to break the loops, so there are shares to check
    search = make_search(random_model, example_registry, weights, {"repetition_penalty": {"max_run": max_run}}, beam_size=3, nbest=3)
    exempt = _exempt(random_model)
    shares = []
    for nbest in search(states, lengths):
        for hyp in nbest:
            assert set(hyp.scores) == {"decoder", "repetition_penalty"}
            assert hyp.scores["repetition_penalty"] == -_excess(hyp.tokens, max_run, exempt)
            assert hyp.score == pytest.approx(hyp.scores["decoder"] + 0.01 * hyp.scores["repetition_penalty"], abs=1e-6)
            shares.append(hyp.scores["repetition_penalty"])
    assert min(shares) < 0, "some hypothesis pays a penalty, or this test checks nothing"


def test_a_large_weight_removes_the_loops(example_registry, random_model, encoded):
    states, lengths = encoded
    exempt = _exempt(random_model)
    plain = make_search(random_model, example_registry, {"decoder": 1.0}, beam_size=3)(states, lengths)
    assert any(_excess(n[0].tokens, 2, exempt) for n in plain), "the untrained model loops"
    weights = {"decoder": 1.0, "repetition_penalty": 100.0}
    for nbest in make_search(random_model, example_registry, weights, beam_size=3, nbest=3)(states, lengths):
        assert nbest and all(h.scores["repetition_penalty"] == 0 and _excess(h.tokens, 2, exempt) == 0 for h in nbest)


def test_batched_equals_one_utterance_at_a_time(example_registry, random_model, encoded):
    states, lengths = encoded
    search = make_search(random_model, example_registry, {"decoder": 1.0, "repetition_penalty": 1.0}, beam_size=3, nbest=3)
    batched = search(states, lengths)
    for b, n in enumerate(lengths.tolist()):
        alone = search(states[b : b + 1, :n], lengths[b : b + 1])[0]
        assert [h.tokens for h in batched[b]] == [h.tokens for h in alone]
        for x, y in zip(batched[b], alone):
            assert x.score == pytest.approx(y.score, abs=1e-4)
            assert x.scores["repetition_penalty"] == y.scores["repetition_penalty"]


# -- errors --------------------------------------------------------------------------------------
def test_typo_in_a_param_key_is_named(example_registry, random_model):
    weights = {"decoder": 1.0, "repetition_penalty": 1.0}
    with pytest.raises(ConfigKeyError) as info:
        build_scorers(random_model, example_registry, weights, {"repetition_penalty": {"max_rn": 3}})
    message = str(info.value)
    assert "decode.scorers.repetition_penalty" in message and "unknown key 'max_rn'" in message
    assert "Did you mean 'max_run'?" in message and "Accepted keys: max_run" in message


def test_params_without_a_weight(example_registry, random_model):
    with pytest.raises(ConfigError, match="'repetition_penalty' has params but no weight"):
        build_scorers(random_model, example_registry, {"decoder": 1.0}, {"repetition_penalty": {"max_run": 3}})


def test_a_second_copy_under_another_name_clashes(installed):
    """Two distributions registering one scorer name: the error names both."""
    shutil.copytree(installed / MODULE, installed / "other_rp", ignore=shutil.ignore_patterns("__pycache__"))
    other = installed / "other_rp-1.0.dist-info"
    other.mkdir()
    (other / "METADATA").write_text("Metadata-Version: 2.1\nName: other-rp\nVersion: 1.0\n")
    (other / "entry_points.txt").write_text("[asr_s2s]\nother_rp = other_rp\n")
    importlib.invalidate_caches()
    try:
        with pytest.raises(PluginError) as info:
            Registry()
    finally:
        sys.modules.pop("other_rp", None)
    message = str(info.value)
    assert "two plugins register the scorer 'repetition_penalty'" in message
    assert f"'repetition_penalty' ({DISTRIBUTION})" in message and "'other_rp' (other-rp 1.0)" in message


# -- the command line ----------------------------------------------------------------------------
def test_evaluate_with_the_scorer(installed, run_cli, trained_package, tmp_path):
    base = ["evaluate", "--model", trained_package, "--data-dir", FIXTURE_DIR, "--json", "--num-workers", "0", "--quiet"]
    code, out, err = run_cli(*base, "--output-dir", tmp_path / "with", "--scorer", "repetition_penalty=1.0")
    assert code == 0, err
    result = json.loads(out)
    assert result["utterances"] == 8 and result["failed"] == 0
    code, plain, _ = run_cli(*base, "--output-dir", tmp_path / "without")
    assert code == 0
    # no fixture transcript repeats a character three times, so the overfit model's output is unchanged
    assert (tmp_path / "with" / "hyp.trn").read_text() == (tmp_path / "without" / "hyp.trn").read_text()
    assert result == json.loads(plain)
