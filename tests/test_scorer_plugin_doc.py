"""docs/writing-a-scorer-plugin.md cannot rot: its code blocks, as written, are a package that installs and decodes.

Each block marked ``<!-- file: PATH -->`` is appended to PATH in a fresh
folder; pip builds and installs that folder (no index, no build isolation:
nothing is downloaded), and the scorer it registers decodes a real file
through the Python API and the command line.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import pytest

from asr_s2s.registry import Registry
from asr_s2s.transcriber import load_model
from conftest import REPO

DOC = REPO / "docs" / "writing-a-scorer-plugin.md"
MODULE = "asr_s2s_repetition_penalty"
BLOCK = re.compile(r"<!-- file: (?P<path>[^ ]+) -->\n```\w*\n(?P<code>.*?)```", re.DOTALL)


def _package_from_doc(root):
    blocks = list(BLOCK.finditer(DOC.read_text()))
    assert {m["path"] for m in blocks} == {f"src/{MODULE}/__init__.py", "pyproject.toml"}
    for match in blocks:
        path = root / match["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as out:
            out.write(match["code"] + "\n")
    return root


@pytest.fixture
def doc_plugin(tmp_path, monkeypatch):
    """The doc's package, installed by pip into a site folder on sys.path for this test only."""
    source = _package_from_doc(tmp_path / "pkg")
    site = tmp_path / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
         "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert pip.returncode == 0, pip.stderr
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))  # for the console script too
    importlib.invalidate_caches()
    sys.modules.pop(MODULE, None)
    yield site
    sys.modules.pop(MODULE, None)


def test_the_docs_package_installs_and_decodes(doc_plugin, robust_package, fixture_utterances, run_cli):
    registry = Registry()
    info = registry.get("scorer", "repetition_penalty")
    assert info.plugin == "repetition_penalty" and info.distribution == "asr-s2s-repetition-penalty 0.1.0"
    transcriber = load_model(robust_package, registry=registry)
    audio = fixture_utterances[0].audio
    plain = transcriber.transcribe(audio, beam_size=4)
    penalised = transcriber.transcribe(audio, beam_size=4, scorers={"repetition_penalty": 1.0},
                                       scorer_params={"repetition_penalty": {"max_run": 2}})
    assert set(penalised.segments[0].scores) == {*plain.segments[0].scores, "repetition_penalty"}
    assert penalised.text, "decodes to a real text"
    code, out, err = run_cli("transcribe", "--model", robust_package, audio, "--beam-size", "4", "--quiet",
                             "--scorer", "repetition_penalty=1.0", "--scorer-param", "repetition_penalty.max_run=3")
    assert code == 0, err
    assert out.split("\t", 1)[1].strip()
