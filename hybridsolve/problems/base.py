"""Problem families: reproducible sequences of related linear systems, distributed over MPI."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

import numpy as np

from hybridsolve.errors import InputError

__all__ = ["LinearSystem", "ProblemFamily", "FamilyOption", "register", "FAMILIES", "get_family"]


@dataclass
class LinearSystem:
    """One system ``A x = b`` of a family, distributed over the communicator it was built on.

    Attributes:
        A, b: the PETSc operator and right-hand side.
        params: the parameter array that defines the system (identical on every rank): the
            array a sort compares.
        meta: family, index, seed, sizes, symmetry and other facts about the system.
        x0: a recommended initial guess (the previous time step for ``heat``), or ``None``.
        canonical: for each locally owned row, its index in the family's canonical, rank-
            independent numbering (natural grid order; original mesh vertex order for FEM).
        local_coordinates: coordinates of the locally owned unknowns, shape ``(n_local, dim)``.
        default_options: the PETSc options the family recommends (e.g. CG+GAMG when SPD).
    """

    A: Any
    b: Any
    params: np.ndarray
    meta: dict
    canonical: np.ndarray
    local_coordinates: np.ndarray
    x0: Any = None
    default_options: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict, repr=False)

    @property
    def comm(self):
        return self.b.getComm().tompi4py()

    @property
    def size(self) -> int:
        return int(self.b.getSize())

    def gather(self, vec) -> np.ndarray:
        """The global vector as a numpy array in canonical order, on every rank."""
        from hybridsolve.la.petsc import gather_canonical

        return gather_canonical(vec, self.canonical, self.size)

    def coordinates(self) -> np.ndarray:
        """Coordinates of all unknowns in canonical order, shape ``(n, dim)``, on every rank."""
        from hybridsolve.la.petsc import gather_rows_canonical

        return gather_rows_canonical(self.comm, self.local_coordinates, self.canonical, self.size)

    def to_scipy(self):
        """``(A, b)`` as a SciPy CSR matrix and numpy array in canonical order, on every rank."""
        from hybridsolve.la.petsc import gather_csr_canonical

        return gather_csr_canonical(self.A, self.canonical), self.gather(self.b)

    def destroy(self) -> None:
        for obj in (self.A, self.b, self.x0):
            if obj is not None:
                obj.destroy()


@dataclass(frozen=True)
class FamilyOption:
    """A family-specific option: default, type and a one-line description."""

    default: Any
    type: Callable[[str], Any]
    doc: str
    choices: tuple | None = None


#: The ``operator`` option of the structured-grid families.
OPERATOR_OPTION = FamilyOption("aij", str, "aij (assembled) or matfree (Numba kernels, python Mat)",
                               ("aij", "matfree"))

#: PETSc defaults for a matrix-free SPD operator (no GAMG without an assembled matrix).
MATFREE_DEFAULTS = {"ksp_type": "cg", "pc_type": "sor", "ksp_norm_type": "unpreconditioned"}

FAMILIES: dict[str, type["ProblemFamily"]] = {}


def register(cls: type["ProblemFamily"]) -> type["ProblemFamily"]:
    FAMILIES[cls.name] = cls
    return cls


class ProblemFamily(abc.ABC):
    """A reproducible sequence of ``count`` related linear systems of size parameter ``n``.

    System ``i`` depends only on ``(seed, i)`` and the family's options, never on the number of
    ranks or on ``count``. Subclasses define :meth:`sample_params` and :meth:`build`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    size_doc: ClassVar[str]
    symmetric: ClassVar[bool] = True
    definite: ClassVar[bool] = True
    sequential: ClassVar[bool] = False
    #: the scalar that describes a system for contextual tuning (``meta:<key>`` or
    #: ``param:<i>``) and the range it falls in, when the family has a natural one
    tuning_context: ClassVar[str | None] = None
    tuning_context_range: ClassVar[tuple[float, float] | None] = None
    #: the matrix is the same for every system (only the right-hand side changes)
    fixed_matrix: ClassVar[bool] = False
    #: every system has the same size and unknown layout (False: a new mesh per system)
    fixed_size: ClassVar[bool] = True

    @property
    def fixed_pattern(self) -> bool:
        """Whether every system's matrix has the same sparsity pattern (values may differ)."""
        return True
    min_n: ClassVar[int] = 2
    options: ClassVar[dict[str, FamilyOption]] = {}

    def __init__(self, n: int, count: int = 1, seed: int = 0, **opts: Any) -> None:
        for label, val in (("n", n), ("count", count), ("seed", seed)):
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)):
                raise InputError(f"{self.name}: {label} must be an integer, got {val!r}")
        if n < self.min_n:
            raise InputError(f"{self.name}: size n must be at least {self.min_n}, got {n}")
        if count < 0:
            raise InputError(f"{self.name}: count must be non-negative, got {count}")
        if seed < 0:
            raise InputError(f"{self.name}: seed must be non-negative, got {seed}")
        unknown = set(opts) - set(self.options)
        if unknown:
            raise InputError(
                f"{self.name}: unknown option(s) {sorted(unknown)}; "
                f"known: {sorted(self.options) or 'none'}"
            )
        self.n, self.count, self.seed = int(n), int(count), int(seed)
        self.opts = {k: o.default for k, o in self.options.items()}
        for k, v in opts.items():
            o = self.options[k]
            try:
                v = o.type(v)
            except (TypeError, ValueError) as err:
                raise InputError(f"{self.name}: option {k}={v!r}: {err}") from None
            if o.choices is not None and v not in o.choices:
                raise InputError(f"{self.name}: option {k}={v!r} not one of {list(o.choices)}")
            self.opts[k] = v
        self.validate_options()
        self._cache: dict = {}

    # -- to be provided by families ------------------------------------------------------
    def validate_options(self) -> None:
        """Check option values together; raise :class:`InputError` when they make no sense."""

    @abc.abstractmethod
    def param_shape(self) -> tuple[int, ...]:
        """Shape of one system's parameter array."""

    @abc.abstractmethod
    def sample_params(self, rng: np.random.Generator, index: int) -> np.ndarray:
        """Draw system ``index``'s parameter array."""

    @abc.abstractmethod
    def build(self, params: np.ndarray, comm, index: int | None, previous=None,
              into=None) -> LinearSystem:
        """Assemble the system for ``params`` on ``comm``."""

    def build_rhs(self, params: np.ndarray, comm, index: int | None) -> LinearSystem:
        """The right-hand side only (fixed-matrix families)."""
        raise NotImplementedError

    @property
    def default_options(self) -> dict:
        if self.symmetric and self.definite:
            # unpreconditioned norm: the tolerance is on ||b - A x|| / ||b||, as users read it
            return {"ksp_type": "cg", "pc_type": "gamg", "ksp_norm_type": "unpreconditioned"}
        return {"ksp_type": "gmres"}

    # -- shared --------------------------------------------------------------------------
    def rng(self, index: int) -> np.random.Generator:
        """The generator of system ``index``: depends on (seed, index) only."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, int(index)]))

    def params(self, index: int) -> np.ndarray:
        """System ``index``'s parameter array (identical on every rank)."""
        if not 0 <= index < self.count:
            raise InputError(f"{self.name}: system index {index} outside 0..{self.count - 1}")
        return self.sample_params(self.rng(index), index)

    def all_params(self, comm=None) -> np.ndarray:
        """All parameter arrays, stacked: shape ``(count, *param_shape)``. With ``comm``, each
        rank draws a contiguous share and the shares are gathered (the same array on every
        rank: each array depends on (seed, index) only)."""
        shape = (self.count, *self.param_shape())
        size, rank = (1, 0) if comm is None else (comm.size, comm.rank)
        bounds = np.linspace(0, self.count, size + 1).round().astype(int)
        out = np.empty(shape)
        for i in range(bounds[rank], bounds[rank + 1]):
            out[i] = self.params(i)
        if size > 1:
            per = int(np.prod(shape[1:]))
            counts = np.diff(bounds) * per
            from hybridsolve.stack import MPI

            mine = out[bounds[rank]: bounds[rank + 1]].reshape(-1).copy()   # not aliased
            comm.Allgatherv(mine, [out.reshape(-1), counts, bounds[:-1] * per, MPI.DOUBLE])
        return out

    def check_params(self, params: np.ndarray) -> np.ndarray:
        params = np.asarray(params, dtype=float)
        if params.shape != tuple(self.param_shape()):
            raise InputError(
                f"{self.name}: parameter array has shape {params.shape}, "
                f"expected {tuple(self.param_shape())} for n={self.n}"
            )
        if not np.all(np.isfinite(params)):
            bad = int(np.count_nonzero(~np.isfinite(params)))
            raise InputError(f"{self.name}: parameter array holds {bad} NaN/Inf value(s)")
        return params

    def system(self, index: int, comm=None, previous=None) -> LinearSystem:
        """Assemble system ``index`` on ``comm`` (default ``COMM_WORLD``).

        ``previous`` is the solution of system ``index - 1``; sequential families (``heat``)
        need it for ``index > 0``, the others ignore it.
        """
        return self.system_from_params(self.params(index), comm, index=index, previous=previous)

    def system_from_params(self, params: np.ndarray, comm=None, *, index: int | None = None,
                           previous=None, matrix: bool = True, into=None) -> LinearSystem:
        """Assemble the system defined by a given parameter array (validated first).

        ``matrix=False`` (fixed-matrix families only) skips the matrix: ``A`` is ``None`` and
        the caller reuses the one it has. ``into``: a matrix of an earlier system of this family
        (same communicator); where the new matrix has its sparsity pattern (assembled grid
        families, DOLFINx families) only its values are rewritten and the system's ``A`` *is*
        ``into``; otherwise ``A`` is a new matrix.
        """
        from hybridsolve.stack import MPI

        comm = comm or MPI.COMM_WORLD
        params = self.check_params(params)
        if not matrix and not self.fixed_matrix:
            raise InputError(f"{self.name}: only fixed-matrix families can skip the matrix")
        sys_ = self.build(params, comm, index, previous, into) if matrix else \
            self.build_rhs(params, comm, index)
        sys_.meta.update(family=self.name, index=index, seed=self.seed, n=self.n,
                         count=self.count, size=sys_.size, symmetric=self.symmetric,
                         definite=self.definite, options=dict(self.opts))
        if not sys_.default_options:
            sys_.default_options = dict(self.default_options)
        return sys_

    def systems(self, comm=None) -> Iterator[LinearSystem]:
        """Iterate over the systems (not for sequential families: they need the solutions)."""
        if self.sequential:
            raise InputError(f"{self.name} is sequential: call system(i, comm, previous=x)")
        for i in range(self.count):
            yield self.system(i, comm)

    def solve_each(self, comm, solve: Callable[[LinearSystem], Any], params=None, start: int = 0
                   ) -> Iterator[tuple[int, LinearSystem, Any]]:
        """Solve every system in order with ``solve(system) -> SolveResult``; yields ``(i,
        system, result)``. Sequential families get the previous solution (and keep it as the
        next ``previous``); otherwise each solution is freed once the caller has seen it. The
        system is destroyed after the caller resumes."""
        previous = None
        try:
            for i in range(start, self.count):
                if params is not None:
                    system = self.system_from_params(params[i], comm, index=i, previous=previous)
                else:
                    system = self.system(i, comm, previous=previous)
                res = solve(system)
                yield i, system, res
                if previous is not None:
                    previous.destroy()
                previous = res.x if self.sequential else None
                if not self.sequential:
                    res.x.destroy()
                    res.x = None
                system.destroy()
        finally:
            if previous is not None:
                previous.destroy()

    def describe(self) -> dict:
        return {"name": self.name, "summary": self.summary, "n": self.size_doc,
                "symmetric": self.symmetric, "definite": self.definite,
                "sequential": self.sequential, "fixed_matrix": self.fixed_matrix,
                "options": {k: (o.default, o.doc) for k, o in self.options.items()}}

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, count={self.count}, seed={self.seed}, {self.opts})"


def get_family(name: str, n: int, count: int = 1, seed: int = 0, **opts: Any) -> ProblemFamily:
    """Create a family by its CLI name (``darcy``, ``poisson``, ...)."""
    import hybridsolve.problems  # noqa: F401  (registers the families)

    if name not in FAMILIES:
        raise InputError(f"unknown problem family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name](n, count, seed, **opts)
