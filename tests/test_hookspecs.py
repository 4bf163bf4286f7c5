"""asr_s2s.hookspecs and asr_s2s.interfaces: documented hooks, and every hook implemented and exercised."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from asr_s2s import hookspecs, interfaces
from asr_s2s.registry import KINDS, _HOOK_OF_KIND

HOOKS = [name for name, fn in vars(hookspecs).items() if name.startswith("asr_s2s_") and callable(fn)]
SHAPELESS = {"from_model"}  # builds a component; documented on the component
NO_TENSORS = {"init_from_language_model"}  # methods that take and return no tensor


def test_there_is_one_hook_per_component_kind():
    assert sorted(HOOKS) == sorted(_HOOK_OF_KIND.values())
    assert set(_HOOK_OF_KIND) == set(KINDS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook))
    assert doc and ":returns:" in doc
    assert "(B, " in doc or "(N, " in doc, "tensor shapes are documented"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_builtin_implementation(registry, hook):
    assert getattr(registry.pm.hook, hook).get_hookimpls()


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_named_in_the_tests(hook):
    """A meta-test: a new hook must come with tests that mention it."""
    here = Path(__file__).parent
    assert any(hook in p.read_text() for p in here.glob("test_*.py") if p.name != Path(__file__).name)


@pytest.mark.parametrize(
    "cls", [interfaces.Encoder, interfaces.Decoder, interfaces.LanguageModel, interfaces.Scorer, interfaces.Augmentation]
)
def test_interface_methods_document_shapes(cls):
    """Every public method documents the shapes of the tensors it takes or returns, e.g. ``(N, V)``."""
    shape = re.compile(r"``\([A-Z][^`]*\)``|\(([A-Z]'?|N / beam|\d)(, [^)]*)?\)")
    for name, member in vars(cls).items():
        if name.startswith("_") or not callable(member) or name in SHAPELESS:
            continue
        doc = inspect.getdoc(member) or ""
        assert doc, f"{cls.__name__}.{name} has no docstring"
        if name not in NO_TENSORS:
            assert shape.search(doc), f"{cls.__name__}.{name}: its docstring names no tensor shape such as (N, V)"


def test_scorer_defaults(random_model):
    class Constant(interfaces.Scorer):
        name = "constant"

        def init_state(self, states, state_lengths):
            return None

        def select(self, state, index, tokens):
            return None

    scorer = Constant.from_model(random_model)
    assert scorer.final_score(None) is None and not scorer.partial
    with pytest.raises(NotImplementedError, match="partial scorer"):
        scorer.score(None, None)
    with pytest.raises(NotImplementedError, match="full scorer"):
        scorer.score_partial(None, None, None)
