"""The one module that imports MPI and PETSc, in the order the stack needs.

Order: ``mpi4py.MPI`` first, then ``dolfinx_solver`` when the binary wheel stack is installed (it
loads the MPI library its PETSc and DOLFINx were built against), then ``petsc4py``. This module
imports nothing else, so it is safe to import whether DOLFINx came first, later or never (a
FEniCSx script that names ``-ksp_python_type hybridsolve.recycling.petsc.GCRODR`` imports it
after DOLFINx). h5py is imported only where HDF5 is read or written (``hybridsolve.datagen``),
through :func:`import_h5py`: a plain ``import h5py`` after ``dolfinx.fem.petsc`` has loaded
DOLFINx's own HDF5 library fails ("Not a datatype", measured with dolfinx-solver-real
0.11.0.post0 and h5py 3.16: h5py's extension modules bind to the HDF5 symbols already loaded);
loading h5py with ``RTLD_DEEPBIND`` makes it use its own HDF5 in either order. Everything else in
hybridsolve imports PETSc from here::

    from hybridsolve.stack import MPI, PETSc

A user who brings their own petsc4py/mpi4py (HPC modules, conda) needs no ``dolfinx_solver``:
it is used when present and skipped otherwise.

PETSc is initialised lazily, on first access to ``PETSc``. A program that wants PETSc to read its
command line (``-log_view``, ``-help``, ``-ksp_monitor``) calls :func:`init` with those arguments
before anything else touches PETSc; if PETSc was already initialised (a driver imported
``petsc4py.PETSc`` itself), the arguments are inserted into the options database instead.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from typing import Any, Sequence

from mpi4py import MPI

try:  # the binary wheel stack: must precede petsc4py and dolfinx
    import dolfinx_solver  # noqa: F401

    HAVE_WHEEL_STACK = True
except ImportError:  # a user-provided PETSc/DOLFINx
    HAVE_WHEEL_STACK = False

from hybridsolve.errors import InputError

__all__ = ["MPI", "PETSc", "init", "have_dolfinx", "describe", "HAVE_WHEEL_STACK", "parse_args",
           "insert_args", "import_h5py"]

_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

_petsc: Any = None


def init(argv: Sequence[str] | None = None) -> Any:
    """Initialise petsc4py (once) and return the ``PETSc`` module.

    Args:
        argv: PETSc command-line options without the program name, e.g.
            ``["-ksp_monitor", "-pc_type", "gamg"]``.
    """
    global _petsc
    argv = list(argv or [])
    if _petsc is None and "petsc4py.PETSc" not in sys.modules:
        try:
            import petsc4py
        except ImportError as err:  # pragma: no cover - depends on the installation
            raise ImportError(
                "hybridsolve needs petsc4py: install the wheel stack with "
                "'pip install hybridsolve[stack]' or load your site's PETSc module"
            ) from err
        prog = sys.argv[0] if sys.argv and sys.argv[0] and not sys.argv[0].startswith("-") else "hybridsolve"
        petsc4py.init([prog, *argv])
        from petsc4py import PETSc

        _petsc = PETSc
        return _petsc
    from petsc4py import PETSc

    _petsc = PETSc
    if argv:
        insert_args(argv)
    return _petsc


def _is_name(tok: str) -> bool:
    return tok.startswith("-") and len(tok) > 1 and not _NUMBER.match(tok)


def parse_args(argv: Sequence[str]) -> list[tuple[str, str | None]]:
    """Split PETSc command-line tokens into (name, value) pairs, names without the dash.

    ``["-ksp_rtol", "1e-8", "-ksp_monitor", "-x", "-1"]`` gives
    ``[("ksp_rtol", "1e-8"), ("ksp_monitor", None), ("x", "-1")]``.

    Raises:
        InputError: for a token that is neither an option name nor follows one.
    """
    out: list[tuple[str, str | None]] = []
    i = 0
    argv = list(argv)
    while i < len(argv):
        tok = argv[i]
        if not _is_name(tok):
            raise InputError(f"unexpected argument {tok!r}: PETSc options look like -name [value]")
        name = tok.lstrip("-")
        if i + 1 < len(argv) and not _is_name(argv[i + 1]):
            out.append((name, argv[i + 1]))
            i += 2
        else:
            out.append((name, None))
            i += 1
    return out


def insert_args(argv: Sequence[str]) -> None:
    """Insert command-line style options into PETSc's database (when PETSc is already running)."""
    opts = init().Options()
    for name, value in parse_args(argv):
        opts.setValue(name, "" if value is None else value)


def import_h5py() -> Any:
    """The ``h5py`` module, imported so that it works whether DOLFINx came first or not.

    h5py's extension modules are loaded with ``RTLD_DEEPBIND`` (where the platform has it), so
    they bind to the HDF5 library h5py ships rather than to one DOLFINx loaded before.
    """
    if "h5py" in sys.modules:
        return sys.modules["h5py"]
    import os

    deep = getattr(os, "RTLD_DEEPBIND", 0)
    old = sys.getdlopenflags()
    if deep:
        sys.setdlopenflags(os.RTLD_NOW | deep)
    try:
        import h5py
    finally:
        sys.setdlopenflags(old)
    return h5py


def have_dolfinx() -> bool:
    """Whether DOLFINx can be imported (the FEM problem families and mesh movement need it)."""
    return importlib.util.find_spec("dolfinx") is not None


def describe() -> str:
    """One line naming the versions of the stack in use."""
    PETSc = init()
    ver = ".".join(str(v) for v in PETSc.Sys.getVersion())
    parts = [f"PETSc {ver}", " ".join(MPI.Get_library_version().split()[:3])]
    if have_dolfinx():
        import dolfinx

        parts.append(f"DOLFINx {dolfinx.__version__}")
    parts.append("wheel stack" if HAVE_WHEEL_STACK else "user-provided PETSc")
    return ", ".join(parts)


def __getattr__(name: str) -> Any:
    if name == "PETSc":
        return init()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
