"""Structured-grid families: Poisson with obstacles (2-D/3-D) and Crank–Nicolson heat stepping."""

from __future__ import annotations

import numpy as np

from hybridsolve.errors import InputError
from hybridsolve.problems.base import (MATFREE_DEFAULTS, OPERATOR_OPTION, FamilyOption,
                                       LinearSystem, ProblemFamily, register)
from hybridsolve.problems.fields import fourier_field, random_obstacles


@register
class GridPoisson(ProblemFamily):
    """``-Laplace(u) = f`` on an ``n^dim`` grid (5-point in 2-D, 7-point in 3-D), ``u = 0`` outside.

    Optional interior obstacles: solid cells are decoupled identity rows with ``x = 0``, and
    their walls carry no flux. The source is a smooth random sine series, zero in the solids.
    Parameter array ``(2, n, ..., n)``: the source and the fluid mask (1 fluid, 0 solid).
    The problems the learned solvers (DCDM) train and run on.
    """

    name = "grid"
    summary = "structured-grid Poisson, 5/7-point stencil, optional random solid obstacles"
    size_doc = "unknowns per side: n^dim unknowns"
    options = {
        "dim": FamilyOption(2, int, "2 or 3", (2, 3)),
        "obstacles": FamilyOption(0, int, "number of random solid boxes"),
        "modes": FamilyOption(4, int, "sine modes per direction in the source"),
        "operator": OPERATOR_OPTION,
    }

    def validate_options(self) -> None:
        if self.opts["obstacles"] < 0 or self.opts["modes"] < 1:
            raise InputError("grid: need obstacles >= 0 and modes >= 1")

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n,) * self.opts["dim"]

    @property
    def fixed_pattern(self) -> bool:
        return self.opts["obstacles"] == 0  # obstacles remove couplings: patterns differ

    def param_shape(self):
        return (2, *self.shape)

    def sample_params(self, rng, index):
        mask = random_obstacles(rng, self.shape, self.opts["obstacles"])
        src = fourier_field(rng, self.shape, self.opts["modes"]) * mask
        return np.stack([src, mask.astype(float)])

    def check_params(self, params):
        params = super().check_params(params)
        if not np.all((params[1] == 0) | (params[1] == 1)):
            raise InputError("grid: the mask (params[1]) must hold only 0 (solid) and 1 (fluid)")
        return params

    def build(self, params, comm, index, previous=None, into=None) -> LinearSystem:
        from hybridsolve.problems.petsc import grid_system

        mask = params[1].astype(bool)
        matfree = self.opts["operator"] == "matfree"
        A, b, canon, coords = grid_system(comm, self.shape, params[0] * mask, mask=mask,
                                          matfree=matfree, into=into)
        return LinearSystem(A=A, b=b, params=params,
                            meta={"discretization": f"{2 * self.opts['dim'] + 1}-point grid",
                                  "solid_cells": int(np.count_nonzero(~mask)),
                                  "operator": self.opts["operator"]},
                            canonical=canon, local_coordinates=coords,
                            default_options=dict(MATFREE_DEFAULTS) if matfree else {})


def heat_kappa(t: float) -> float:
    """The diffusion coefficient of the bandit-SOR heat experiment: ``max(0.1 s, -10 s)``, ``s = sin 2 pi t``."""
    s = np.sin(2 * np.pi * t)
    return float(max(0.1 * s, -10.0 * s))


def bump(X: np.ndarray, Y: np.ndarray, cx: float, cy: float, radius: float) -> np.ndarray:
    """The smooth compactly supported bump ``exp(1 - 1 / (1 - r^2))``, ``r = |x - c| / radius``."""
    r2 = np.minimum(((X - cx) ** 2 + (Y - cy) ** 2) / radius ** 2, 1.0)
    with np.errstate(divide="ignore", over="ignore"):
        return np.where(r2 < 1.0, np.exp(1.0 - 1.0 / np.maximum(1.0 - r2, 1e-300)), 0.0)


