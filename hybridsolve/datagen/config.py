"""What determines a dataset (:class:`DatagenConfig`) and the solver choice (from the method
registry)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybridsolve.errors import InputError


#: Solver names datagen accepts besides the registry's (hybridsolve.solvers.registry)
_ALIASES = {"cg": "pcg"}
#: Methods that take a PC but get none from datagen (PETSc's default applies, or -datagen_pc_type):
#: the paper's GMRES(40) baseline.
_OWN_PC = {"gmres"}


def solver_names() -> list[str]:
    """``auto`` and every registered method (``hybridsolve.solvers.registry``)."""
    from hybridsolve.solvers.registry import method_names

    return ["auto", *method_names()]


@dataclass
class DatagenConfig:
    """What determines a dataset (and so what a resumed run must agree on)."""

    family: str
    n: int
    count: int
    out: str
    seed: int = 0
    tol: float = 1e-8
    options: dict = field(default_factory=dict)      # family options (--opt)
    order: str = "auto"                              # hybridsolve.recycling.sorting.ORDERINGS
    solver: str = "auto"
    warm_start: bool = True
    mode: str = "data"                               # data | domain
    petsc: dict = field(default_factory=dict)        # PETSc options for the solver (no prefix),
    #                                                  e.g. {"ksp_gcrodr_m": 40, "ksp_gcrodr_k": 20}
    reuse_matrix: bool = True                        # fixed-matrix families: one operator + PC
    reuse_pattern: bool = True                       # same pattern: one Mat object, values copied

    def identity(self) -> dict:
        """The fields that define the dataset's content; a resumed run must match them."""
        return {"family": self.family, "n": self.n, "count": self.count, "seed": self.seed,
                "tol": self.tol, "options": {k: str(v) for k, v in sorted(self.options.items())},
                "hybridsolve_dataset": 1}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    def validate(self) -> None:
        from hybridsolve.recycling.sorting import ORDERINGS

        if not (isinstance(self.tol, float) and np.isfinite(self.tol)) or not 0 < self.tol < 1:
            raise InputError(f"datagen: tolerance must be in (0, 1), got {self.tol!r}")
        if self.count < 1:
            raise InputError(f"datagen: count must be at least 1, got {self.count}")
        if self.order not in ORDERINGS:
            raise InputError(f"datagen: unknown ordering {self.order!r}; known: {', '.join(ORDERINGS)}")
        if self.solver != "auto":
            from hybridsolve.solvers.registry import get_method

            try:
                get_method(_ALIASES.get(self.solver, self.solver))
            except InputError as err:
                raise InputError(f"datagen: --solver: {err}") from None
        if self.mode not in ("data", "domain"):
            raise InputError(f"datagen: mode must be data or domain, got {self.mode!r}")
        if not str(self.out).endswith((".h5", ".hdf5")):
            raise InputError(f"datagen: the output file must end in .h5 or .hdf5, got {self.out!r}")


# --- choosing the solver -------------------------------------------------------------------------
#: the two-level PC (hybridsolve.solvers.twolevel) by options
TWO_LEVEL = {"pc_type": "python", "pc_python_type": "hybridsolve.solvers.twolevel.TwoLevelPC"}


def solver_options(cfg: DatagenConfig, family) -> tuple[str, dict]:
    """The solver's name and default PETSc options for this family (command line still wins)."""
    spd = family.symmetric and family.definite
    name = cfg.solver
    if name == "auto":  # the choices benchmarks/results/skr_bar.md measured fastest
        if family.fixed_matrix and cfg.reuse_matrix:
            name = "direct"        # one factorisation, then two triangular solves per sample
        else:
            name = "pcg" if spd else "gcrodr"
    from hybridsolve.solvers.registry import get_method

    method = get_method(_ALIASES.get(name, name))
    name = method.name
    if method.spd and not spd:
        raise InputError(f"datagen: solver {name} needs an SPD family; {family.name} is not "
                         "(use gcrodr or gmres)")
    local_ilu = "icc" if spd else "ilu"
    if family.opts.get("operator") == "matfree":  # no factorisation of a python Mat: SOR
        local = {"pc_type": "sor"}
    elif cfg.mode == "domain":  # no parallel ICC/ILU in PETSc: block Jacobi with them inside
        local = {"pc_type": "bjacobi", "sub_pc_type": local_ilu}
    else:
        local = {"pc_type": local_ilu}
    opts: dict[str, Any] = method.petsc_options()
    if name == "pcg" and _shares_pattern(cfg, family):
        # one Mat object along the chain (values-only assembly): the two-level PC keeps its
        # coarse space from the first system and refreshes only numbers (W^T A W, Cholesky,
        # ICC); with --solver auto, GAMG (interpolation kept) and ICC are tried against it
        opts.update(TWO_LEVEL)
    elif name == "direct":
        opts["pc_type"] = "cholesky" if spd else "lu"
        if cfg.mode == "domain":
            opts["pc_factor_mat_solver_type"] = "mumps"
    elif method.pc and name not in _OWN_PC:   # the method takes datagen's PC choice
        opts.update(local)
    if name != "direct":
        opts["ksp_norm_type"] = "unpreconditioned"
    opts.update(cfg.petsc)
    return name, opts


def _is_direct(opts: dict) -> bool:
    """Whether the chain's KSP is ``preonly`` (the command line's -datagen_ksp_type wins)."""
    from hybridsolve.stack import PETSc

    db = PETSc.Options()
    kind = db.getString("datagen_ksp_type") if db.hasName("datagen_ksp_type") else opts.get("ksp_type")
    return kind == "preonly"


def _shares_pattern(cfg: DatagenConfig, family) -> bool:
    """Systems can be copied into one assembled Mat object (same sparsity pattern, AIJ)."""
    return (cfg.reuse_pattern and family.fixed_pattern and not family.fixed_matrix
            and family.opts.get("operator", "aij") == "aij")
