"""The one options convention: everything is configured through PETSc's options database.

* Code passes options as a dict without the leading dash, applied under a prefix, e.g.
  ``{"ksp_type": "cg", "pc_type": "gamg"}`` with prefix ``"darcy_"``.
* Values set in code are *defaults*: a value already in the database (the command line,
  ``PETSC_OPTIONS``, an options file) wins, as with any PETSc program. Defaults set here are
  removed again once the object has read them, so they do not leak into other solvers.
* Options nobody read are reported (``-options_left`` style) by :func:`unused_options`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Sequence

from hybridsolve.errors import InputError
from hybridsolve.stack import insert_args, parse_args  # noqa: F401  (re-exported)

__all__ = ["parse_args", "insert_args", "defaults_under_prefix", "unused_options", "check_prefix",
           "check_omega"]

# Options PETSc reads at initialisation or finalisation, never through a solver object.
_ALWAYS_USED = {
    "options_left", "log_view", "help", "malloc_debug", "malloc_dump", "log_trace",
    "info", "on_error_abort", "no_signal_handler", "options_file", "viewer_binary_skip_info",
    "memory_view", "check_pointer_intensity", "options_view",
}


def check_prefix(prefix: str | None) -> str:
    """Validate an options prefix (no leading dash, no spaces); ``None`` becomes ``""``."""
    prefix = prefix or ""
    if prefix.startswith("-") or any(c.isspace() for c in prefix):
        raise InputError(f"options prefix {prefix!r} must not start with '-' or contain spaces")
    return prefix


def _value(v: Any) -> str:
    if v is None or v is True:
        return ""
    if v is False:
        return "false"
    return str(v)


@contextlib.contextmanager
def defaults_under_prefix(prefix: str, defaults: Mapping[str, Any] | None) -> Iterator[None]:
    """Apply ``defaults`` under ``prefix`` where the database has no value; remove them on exit.

    Use around the ``setFromOptions()``/``setUp()`` of the object that reads them.
    """
    from hybridsolve.stack import PETSc

    opts = PETSc.Options()
    added = []
    for key, val in (defaults or {}).items():
        key = key.lstrip("-")
        full = prefix + key
        if not opts.hasName(full):
            opts.setValue(full, _value(val))
            added.append(full)
    try:
        yield
    finally:
        for full in added:
            opts.delValue(full)


def unused_options() -> list[str]:
    """Names (with dash) of options in the database that no PETSc object has read."""
    from hybridsolve.stack import PETSc

    opts = PETSc.Options()
    left = []
    for name in opts.getAll():
        if name in _ALWAYS_USED:
            continue
        if not opts.used(name):
            left.append("-" + name)
    return sorted(left)


def check_omega(omega: Any) -> float:
    """The SOR relaxation factor as a float, or :class:`InputError` when outside (0, 2)."""
    try:
        w = float(omega)
    except (TypeError, ValueError):
        raise InputError(f"SOR relaxation factor omega={omega!r} is not a number") from None
    if not 0.0 < w < 2.0:
        raise InputError(f"SOR relaxation factor omega={w:g} is outside (0, 2): SOR diverges there")
    return w
