"""The bundled corpus builder's language-model texts: WordNet definitions, minus dev/test sentences.

The data file lines below follow WordNet's ``data.*`` format: synset fields,
``|``, then the gloss (definitions separated by ``;``, examples in double quotes).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def builder():
    spec = importlib.util.spec_from_file_location("make_mini_librispeech", REPO / "data" / "make_mini_librispeech.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


DATA_FILE = """\
  1 This software and database is being provided to you, the LICENSEE, by
  2 Princeton University under the following license.
00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived or known (not necessarily a material thing); "an entity that has physical existence"; the state of being
00002137 03 n 02 abstraction 0 abstract_entity 0 010 | a general concept formed by extracting common features from specific examples
00003316 03 n 01 bad 0 002 | a thing; "it was bad" ; don't use digits like 42 here; caf\u00e9 au lait is served hot
"""


def test_definitions_are_the_glosses_without_examples_or_asides(builder, tmp_path):
    path = tmp_path / "data.noun"
    path.write_text(DATA_FILE, encoding="utf-8")
    assert list(builder.wordnet_definitions(path)) == [
        "that which is perceived or known",
        "the state of being",
        "a general concept formed by extracting common features from specific examples",
        "a thing",
        "don't use digits like 42 here",
        "caf\u00e9 au lait is served hot",
    ]
    # normalised like the spoken sentences: too short and digit-bearing parts are dropped, accents stripped
    exclude = ["THE STATE OF BEING"]  # e.g. a dev or test sentence
    assert builder.load_definitions([path], exclude) == [
        "A GENERAL CONCEPT FORMED BY EXTRACTING COMMON FEATURES FROM SPECIFIC EXAMPLES",
        "CAFE AU LAIT IS SERVED HOT",
        "THAT WHICH IS PERCEIVED OR KNOWN",
    ]
