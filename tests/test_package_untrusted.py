"""A model package is untrusted input: its config may name only its own files, ask only for bounded work,
and a bad value in it is a clear error (exit 2), never a traceback, a read of /etc/passwd or a huge allocation."""

from __future__ import annotations

import os
import resource
import shutil

import pytest
import yaml

from asr_s2s.errors import ModelPackageError
from asr_s2s.package import load_package
from asr_s2s.transcriber import load_model

SECRET = "root:x:0:0:do-not-print-me"
ARPA = "\\data\\\nngram 1=4\n\n\\1-grams:\n-1.5 <unk>\n-99 <s>\n-1.0 </s>\n-0.8 THE\n\n\\end\\\n"


@pytest.fixture
def package(trained_package, tmp_path):
    return shutil.copytree(trained_package, tmp_path / "model")


def _edit(package, edit) -> None:
    config = yaml.safe_load((package / "config.yaml").read_text())
    edit(config)
    (package / "config.yaml").write_text(yaml.safe_dump(config))


def _decode(package, scorers, params) -> None:
    def edit(config):
        config["decode"]["scorers"].update(scorers)
        config["decode"]["scorer_params"] = params

    _edit(package, edit)


def _refused(package, registry, *fragments) -> str:
    with pytest.raises(ModelPackageError) as info:
        load_package(package, registry)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_a_package_cannot_name_a_file_outside_itself(package, registry, tmp_path):
    secret = tmp_path / "passwd"
    secret.write_text(SECRET + "\n")
    _decode(package, {"hotwords": 1.0}, {"hotwords": {"phrases_file": str(secret)}})
    message = _refused(package, registry, "decode.scorer_params.hotwords.phrases_file", "not a file inside the package",
                       "--scorer-param hotwords.phrases_file=PATH")
    assert SECRET not in message


@pytest.mark.parametrize("path", ["/dev/zero", "../outside.arpa", "/etc/hostname"])
def test_a_package_cannot_point_the_ngram_scorer_elsewhere(package, registry, path):
    (package.parent / "outside.arpa").write_text(ARPA)
    _decode(package, {"ngram": 0.1}, {"ngram": {"path": path, "unit": "word"}})
    _refused(package, registry, "decode.scorer_params.ngram.path", "not a file inside the package")
    assert not list(package.parent.glob("*.tables.safetensors")), "nothing is written beside a refused file"


def test_a_symlink_out_of_the_package_is_refused(package, registry, tmp_path):
    (tmp_path / "elsewhere.arpa").write_text(ARPA)
    (package / "lm.arpa").symlink_to(tmp_path / "elsewhere.arpa")
    _decode(package, {"ngram": 0.1}, {"ngram": {"path": "lm.arpa", "unit": "word"}})
    _refused(package, registry, "decode.scorer_params.ngram.path")


def test_a_package_may_bundle_its_own_files(package, registry, fixture_utterances):
    (package / "lm.arpa").write_text(ARPA)
    (package / "names.txt").write_text("THE CAT\n")
    _decode(package, {"ngram": 0.1, "hotwords": 1.0},
            {"ngram": {"path": "lm.arpa", "unit": "word"}, "hotwords": {"phrases_file": "names.txt"}})
    _, config = load_package(package, registry)
    assert config.decode.scorer_params["ngram"]["path"] == str((package / "lm.arpa").resolve())
    result = load_model(package, registry=registry).transcribe(fixture_utterances[0].audio, beam_size=2)
    assert result.segments[0].scores.keys() >= {"ngram", "hotwords"}


def test_paths_the_user_gives_are_taken_as_given(trained_package, registry, tmp_path, fixture_utterances):
    arpa = tmp_path / "mine.arpa"
    arpa.write_text(ARPA)
    transcriber = load_model(trained_package, registry=registry)
    result = transcriber.transcribe(fixture_utterances[0].audio, beam_size=2, scorers={"ngram": 0.1},
                                    scorer_params={"ngram": {"path": str(arpa), "unit": "word"}})
    assert "ngram" in result.segments[0].scores


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("beam_size", 10**9, "beam_size"),
    ("max_length_ratio", 1e9, "max_length_ratio"),
    ("batch_seconds", 1e12, "batch_seconds"),
    ("pre_beam_ratio", 1e9, "pre_beam_ratio"),
])
def test_decode_limits_are_bounded(package, registry, key, value, fragment):
    _edit(package, lambda c: c["decode"].update({key: value}))
    _refused(package, registry, "config.yaml", fragment)


@pytest.mark.parametrize(("section", "key", "value", "fragment"), [
    ("encoder", "hidden_size", "x", "model.encoder.hidden_size: expected int"),
    ("decoder", "conv_kernel", 4, "conv_kernel must be odd"),
    ("decoder", "num_layers", 2.5, "model.decoder.num_layers: expected int"),
])
def test_bad_component_params_are_a_package_error(package, registry, run_cli, fixture_utterances, section, key, value,
                                                  fragment):
    _edit(package, lambda c: c["model"][section].update({key: value}))
    _refused(package, registry, "config.yaml", fragment)
    code, out, err = run_cli("transcribe", "--model", str(package), fixture_utterances[0].audio, "--quiet")
    assert code == 2 and fragment in err and "Traceback" not in err


def test_a_huge_size_costs_no_memory(package, registry):
    _edit(package, lambda c: c["model"]["encoder"].update(hidden_size=200_000))  # about 1 TB of LSTM weights
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _refused(package, registry, "model.safetensors", "do not match", "config gives")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: under 200 MB more at peak


@pytest.mark.parametrize("name", ["tokens.txt", "cmvn.json", "config.yaml"])
def test_symlinked_package_files_are_refused_unquoted(package, registry, tmp_path, name):
    target = tmp_path / "secret.txt"
    target.write_text(SECRET + "\nsecond line\n")
    os.remove(package / name)
    (package / name).symlink_to(target)
    message = _refused(package, registry, name, "symbolic link")
    assert SECRET not in message
