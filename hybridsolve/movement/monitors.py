"""Monitor functions m(x) > 0: cells shrink where m is large (equidistribution of m |K|).

A monitor is evaluated at the vertices of the *moved* mesh every iteration of a mover::

    values = monitor.evaluate(V, x)   # V: P1 space on the moved mesh, x: (ndofs, d) coordinates

Monitors add (``m1 + m2``) and scale (``2 * m``); a plain callable ``f(x)`` with ``x`` of shape
``(d, n)`` (DOLFINx's interpolation convention) or a number is turned into one by
:func:`as_monitor`. Field-based monitors (:class:`GradientMonitor`, :class:`HessianMonitor`)
recover the gradient or Hessian of a DOLFINx ``Function`` once, freeze the indicator on a copy of
its mesh, and interpolate it onto the moved mesh (non-matching interpolation, MPI-parallel).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from hybridsolve.errors import InputError
from hybridsolve.stack import MPI, PETSc  # noqa: F401  (import order)

import dolfinx  # noqa: E402
import dolfinx.fem  # noqa: E402
import ufl  # noqa: E402

__all__ = ["Monitor", "ConstantMonitor", "BallMonitor", "RingMonitor", "CallableMonitor",
           "GradientMonitor", "HessianMonitor", "as_monitor", "recover_gradient",
           "recover_hessian", "check_monitor_values", "lumped_mass"]


def check_monitor_values(values: Any, n: int, comm: Any, name: str = "monitor") -> np.ndarray:
    """Values must be ``n`` finite numbers > 0 on every rank; otherwise :class:`InputError` on all.

    ``values`` may be an exception the monitor raised on this rank: it becomes the message, so a
    monitor failing on one rank ends the move on every rank instead of leaving the others waiting.
    """
    msg = ""
    if isinstance(values, BaseException):
        msg = f"{name} failed on rank {comm.rank}: {type(values).__name__}: {values}"
        v = np.zeros(0)
    else:
        try:
            v = np.asarray(values, dtype=np.float64).ravel()
        except (TypeError, ValueError) as err:
            msg, v = f"{name} returned something that is not numbers: {err}", np.zeros(0)
    if v.size == 1 and n != 1:
        v = np.full(n, float(v[0]))
    if msg:
        pass
    elif v.size != n:
        msg = f"{name} returned {v.size} values for {n} vertices"
    elif not np.all(np.isfinite(v)):
        msg = f"{name} returned NaN or Inf at {int(np.count_nonzero(~np.isfinite(v)))} vertices"
    elif v.size and v.min() <= 0.0:
        msg = f"{name} must be > 0 everywhere; it returned {v.min():.3g}"
    msgs = [m for m in comm.allgather(msg) if m]
    if msgs:
        raise InputError(msgs[0])
    return v


class Monitor:
    """Base class: override :meth:`evaluate` (values at the P1 dofs of the moved mesh)."""

    name = "monitor"

    def evaluate(self, V: Any, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def __add__(self, other: Any) -> "Monitor":
        return _Sum(self, as_monitor(other))

    __radd__ = __add__

    def __mul__(self, c: float) -> "Monitor":
        return _Scaled(self, float(c))

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return self.name


class _Sum(Monitor):
    def __init__(self, a: Monitor, b: Monitor) -> None:
        self.a, self.b = a, b
        self.name = f"({a.name} + {b.name})"

    def evaluate(self, V, x):
        return np.asarray(self.a.evaluate(V, x), float) + np.asarray(self.b.evaluate(V, x), float)


class _Scaled(Monitor):
    def __init__(self, a: Monitor, c: float) -> None:
        self.a, self.c = a, c
        self.name = f"{c:g}*{a.name}"

    def evaluate(self, V, x):
        return self.c * np.asarray(self.a.evaluate(V, x), float)


class ConstantMonitor(Monitor):
    """m = c: the mesh does not move (its cells are already equidistributed for a uniform m)."""

    def __init__(self, value: float = 1.0) -> None:
        self.value = float(value)
        self.name = f"constant({value:g})"

    def evaluate(self, V, x):
        return np.full(x.shape[0], self.value)


class RingMonitor(Monitor):
    """m = 1 + alpha / cosh^2(beta (|x - c|^2 - r^2)): refines a ring of radius r (movement's demo)."""

    kind = "ring"

    def __init__(self, alpha: float = 20.0, beta: float = 200.0, radius: float = 0.4,
                 center: Any = (0.5, 0.5)) -> None:
        self.alpha, self.beta, self.radius = float(alpha), float(beta), float(radius)
        self.center = np.asarray(center, dtype=float)
        self.name = f"{self.kind}(alpha={alpha:g}, beta={beta:g}, r={radius:g})"

    def _distance(self, r2: np.ndarray) -> np.ndarray:
        return r2 - self.radius**2

    def evaluate(self, V, x):
        c = self.center[: x.shape[1]]
        r2 = ((x - c) ** 2).sum(axis=1)
        arg = np.clip(self.beta * self._distance(r2), -300, 300)
        return 1.0 + self.alpha / np.cosh(arg) ** 2


class BallMonitor(RingMonitor):
    """The ring's profile outside radius r, 1 + alpha inside it: a refined disc."""

    kind = "ball"

    def __init__(self, alpha: float = 10.0, beta: float = 200.0, radius: float = 0.2,
                 center: Any = (0.5, 0.5)) -> None:
        super().__init__(alpha, beta, radius, center)

    def _distance(self, r2: np.ndarray) -> np.ndarray:
        return np.maximum(r2 - self.radius**2, 0.0)


class CallableMonitor(Monitor):
    """Any user function ``f(x)`` with ``x`` of shape (d, n), returning n values > 0."""

    def __init__(self, fn: Callable, name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "callable")

    def evaluate(self, V, x):
        return self.fn(np.ascontiguousarray(x.T))


def as_monitor(obj: Any) -> Monitor:
    """A :class:`Monitor` from a monitor, a number (constant) or a callable ``f(x)``."""
    if isinstance(obj, Monitor):
        return obj
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return ConstantMonitor(float(obj))
    if callable(obj):
        return CallableMonitor(obj)
    raise InputError(f"a monitor must be a Monitor, a number or a callable f(x), not {type(obj).__name__}")


# -- recovery ----------------------------------------------------------------------------------

def _lumped_project(form_vec: Any, mass: np.ndarray, bs: int) -> np.ndarray:
    form_vec.scatter_reverse(dolfinx.la.InsertMode.add)
    arr = form_vec.array.reshape(-1, bs)
    n = mass.shape[0]
    arr[:n] /= mass[:, None]
    form_vec.scatter_forward()
    return arr


def lumped_mass(V: Any) -> np.ndarray:
    """Row sums of the P1 mass matrix (owned and ghost entries), the lumped mass."""
    v = ufl.TestFunction(V)
    b = dolfinx.fem.assemble_vector(dolfinx.fem.form(v * ufl.dx))
    b.scatter_reverse(dolfinx.la.InsertMode.add)
    b.scatter_forward()
    return b.array.copy()


def recover_gradient(u: Any, _ml: np.ndarray | None = None) -> Any:
    """P1 vector recovery of grad(u) by a mass-lumped L2 projection (a Clement-type average)."""
    mesh = u.function_space.mesh
    d = mesh.geometry.dim
    ml = lumped_mass(dolfinx.fem.functionspace(mesh, ("Lagrange", 1))) if _ml is None else _ml
    W = dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (d,)))
    w = ufl.TestFunction(W)
    b = dolfinx.fem.assemble_vector(dolfinx.fem.form(ufl.inner(w, ufl.grad(u)) * ufl.dx))
    g = dolfinx.fem.Function(W, name="grad")
    g.x.array[:] = _lumped_project(b, ml, d).ravel()
    return g