@register
class Heat(ProblemFamily):
    """2-D heat equation ``u_t = kappa(t) Laplace(u) + f(x, t)``, Crank–Nicolson, one system per step.

    The setting of Khodak et al.'s bandit-SOR heat experiment (ICLR 2024): 5-point Laplacian
    ``L`` on ``n^2`` interior points of the unit square (``nx = n + 1`` intervals), ``u = 0`` on
    the boundary; step ``i`` solves ``(I + dt/2 k L) u_{i+1} = (I - dt/2 k L) u_i + dt f`` with
    ``k = kappa`` and ``f`` at the half step ``t_i + dt/2``, ``kappa(t) = max(0.1 sin 2 pi t,
    -10 sin 2 pi t)``, ``f`` a bump of radius ``width`` and height ``amplitude`` circling the
    centre at radius 1/4, ``revolutions`` times per unit time; the initial state a bump of radius
    1/4 in the centre (or, ``initial=random``, a smooth random field from the seed). The seed also
    sets the forcing's phase unless ``phase`` is given (``phase=0`` is the paper's).
    Sequential: system ``i > 0`` needs the solution of system ``i - 1`` (``previous``), which is
    also its recommended initial guess (warm start). Parameter array ``[t_{i+1}, kappa]``.
    """

    name = "heat"
    summary = "2-D heat equation, Crank-Nicolson, time-varying diffusion; sequential, warm-started"
    size_doc = "interior points per side: n^2 unknowns"
    sequential = True
    tuning_context = "meta:kappa"         # the diffusion coefficient of the step
    tuning_context_range = (0.0, 10.0)    # kappa's range
    options = {
        "dt": FamilyOption(1e-3, float, "time step"),
        "amplitude": FamilyOption(32.0, float, "forcing amplitude"),
        "width": FamilyOption(0.125, float, "forcing bump radius"),
        "revolutions": FamilyOption(8.0, float, "forcing revolutions per unit time"),
        "phase": FamilyOption(None, float, "forcing phase in radians (default: from the seed)"),
        "initial": FamilyOption("bump", str, "initial state: bump or random", ("bump", "random")),
        "operator": OPERATOR_OPTION,
    }

    def validate_options(self) -> None:
        if not self.opts["dt"] > 0 or not self.opts["width"] > 0:
            raise InputError("heat: need dt > 0 and width > 0")

    @property
    def shape(self):
        return (self.n, self.n)

    def param_shape(self):
        return (2,)

    def sample_params(self, rng, index):
        t = (index + 1) * self.opts["dt"]
        return np.array([t, heat_kappa(t - 0.5 * self.opts["dt"])])

    def phase(self) -> float:
        if self.opts["phase"] is not None:
            return float(self.opts["phase"])
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 2**32 - 1, 2**32 - 1]))
        return float(rng.uniform(0, 2 * np.pi))

    def _grid(self):
        x = np.arange(1, self.n + 1) / (self.n + 1)
        return np.meshgrid(x, x, indexing="ij")

    def initial_state(self) -> np.ndarray:
        if self.opts["initial"] == "bump":
            X, Y = self._grid()
            return bump(X, Y, 0.5, 0.5, 0.25)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 2**32 - 1, 2**32 - 2]))
        return fourier_field(rng, self.shape, 3)

    def forcing(self, t: float) -> np.ndarray:
        X, Y = self._grid()
        ph = 2 * np.pi * self.opts["revolutions"] * t + self.phase()
        cx, cy = 0.5 + 0.25 * np.cos(ph), 0.5 + 0.25 * np.sin(ph)
        return self.opts["amplitude"] * bump(X, Y, cx, cy, self.opts["width"])

    def build(self, params, comm, index, previous=None, into=None) -> LinearSystem:
        from hybridsolve.la.petsc import ownership_range, vec_from_local
        from hybridsolve.problems.petsc import grid_system

        dt = self.opts["dt"]
        t_next, kappa = params
        t_prev = t_next - dt
        N = self.n * self.n
        if self.opts["operator"] == "matfree":
            from hybridsolve.operators.petsc import slab_range

            p0, p1 = slab_range(comm, self.n)
            r0, r1 = p0 * self.n, p1 * self.n
        else:
            r0, r1 = ownership_range(comm, N)
        if previous is None:
            if index not in (0, None):
                raise InputError(f"heat is sequential: system {index} needs previous=<solution of "
                                 f"system {index - 1}>")
            previous = vec_from_local(comm, N, self.initial_state().reshape(-1)[r0:r1])
            own_prev = True
        else:
            if previous.getSize() != N:
                raise InputError(f"heat: previous solution has size {previous.getSize()}, expected {N}")
            own_prev = False
        f = self.forcing(t_prev + 0.5 * dt)
        from hybridsolve.problems.grid import face_coefficients

        faces = face_coefficients(self.shape)
        matfree = self.opts["operator"] == "matfree"
        zero = np.zeros(self.shape)
        # L (the Laplacian) for the right-hand side; A = I + dt/2 k L for the system
        L, _, canon, coords = grid_system(comm, self.shape, zero, faces=faces, matfree=matfree)
        if matfree:
            c = 0.5 * dt * kappa
            A, _, _, _ = grid_system(comm, self.shape, zero, faces=[c * w for w in faces],
                                     shift=1.0, matfree=True)
        else:
            A = L.copy()
            A.scale(0.5 * dt * kappa)
            A.shift(1.0)
        if previous.getOwnershipRange() != A.getOwnershipRangeColumn():
            raise InputError("heat: previous solution is not laid out like this system "
                             "(built with another operator option or communicator?)")
        b = previous.duplicate()
        L.mult(previous, b)                          # b = L u
        b.aypx(-0.5 * dt * kappa, previous)         # b = u - dt/2 k L u
        r0, r1 = b.getOwnershipRange()
        b.getArray()[:] += dt * f.reshape(-1)[r0:r1]
        x0 = previous.copy()
        L.destroy()
        if own_prev:
            previous.destroy()
        return LinearSystem(A=A, b=b, params=params, x0=x0,
                            meta={"discretization": "5-point grid, Crank-Nicolson", "t": float(t_next),
                                  "dt": dt, "kappa": float(kappa), "operator": self.opts["operator"]},
                            canonical=canon, local_coordinates=coords,
                            default_options=dict(MATFREE_DEFAULTS) if matfree else {})
