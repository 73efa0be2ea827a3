"""The one registry of solver methods: a name stands for a set of PETSc options.

``solve(method=...)``, :class:`~hybridsolve.solvers.petsc.KrylovSolver`, ``hybridsolve datagen
--solver`` and the CLI's ``--method`` all read this table, so a new method is one
:func:`register_method` line here (and, for a KSP or PC of our own, one class on
:class:`~hybridsolve.solvers.base.PythonKSP` / :class:`~hybridsolve.solvers.base.PythonPC`).
The options are *defaults*: the command line (``-<prefix>ksp_type ...``) still has the last word.

This module imports neither MPI nor PETSc.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping

from hybridsolve.errors import InputError

__all__ = ["Method", "register_method", "get_method", "method_names", "METHODS"]


@dataclass(frozen=True)
class Method:
    """A named solver method.

    Attributes:
        name: the registry name (``gcrodr``).
        options: PETSc options without dash (``{"ksp_type": "python", ...}``).
        description: one line for ``--help`` and ``hybridsolve methods``.
        spd: the method needs a symmetric positive definite operator (and preconditioner).
        sequence: the method carries state from one solve to the next (a recycle space): keep
            one KSP across a sequence of systems.
        pc: whether the method takes the family's/user's preconditioner (``False``: the options
            fix the PC, e.g. ``sor`` or ``direct``).
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    spd: bool = False
    sequence: bool = False
    pc: bool = True

    def petsc_options(self) -> dict[str, Any]:
        """A fresh copy of the options (callers may add to it)."""
        return dict(self.options)


#: name -> :class:`Method`, in registration order.
METHODS: dict[str, Method] = {}


def register_method(name: str, options: Mapping[str, Any], description: str, *, spd: bool = False,
                    sequence: bool = False, pc: bool = True) -> Method:
    """Add a method to the registry (a name already taken is an error)."""
    key = name.lower().replace("_", "-")
    if key in METHODS:
        raise InputError(f"method {key!r} is already registered")
    METHODS[key] = Method(key, dict(options), description, spd=spd, sequence=sequence, pc=pc)
    return METHODS[key]


def method_names() -> list[str]:
    return list(METHODS)


def get_method(name: str) -> Method:
    """The registered method ``name`` (case and ``_``/``-`` insensitive).

    Raises:
        InputError: unknown name (naming the closest known one).
    """
    key = str(name).lower().replace("_", "-")
    if key not in METHODS:
        close = difflib.get_close_matches(key, METHODS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(f"unknown method {name!r}{hint}; known: {', '.join(METHODS)} "
                         "(or any PETSc -ksp_type/-pc_type)")
    return METHODS[key]


# --- the methods --------------------------------------------------------------------------------
# Every method tests ||b - A x|| / ||b|| (the unpreconditioned norm), so rtol means the same.
_UNPREC = {"ksp_norm_type": "unpreconditioned"}

register_method("pcg", {"ksp_type": "cg", **_UNPREC}, "conjugate gradients with any PC", spd=True)
# PETSc's SOR is processor-local: on several ranks it is block Jacobi between ranks with SOR
# inside (-pc_sor_local_*), so iteration counts grow with the rank count.
register_method("sor", {"ksp_type": "richardson", "ksp_richardson_scale": 1.0, "pc_type": "sor",
                        **_UNPREC}, "stationary SOR (Richardson + PCSOR)", pc=False)
register_method("ssor-pcg", {"ksp_type": "cg", "pc_type": "sor", **_UNPREC},
                "CG preconditioned by symmetric SOR", spd=True, pc=False)
register_method("gmres", {"ksp_type": "gmres", "ksp_gmres_restart": 40, "ksp_pc_side": "right",
                          **_UNPREC}, "restarted GMRES(40), right preconditioning")
# CG with the two-level PC (hybridsolve.solvers.twolevel): a coarse space kept along a sequence
register_method("twolevel-pcg", {"ksp_type": "cg", "pc_type": "python",
                                 "pc_python_type": "hybridsolve.solvers.twolevel.TwoLevelPC",
                                 **_UNPREC},
                "CG with the two-level PC: ICC + smoothed-aggregation coarse space kept along a "
                "sequence (-pc_twolevel_*)", spd=True, pc=False)
register_method("direct", {"ksp_type": "preonly", "pc_type": "lu"},
                "sparse LU (Cholesky for SPD families in datagen)", pc=False)
# Krylov recycling across a sequence (hybridsolve.recycling): keep one KrylovSolver
register_method("gcrodr", {"ksp_type": "python",
                           "ksp_python_type": "hybridsolve.recycling.petsc.GCRODR"},
                "GCRO-DR(m, k): flexible GMRES with a recycled space (-ksp_gcrodr_m/_k)",
                sequence=True)
register_method("rcg", {"ksp_type": "python",
                        "ksp_python_type": "hybridsolve.recycling.petsc.RecyclingCG"},
                "recycling (deflated) CG (-ksp_rcg_k/_store)", spd=True, sequence=True)
# deep conjugate directions (hybridsolve.learned): the shipped 2-D network through TorchPC,
# gathered so that the directions do not depend on the rank count
register_method("dcdm", {"ksp_type": "python", "ksp_python_type": "hybridsolve.learned.petsc.DCDM",
                         "pc_type": "python", "pc_python_type": "hybridsolve.learned.petsc.TorchPC",
                         "pc_torch_model": "dcdm2d", "pc_torch_mode": "gathered"},
                "deep conjugate directions with the shipped 2-D network (TorchPC)", spd=True,
                pc=False)
# the same network as the coarse correction of an SSOR cycle in FCG keeping 30 directions: the
# configuration that beats ICC-PCG in iterations on the DCDM benchmark (results/dcdm.md)
register_method("dcdm-cycle", {"ksp_type": "fcg", "ksp_fcg_mmax": 30, "pc_type": "python",
                               "pc_python_type": "hybridsolve.learned.petsc.TorchPC",
                               "pc_torch_model": "dcdm2d", "pc_torch_mode": "gathered",
                               "pc_torch_smoother": "sor", **_UNPREC},
                "FCG(30) with the shipped 2-D grid network inside an SSOR cycle (TorchPC)",
                spd=True, pc=False)
# NPSolver (hybridsolve.learned.npsolver_petsc): the shipped mesh network as the coarse
# correction of an SSOR cycle in FCG; the mesh comes with a system of our P1 families
# (-pc_npsolver_mesh auto), any other code registers it (register_mesh)
register_method("npsolver", {"ksp_type": "fcg", "ksp_fcg_mmax": 30, "pc_type": "python",
                             "pc_python_type": "hybridsolve.learned.npsolver_petsc.NPSolverPC",
                             "pc_npsolver_model": "auto", **_UNPREC},
                "FCG with the shipped NPSolver network of the mesh's dimension (P1 meshes: "
                "npsolver2d for cutsquare, npsolver3d for cutbox)",
                spd=True, pc=False)
