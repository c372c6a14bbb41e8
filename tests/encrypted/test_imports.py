"""Import structure of ``securetrain.encrypted`` and ``securetrain.report``: no cycles between the
modules of a package (module-level, ``TYPE_CHECKING`` and function-level imports all count), the
packings registered by importing the package alone, and nothing heavy imported with it."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import securetrain

PACKAGES = ("securetrain.encrypted", "securetrain.report")


def _modules(package: str) -> dict[str, Path]:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations
    root = Path(next(iter(spec.submodule_search_locations)))
    mods = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join([package, *parts])] = path
    return mods


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(package: str) -> dict[str, set[str]]:
    """``{module: modules of the same package it imports}``, from the source (``ast``), every
    ``import`` statement counted wherever it is (top level, ``if TYPE_CHECKING``, inside functions)."""
    mods = _modules(package)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, path.name == "__init__.py", node)
                # ``from pkg import sub`` imports the submodule; ``from pkg import name`` imports pkg
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for target in targets:
                # ``import pkg.sub.mod`` names the deepest module of the package it reaches
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != mod:
                    graph[mod].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None if the graph is acyclic."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_inside_the_package(package: str) -> None:
    graph = import_graph(package)
    assert len(graph) > 3 and any(graph.values())
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_importing_the_package_registers_both_packings_and_nothing_heavy() -> None:
    code = (
        "import sys, securetrain.encrypted as e; "
        "print(sorted(e.PACKINGS), 'torch' in sys.modules, 'tenseal' in sys.modules)"
    )
    root = Path(securetrain.__file__).parents[1]  # this checkout, not an installed copy
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root, env=env
    ).stdout
    assert out.split() == ["['latency',", "'throughput']", "False", "False"]


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        ("securetrain.encrypted.layers", "LAYERS", "CKKS_LAYERS"),
        ("securetrain.encrypted.layers", "rule_for", "get_layer_rule"),
        ("securetrain.encrypted.wire", "fingerprint", "context_fingerprint"),
    ],
)
def test_renamed_names_keep_a_deprecated_alias(module: str, old: str, new: str) -> None:
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated; use {new}"):
        alias = getattr(mod, old)
    assert alias is getattr(mod, new)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        getattr(mod, new)
    with pytest.raises(AttributeError):
        mod.no_such_name  # noqa: B018 (the attribute access is the test)


def test_every_public_name_of_the_package_resolves() -> None:
    import securetrain.encrypted as enc
    from securetrain.encrypted import planner

    for name in enc.__all__:
        assert getattr(enc, name) is not None, name
    assert enc.EncryptionPlan.__module__ == "securetrain.encrypted.params"
    assert planner.EncryptionPlan is enc.EncryptionPlan  # still importable from where it was defined