def recover_hessian(u: Any) -> Any:
    """P1 tensor recovery of the Hessian of u: the recovered gradient, differentiated and
    projected again (double L2 projection, mass-lumped)."""
    mesh = u.function_space.mesh
    d = mesh.geometry.dim
    ml = lumped_mass(dolfinx.fem.functionspace(mesh, ("Lagrange", 1)))
    g = recover_gradient(u, ml)
    T = dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (d, d)))
    t = ufl.TestFunction(T)
    b = dolfinx.fem.assemble_vector(dolfinx.fem.form(ufl.inner(t, ufl.grad(g)) * ufl.dx))
    H = dolfinx.fem.Function(T, name="hessian")
    arr = _lumped_project(b, ml, d * d)
    arr = 0.5 * (arr.reshape(-1, d, d) + arr.reshape(-1, d, d).transpose(0, 2, 1))
    H.x.array[:] = arr.ravel()
    return H


class _FieldMonitor(Monitor):
    """m = 1 + alpha * s / max(s) for an indicator s frozen on a copy of the field's mesh."""

    def __init__(self, indicator: Any, alpha: float) -> None:
        from hybridsolve.movement.geometry import Snapshot

        self.alpha = float(alpha)
        comm = indicator.function_space.mesh.comm
        n = indicator.function_space.dofmap.index_map.size_local
        smax = comm.allreduce(float(np.max(indicator.x.array[:n], initial=0.0)), op=MPI.MAX)
        self.smax = smax if smax > 0 else 1.0
        self._snap = Snapshot([indicator])
        self._cache: dict = {}

    def evaluate(self, V, x):
        s = self._snap.evaluate_p1(0, x, V)  # local point location (+ the few across ranks)
        if s is None:  # a vertex outside every part (round-off at the boundary): DOLFINx's way
            key = id(V)
            if key not in self._cache:
                self._cache = {key: dolfinx.fem.Function(V)}
            f = self._cache[key]
            self._snap.transfer([f])
            s = f.x.array
        return 1.0 + self.alpha * np.maximum(s, 0.0) / self.smax


def _to_p1(expr: Any, V: Any) -> Any:
    f = dolfinx.fem.Function(V)
    f.interpolate(dolfinx.fem.Expression(expr, V.element.interpolation_points))
    return f


class GradientMonitor(_FieldMonitor):
    """m = 1 + alpha |grad u|^2 / max |grad u|^2, with grad u recovered in P1 from ``u``."""

    def __init__(self, u: Any, alpha: float = 10.0) -> None:
        g = recover_gradient(u)
        V = dolfinx.fem.functionspace(u.function_space.mesh, ("Lagrange", 1))
        super().__init__(_to_p1(ufl.inner(g, g), V), alpha)
        self.name = f"gradient(alpha={alpha:g})"


class HessianMonitor(_FieldMonitor):
    """m = 1 + beta s / max s with s = |H|_F (``norm="frobenius"``, movement's Helmholtz demo)
    or s = H:H (``norm="squared"``); H recovered in P1 from ``u``."""

    def __init__(self, u: Any, beta: float = 5.0, norm: str = "frobenius") -> None:
        if norm not in ("frobenius", "squared"):
            raise InputError(f"HessianMonitor norm must be 'frobenius' or 'squared', not {norm!r}")
        H = recover_hessian(u)
        V = dolfinx.fem.functionspace(u.function_space.mesh, ("Lagrange", 1))
        s = ufl.inner(H, H)
        super().__init__(_to_p1(ufl.sqrt(s) if norm == "frobenius" else s, V), beta)
        self.name = f"hessian(beta={beta:g}, {norm})"
