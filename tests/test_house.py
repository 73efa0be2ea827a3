"""The house: no import cycles, every registered method and mover resolvable by name."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from conftest import ROOT
from hybridsolve.solvers.registry import METHODS


def _module_graph():
    pkg = ROOT / "hybridsolve"
    mods = {}
    for path in pkg.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    edges = {m: set() for m in mods}
    for m, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):   # module level and lazy imports
            if isinstance(node, ast.ImportFrom) and node.module in mods:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                # a package importing its own submodules (registration) is not a cycle
                if t in mods and t != m and not t.startswith(m + "."):
                    edges[m].add(t)
    return edges


def test_no_import_cycles():
    edges = _module_graph()
    state, cycles = {}, []

    def visit(u, stack):
        state[u] = 1
        stack.append(u)
        for v in sorted(edges[u]):
            if state.get(v) == 1:
                cycles.append(" -> ".join(stack[stack.index(v):] + [v]))
            elif not state.get(v):
                visit(v, stack)
        stack.pop()
        state[u] = 2

    for m in sorted(edges):
        if not state.get(m):
            visit(m, [])
    assert not cycles, cycles


@pytest.mark.parametrize("name", list(METHODS))
def test_every_registered_method_names_importable_types(name):
    opts = METHODS[name].options
    for key in ("ksp_python_type", "pc_python_type"):
        if key in opts:
            module, _, cls = opts[key].rpartition(".")
            assert hasattr(importlib.import_module(module), cls), opts[key]
    assert METHODS[name].description


def test_benchmarks_doc_is_regenerated_from_the_results():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(ROOT / "tools" / "benchmarks_doc.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.serial   # starts its own python process (under mpiexec it would inherit the PMI)
def test_h5py_only_where_hdf5_is_read_or_written():
    import subprocess
    import sys

    code = ("import sys; import hybridsolve.recycling.petsc, hybridsolve.learned.petsc, "
            "hybridsolve.datagen, hybridsolve.cli.main; print('h5py' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stdout + r.stderr
