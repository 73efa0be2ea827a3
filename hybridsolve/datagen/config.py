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
        """The fields that define the dataset's content; a resumed run must match them.

        The family options are normalised (:func:`normalise_options`): values parsed by the
        option's type, those equal to the family's default left out, so ``--opt alpha=2.5``
        (darcy's default) or ``alpha=2.50`` is the configuration without it. Leaving defaults
        out (rather than filling them in) keeps the digest of every configuration written
        before normalisation existed whose options were written canonically."""
        return {"family": self.family, "n": self.n, "count": self.count, "seed": self.seed,
                "tol": self.tol, "options": normalise_options(self.family, self.options)[0],
                "hybridsolve_dataset": 1}

    def digest(self) -> str:
        return _digest(self.identity())

    def digests(self) -> set[str]:
        """The digests a parts folder or dataset of this configuration may carry: this one and
        the one of the identity before normalisation (options as given, as text), so a run
        started before normalisation existed (``--opt alpha=3``, now ``3.0``) still resumes."""
        legacy = {**self.identity(),
                  "options": {k: str(v) for k, v in sorted(self.options.items())}}
        return {self.digest(), _digest(legacy)}

    def effective_options(self) -> dict:
        """Every family option with its value (defaults filled in, values parsed)."""
        return normalise_options(self.family, self.options)[1]

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


def _digest(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def normalise_options(family: str, options: dict) -> tuple[dict, dict]:
    """A family's options in canonical form: ``(given, effective)``.

    ``given``: the options whose parsed value differs from the family's default, as text of the
    parsed value (``"3.0"`` for ``alpha=3``), sorted; ``effective``: every option of the family
    with its parsed value (defaults filled in). An unknown family, an unknown option or a value
    that does not parse is kept as given (as text): :func:`hybridsolve.problems.get_family`
    refuses it with a clear message before any work."""
    from hybridsolve.problems import FAMILIES

    known = getattr(FAMILIES.get(family), "options", {})
    given: dict[str, str] = {}
    effective: dict[str, Any] = {k: o.default for k, o in known.items()}
    for key, val in sorted(options.items()):
        opt = known.get(key)
        if opt is None:
            given[key] = str(val)
            continue
        try:
            parsed = opt.type(val) if val is not None else None
        except (TypeError, ValueError):
            given[key] = str(val)
            continue
        effective[key] = parsed
        if parsed != opt.default:
            given[key] = str(parsed)
    return given, effective


def identity_difference(old: dict | None, new: dict) -> str:
    """What differs between two identities, in words (``n: 8 there, 12 here; option alpha: 3.0
    there, 2.5 here``); options compared normalised, defaults filled in."""
    if not isinstance(old, dict):
        return "its configuration is unreadable"
    out = []
    for key in sorted(set(old) | set(new)):
        if key == "options":
            continue
        if old.get(key) != new.get(key):
            out.append(f"{key}: {old.get(key, 'unset')} there, {new.get(key, 'unset')} here")

    def full(opts) -> dict:  # unknown options as text, known ones parsed, defaults filled in
        given, effective = normalise_options(new.get("family"), opts or {})
        return {**given, **effective}

    a, b = full(old.get("options")), full(new.get("options"))
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            out.append(f"option {key}: {a.get(key, 'unset')} there, {b.get(key, 'unset')} here")
    return "; ".join(out) or "same settings, other digest (written by another hybridsolve?)"


# --- choosing the solver -------------------------------------------------------------------------
#: what finishes a sample the chain's solver missed (provenance ``fallback_solver``)
FALLBACK = ("GMRES(30) preconditioned by a sparse direct LU (MUMPS on several ranks): the LU's "
            "solution refined until the true residual meets tol; matrix-free operators: "
            "unpreconditioned GMRES(200)")


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
