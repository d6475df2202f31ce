"""The layer contract of `audiolm` (data flows one way, upwards), read from the source.

Every module is parsed with `ast`; every import statement counts, at module level and inside
functions (a function-body import is still a dependency). Layers, bottom to top:

  base      config, patterns, nn, audio, data, parallel, presets, extras, plots (and the root)
  models    base + models
  importers base + models
  sample    base + models
  tasks     base + models + sample + importers
  train     all of the above
  main      anything

Inside the base: `nn` imports nothing above the base, and `patterns` only jax / numpy / the
standard library (it is shared by the loss and the sampler). No module imports `configs` (config
files are loaded by path), and the packages form no import cycle. Failures name the module, the
line and the import.
"""

from __future__ import annotations

import ast
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "audiolm")

BASE = {"config", "patterns", "nn", "audio", "data", "parallel", "presets", "extras", "plots", ""}
ALLOWED = {
    "models": BASE | {"models"},
    "importers": BASE | {"models", "importers"},
    "sample": BASE | {"models", "sample"},
    "tasks": BASE | {"models", "sample", "importers", "tasks"},
    "train": BASE | {"models", "sample", "importers", "tasks", "train"},
}
ABOVE_BASE = {"models", "importers", "sample", "tasks", "train", "main"}


def _modules():
    """{dotted module name: file path} for every .py file under audiolm/."""
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


MODULES = _modules()


def _imports(module: str, path: str):
    """[(line, imported dotted name)] of every import in the file, relative imports resolved.

    `from audiolm import x` yields `audiolm.x` (a submodule when one exists, else the package).
    """
    with open(path) as f:
        tree = ast.parse(f.read(), filename=path)
    is_package = path.endswith("__init__.py")
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                parts = parts if is_package else parts[:-1]
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.append((node.lineno, full if full in MODULES else base))
    return out


def _package(name: str) -> str | None:
    """The layer member of an `audiolm` module: `audiolm.nn.moe` -> nn, `audiolm` -> ""."""
    parts = name.split(".")
    if parts[0] != "audiolm":
        return None
    return parts[1] if len(parts) > 1 else ""


EDGES = [(module, line, target) for module, path in sorted(MODULES.items())
         for line, target in _imports(module, path)]


def _where(module, line, target):
    return f"{MODULES[module]}:{line}: {module} imports {target}"


def test_the_scanner_sees_module_level_function_body_and_relative_imports(tmp_path):
    source = tmp_path / "fake.py"
    source.write_text(
        "import numpy as np\n"
        "from audiolm import patterns\n"
        "from . import moshi\n"
        "from ..models import thinker\n"
        "def f():\n"
        "    from audiolm.sample import rules\n"
        "    import configs.moshi\n")
    found = {t for _, t in _imports("audiolm.importers.fake", str(source))}
    assert found == {"numpy", "audiolm.patterns", "audiolm.importers.moshi",
                     "audiolm.models.thinker", "audiolm.sample.rules", "configs.moshi"}
    assert len(MODULES) > 40 and "audiolm.importers.moshi" in MODULES


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_is_below(layer):
    bad = [_where(m, line, t) for m, line, t in EDGES
           if _package(m) == layer and _package(t) is not None and _package(t) not in ALLOWED[layer]]
    assert not bad, f"{layer} may import only {sorted(p or 'audiolm' for p in ALLOWED[layer])}:\n" \
        + "\n".join(bad)


def test_base_imports_nothing_above_it():
    bad = [_where(m, line, t) for m, line, t in EDGES
           if _package(m) in BASE and _package(t) in ABOVE_BASE]
    assert not bad, "\n".join(bad)


def test_patterns_depend_on_jax_numpy_and_the_standard_library_only():
    allowed_roots = {"jax", "numpy", "__future__"} | set(sys.stdlib_module_names)
    bad = [_where(m, line, t) for m, line, t in EDGES
           if m == "audiolm.patterns" and t.split(".")[0] not in allowed_roots]
    assert not bad, "\n".join(bad)


def test_patterns_are_shared_by_the_loss_and_the_sampler():
    users = {_package(m) for m, _, t in EDGES if t == "audiolm.patterns"}
    assert users & {"tasks", "models"}, f"the loss side does not import audiolm.patterns: {users}"
    assert "sample" in users, f"audiolm.sample does not import audiolm.patterns: {users}"


def test_no_module_imports_configs():
    bad = [_where(m, line, t) for m, line, t in EDGES if t.split(".")[0] == "configs"]
    assert not bad, "config files are loaded by path:\n" + "\n".join(bad)


def test_packages_form_no_import_cycle():
    graph: dict[str, set[str]] = {}
    witness = {}
    for m, line, t in EDGES:
        a, b = _package(m), _package(t)
        if b is None or a == b or "" in (a, b):
            continue
        graph.setdefault(a, set()).add(b)
        witness.setdefault((a, b), _where(m, line, t))
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                lines = [witness[(x, y)] for x, y in zip(cycle, cycle[1:])]
                pytest.fail("import cycle " + " -> ".join(cycle) + ":\n" + "\n".join(lines))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
