"""The layering the code is built on, checked on the source: the core knows interfaces, not components;
plugins reach the core only through its plugin-facing modules and never import each other; rooms stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from asr_s2s.plugin_api import PLUGIN_FACING

REPO = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 420  # about 400: a module is read in one sitting
MAX_FUNCTION_LINES = 60


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module ``path`` imports (absolute names; ``level`` > 0 for relative imports)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.extend((alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


def _plugin_of(path: Path) -> str:
    """The plugin a file of plugins/ belongs to: its module, or its package for plugins/NAME/*.py."""
    relative = path.relative_to(REPO / "plugins")
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def test_core_never_imports_a_concrete_component():
    for path in sorted((REPO / "asr_s2s").rglob("*.py")):
        for module, _ in _imports(path):
            assert not module.startswith("asr_s2s_plugins"), f"{path.relative_to(REPO)} imports {module}"


def test_plugins_import_no_other_plugin_and_only_the_plugin_facing_core():
    for path in sorted((REPO / "plugins").rglob("*.py")):
        if path.name == "__init__.py" and path.parent == REPO / "plugins":
            continue
        own = _plugin_of(path)
        for module, level in _imports(path):
            where = f"{path.relative_to(REPO)} imports {module or '.'}"
            if level:  # relative: only inside its own package
                assert len(path.relative_to(REPO / "plugins").parts) > 1 and level == 1, where
            elif module.startswith("asr_s2s_plugins"):
                assert module.split(".")[1:2] == [own], where
            elif module == "asr_s2s" or module.startswith("asr_s2s."):
                assert module in PLUGIN_FACING, f"{where}; plugins use {', '.join(PLUGIN_FACING)}"


@pytest.mark.parametrize("root", ["asr_s2s", "plugins"])
def test_modules_and_functions_stay_small(root):
    too_long = []
    for path in sorted((REPO / root).rglob("*.py")):
        source = path.read_text()
        if source.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(REPO)}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, "split these (docs/architecture.md says where things go):\n" + "\n".join(too_long)


def test_every_package_is_installed():
    """A wheel (not only an editable install) carries every package folder: pyproject lists each one."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for root, name in (("asr_s2s", "asr_s2s"), ("plugins", "asr_s2s_plugins")):
        found |= {".".join((name, *p.parent.relative_to(REPO / root).parts)) for p in (REPO / root).rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
