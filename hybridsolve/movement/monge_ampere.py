"""The Monge–Ampère mover (McRae, Cotter & Budd 2018) for DOLFINx meshes: relaxation (pseudo-time
stepping) and Newton variants of m(x) det(I + H(phi)) = theta, x = xi + grad phi.

Why Newton is our own loop and not PETSc SNES (measured for issue 12 by ``python
benchmarks/bench_movement.py snes``, table in ``benchmarks/results/movement_snes.md``): SNES
``newtonls`` with the same matrix-free Jacobian and GAMG-on-the-Laplacian preconditioner, an
inverted trial mesh reported as a NaN residual (what ``SNESSetFunctionDomainError`` does; petsc4py
3.25 has neither that call nor a shell line search's apply), rtol 1e-8, Newton iterations::

    case (20 x 20 squares; gmsh h = 1/24)   ours      SNES bt   SNES l2   SNES basic   bt + our step
    Helmholtz reference                        7         7         7        7              7
    ring alpha 20, beta 200                   86        38        fails    fails         38
    L-shape, ring alpha 10                    19        22        15       fails         22
    square with hole, ring alpha 5            12        12        fails    fails         12
    L-shape, ring alpha 20 (sharp)            22        fails     fails    fails         42
    square with hole, alpha 20 (sharp)      >300        fails     fails    fails         26

``basic`` and ``l2`` take the NaN of a tangled trial (``DIVERGED_FUNCTION_NANORINF``) or find no
decrease (``DIVERGED_LINE_SEARCH``); ``bt`` halves past tangled trials but fails where no Newton
step lowers ||R|| (the sharp cases). What converges there is our fallback, one pseudo-time step
halved until untangled, which has no place inside PETSc's line searches: it needs SNES restarted
around it (last column). That combination keeps the Helmholtz count, is better on the ring and on
the sharp square with a hole, and worse on the L-shapes (19 -> 22, 22 -> 42): the counts are not
kept everywhere, so Newton stays ours; SNES bt with the relaxation restart is the candidate for
issue 16's "safer scheme on non-convex domains".
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from hybridsolve.errors import InputError
from hybridsolve.movement.monitors import Monitor, lumped_mass
from hybridsolve.movement.result import MoveReason
from hybridsolve.options import defaults_under_prefix
from hybridsolve.stack import MPI, PETSc

import dolfinx  # noqa: E402
import dolfinx.fem  # noqa: E402
import dolfinx.fem.petsc  # noqa: E402
import dolfinx.la  # noqa: E402
import ufl  # noqa: E402

from hybridsolve.movement.mover import MoveStop, Mover, Outcome  # noqa: E402

log = logging.getLogger(__name__)

__all__ = ["MongeAmpereMover"]


def _tangential(v: Any, n: Any) -> Any:
    return v - ufl.dot(v, n) * n


class MongeAmpereMover(Mover):
    """Monge–Ampère r-adaptation: x = xi + grad phi with m(x) det(I + H(phi)) = theta.

    ``variant="relaxation"`` (movement's default): pseudo-time stepping of
    ``-d/dt Laplace(phi) = m det(I + H) - theta`` by forward Euler (step ``pseudo_dt``), each step a
    CG + GAMG solve of the P1 Laplacian (constant null space removed) for the increment.
    ``variant="newton"``: Newton steps on the same discrete equation (a matrix-free Jacobian
    with the Hessian recovery, the gradient projection, the monitor's P1 gradient and theta all
    linearised), solved by GMRES preconditioned by GAMG on the Laplacian; a line search in the
    spirit of PETSc's ``l2`` (||R||^2 at steps 1/2 and 1 and the parabola's minimiser, then
    halving) accepts only untangled steps that lower the residual, and where none does the
    iteration takes one relaxation step instead (counted in ``info["relaxation_steps"]``).

    H is recovered weakly in P1 (``(tau, H) = -(div tau, grad phi) + boundary term
    with the tangential part of grad phi``); the new coordinates come from the mass-lumped L2
    projection of grad phi onto P1 vectors, constrained to the boundary (see
    :class:`~hybridsolve.movement.geometry.VertexSpace`). Iterations stop when the relative
    residual ``||m det(I+H) - theta|| / ||theta||`` (tested against P1 hat functions) is below
    ``rtol``; a residual above ``dtol`` times the first one is divergence.

    ``phi`` persists between calls (a warm start for the next move in a time loop; ``reset()``
    forgets it). Options under the prefix (the command line wins over the arguments):
    ``-mover_variant``, ``-mover_rtol``, ``-mover_dtol``, ``-mover_max_it``, ``-mover_pseudo_dt``,
    ``-mover_tangling``, ``-mover_repair_rings``,
    and the inner solvers' ``-mover_ksp_*``/``-mover_pc_*`` (Laplacian), ``-mover_hessian_*``,
    ``-mover_gradient_*``, ``-mover_newton_*``.

    Folding (``tangling``, ``-mover_tangling``): on a non-convex domain the discrete map may
    invert a few cells next to a re-entrant corner even where the iteration converges (the
    corner singularity). ``"repair"`` (default) iterates as ``"refuse"`` does while that makes
    progress; where it does not (relaxation: the step halvings are used up; Newton: no untangled
    step, or 5 iterations of relaxation fallbacks without 1% progress) it lets iterates fold from
    there on (``info["folds_from"]``; the equation lives on the computational mesh), and it
    untangles the converged map locally
    (:meth:`~hybridsolve.movement.mover.Mover.repair`: the inverted cells and
    ``-mover_repair_rings`` layers around them; reason ``CONVERGED_REPAIRED``, what was done in
    ``info["repair"]``); ``"refuse"`` halves steps that would fold and ends the move
    (``DIVERGED_TANGLING``/``DIVERGED_STALL``) where that does not help.

    Reasons: ``CONVERGED_RTOL``; ``CONVERGED_REPAIRED``; ``DIVERGED_MAX_IT``; ``DIVERGED_DTOL``; ``DIVERGED_TANGLING``
    (an iterate would invert cells and no halving is left, or theta <= 0); ``DIVERGED_STALL``
    (Newton: neither a Newton nor a halved relaxation step keeps the mesh untangled);
    ``DIVERGED_LINEAR_SOLVE``; ``DIVERGED_MONITOR``.
    """

    residual = "monge-ampere relative L2"

    def __init__(self, mesh: Any, monitor: Any = None, *, variant: str = "relaxation",
                 rtol: float = 1e-8, dtol: float = 2.0, max_it: int = 1000,
                 pseudo_dt: float = 0.1, ksp_rtol: float = 1e-10, max_halvings: int = 60,
                 tangling: str = "repair", pinned: Any = None,
                 curved_tol_deg: float = 20.0, prefix: str = "mover_") -> None:
        super().__init__(mesh, monitor, pinned=pinned, curved_tol_deg=curved_tol_deg,
                         prefix=prefix)
        variant = self._opt("variant", variant, str)
        if variant not in ("relaxation", "newton"):
            raise InputError(f"MongeAmpereMover variant must be 'relaxation' or 'newton', not {variant!r}")
        self.variant = variant
        self.method = f"monge-ampere-{variant}"
        self.rtol = float(self._opt("rtol", rtol, float))
        self.dtol = float(self._opt("dtol", dtol, float))
        self.max_it = int(self._opt("max_it", max_it, int))
        self.pseudo_dt = float(self._opt("pseudo_dt", pseudo_dt, float))
        self.max_halvings = int(max_halvings)
        self.tangling = self._opt("tangling", tangling, str)
        if self.tangling not in ("repair", "refuse"):
            raise InputError(f"tangling must be 'repair' or 'refuse', not {self.tangling!r}")
        for name, v in (("rtol", self.rtol), ("dtol", self.dtol), ("pseudo_dt", self.pseudo_dt)):
            if not (np.isfinite(v) and v > 0):
                raise InputError(f"{name} must be a positive number, not {v}")
        if self.max_it < 1:
            raise InputError(f"max_it must be >= 1, not {self.max_it}")
        self._build(ksp_rtol)

    # -- setup ---------------------------------------------------------------------------------
    def _build(self, ksp_rtol: float) -> None:
        mesh, d, sp = self.mesh, self.d, self.space
        sp.set_coords(self.xi)
        V = sp.V
        self.Vv = dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (d,)))
        self.Vt = dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (d, d)))
        for W in (self.Vv, self.Vt):
            if not np.array_equal(W.dofmap.list, V.dofmap.list):
                raise RuntimeError("P1 vector/tensor dof numbering differs from the scalar one")
        self.phi = dolfinx.fem.Function(V, name="phi")
        self.H = dolfinx.fem.Function(self.Vt, name="H")
        self.m = dolfinx.fem.Function(V, name="monitor")
        self.theta = dolfinx.fem.Constant(mesh, PETSc.ScalarType(1.0))
        self.delta = dolfinx.fem.Function(V)
        v, u = ufl.TestFunction(V), ufl.TrialFunction(V)
        tau = ufl.TestFunction(self.Vt)
        w = ufl.TestFunction(self.Vv)
        n = ufl.FacetNormal(mesh)
        I = ufl.Identity(d)
        dx, ds = ufl.dx, ufl.ds
        self._ml = lumped_mass(V)
        self.volume = self.comm.allreduce(
            dolfinx.fem.assemble_scalar(dolfinx.fem.form(dolfinx.fem.Constant(mesh, 1.0) * dx)),
            op=MPI.SUM)
        self._mdet = self.m * ufl.det(I + self.H)
        self.f_theta = dolfinx.fem.form(self._mdet * dx)
        self.f_res = dolfinx.fem.form(v * (self._mdet - self.theta) * dx)
        self.f_hess = dolfinx.fem.form(-ufl.dot(ufl.div(tau), ufl.grad(self.phi)) * dx
                                       + ufl.dot(ufl.dot(_tangential(ufl.grad(self.phi), n), tau), n) * ds)
        self.f_grad = dolfinx.fem.form(ufl.inner(w, ufl.grad(self.phi)) * dx)
        self.f_lap = dolfinx.fem.form(ufl.inner(ufl.grad(u), ufl.grad(v)) * dx)
        A = dolfinx.fem.petsc.assemble_matrix(self.f_lap)
        A.assemble()
        ns = PETSc.NullSpace().create(constant=True, comm=self.comm)
        A.setNullSpace(ns)
        self.A, self._ns = A, ns
        self.ksp = self._make_ksp(A, "", {"ksp_type": "cg", "pc_type": "gamg",
                                          "ksp_rtol": ksp_rtol, "ksp_max_it": 500})
        self.b = A.createVecLeft()
        # consistent tensor mass matrix for the Hessian (a lumped one makes the relaxation
        # unstable near the boundary: measured, tangles the ring case at iteration 7)
        M = dolfinx.fem.petsc.assemble_matrix(dolfinx.fem.form(
            ufl.inner(ufl.TrialFunction(self.Vt), tau) * dx))
        M.assemble()
        kh = self._make_ksp(M, "hessian_", {"ksp_type": "cg", "pc_type": "jacobi", "ksp_rtol": 1e-12})
        self.M_H, self.ksp_H = M, kh
        self.b_H = dolfinx.fem.petsc.create_vector(self.Vt)  # ghosted: assembly writes ghosts
        self._build_gradient_projection(w)
        if self.variant == "newton":
            self._build_newton()
        self._ml_norm = float(np.sqrt(self.comm.allreduce(float(np.sum(self._ml[: sp.n_owned] ** 2)),
                                                           op=MPI.SUM)))

    def _build_gradient_projection(self, w: Any) -> None:
        """Consistent L2 projection of grad phi onto P1 vectors under the boundary constraints.

        With P the block-diagonal vertex projector (symmetric, idempotent; zero at corners and
        pinned vertices), the constrained projection solves ``(P M P + I - P) g = P b``: SPD, and
        g lies in the range of P (normal components vanish, corners stay)."""
        d, sp = self.d, self.space
        M = dolfinx.fem.petsc.assemble_matrix(dolfinx.fem.form(
            ufl.inner(ufl.TrialFunction(self.Vv), w) * ufl.dx))
        M.assemble()
        n = sp.n_owned
        im = self.Vv.dofmap.index_map
        start = im.local_range[0]
        N = im.size_global
        P = PETSc.Mat().createAIJ(size=((n * d, N * d), (n * d, N * d)), bsize=d, nnz=d,
                                  comm=self.comm)
        C = PETSc.Mat().createAIJ(size=((n * d, N * d), (n * d, N * d)), bsize=d, nnz=d,
                                  comm=self.comm)
        eye = np.eye(d)
        for i in range(n):
            rows = (start + i) * d + np.arange(d, dtype=PETSc.IntType)
            P.setValues(rows, rows, sp.projector[i].ravel())
            C.setValues(rows, rows, (eye - sp.projector[i]).ravel())
        P.assemble()
        C.assemble()
        K = M.PtAP(P)
        K.axpy(1.0, C, structure=PETSc.Mat.Structure.DIFFERENT_NONZERO_PATTERN)
        kg = self._make_ksp(K, "gradient_", {"ksp_type": "cg", "pc_type": "jacobi", "ksp_rtol": 1e-12})
        self.ksp_g, self.K_g, self._Pg = kg, K, P
        self.b_g = dolfinx.fem.petsc.create_vector(self.Vv)
        self.grad = dolfinx.fem.Function(self.Vv, name="grad_phi")

    def _reset_state(self) -> None:
        self.phi.x.array[:] = 0.0
        self.H.x.array[:] = 0.0

    def _save_state(self) -> Any:
        return self.phi.x.array.copy(), self.H.x.array.copy()

    def _restore_state(self, state: Any) -> None:  # the warm start of the next move stays valid
        self.phi.x.array[:], self.H.x.array[:] = state

    def _make_ksp(self, op: Any, suffix: str, defaults: dict, pc_context: Any = None) -> Any:
        """A KSP on ``op`` under ``{prefix}{suffix}`` with code defaults the command line can
        override (a python PC context, when given, replaces the PC after the options are read)."""
        ksp = PETSc.KSP().create(self.comm)
        ksp.setOperators(op)
        ksp.setOptionsPrefix(self.prefix + suffix)
        with defaults_under_prefix(self.prefix + suffix, defaults):
            ksp.setFromOptions()
            if pc_context is not None:
                ksp.getPC().setType("python")
                ksp.getPC().setPythonContext(pc_context)
            ksp.setUp()
        return ksp

    def _assemble_p1(self, form: Any, bs: int) -> np.ndarray:
        vec = dolfinx.fem.assemble_vector(form)
        vec.scatter_reverse(dolfinx.la.InsertMode.add)
        vec.scatter_forward()
        return vec.array.reshape(-1, bs)

    def _recover_hessian(self) -> None:
        """H from phi (weak Hessian, consistent mass); mesh at computational coordinates."""
        b = self.b_H
        with b.localForm() as loc:
            loc.set(0.0)
        dolfinx.fem.petsc.assemble_vector(b, self.f_hess)
        b.ghostUpdate(PETSc.InsertMode.ADD, PETSc.ScatterMode.REVERSE)
        self.ksp_H.solve(b, self.H.x.petsc_vec)
        if self.ksp_H.getConvergedReason() < 0:
            raise MoveStop(MoveReason.DIVERGED_LINEAR_SOLVE, "Hessian projection failed: KSP "
                           f"reason {self.ksp_H.getConvergedReason()}")
        self.H.x.scatter_forward()

    def _project_gradient(self, form: Any, out: Any) -> np.ndarray:
        """Constrained consistent L2 projection of a gradient form into ``out`` (P1 vectors)."""
        d, n = self.d, self.space.n_owned
        b = self.b_g
        with b.localForm() as loc:
            loc.set(0.0)
        dolfinx.fem.petsc.assemble_vector(b, form)
        b.ghostUpdate(PETSc.InsertMode.ADD, PETSc.ScatterMode.REVERSE)
        arr = b.array.reshape(n, d)
        arr[:] = np.einsum("nij,nj->ni", self.space.projector[:n], arr)
        self.ksp_g.solve(b, out.x.petsc_vec)
        if self.ksp_g.getConvergedReason() < 0:
            raise MoveStop(MoveReason.DIVERGED_LINEAR_SOLVE, "gradient projection failed: KSP "
                           f"reason {self.ksp_g.getConvergedReason()}")
        out.x.scatter_forward()
        g = out.x.array.reshape(-1, d)
        g[:] = self.space.constrain(g)  # exact zeros where round-off left a trace
        return g

    def _coords_from_phi(self) -> np.ndarray:
        """xi + the constrained projection of grad phi; mesh at computational coordinates."""
        return self.xi + self._project_gradient(self.f_grad, self.grad)

    def _norm(self, arr: np.ndarray) -> float:
        n = self.space.n_owned
        return float(np.sqrt(self.comm.allreduce(float(np.sum(arr[:n] ** 2)), op=MPI.SUM)))

    def _residual(self, monitor: Monitor, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Monitor at x, theta, and the relative residual vector (mesh left at xi)."""
        sp = self.space
        self.m.x.array[:] = self.evaluate_monitor(monitor, x)
        self.monitor_values = self.m.x.array.copy()
        sp.set_coords(self.xi)
        th = self.comm.allreduce(dolfinx.fem.assemble_scalar(self.f_theta), op=MPI.SUM) / self.volume
        if not np.isfinite(th) or th <= 0:
            raise MoveStop(MoveReason.DIVERGED_TANGLING, f"Monge-Ampere normalisation theta = "
                           f"{th}: det(I + H) went negative (the map folds)")
        self.theta.value = th
        r = self._assemble_p1(self.f_res, 1)[:, 0].copy()
        return self._norm(r) / (th * self._ml_norm), r

    def _solve_increment(self, rhs: np.ndarray) -> np.ndarray:
        n = self.space.n_owned
        self.b.array[:] = rhs[:n]
        self._ns.remove(self.b)
        dv = self.delta.x.petsc_vec
        dv.set(0.0)
        self.ksp.solve(self.b, dv)
        r = self.ksp.getConvergedReason()
        if r < 0:
            raise MoveStop(MoveReason.DIVERGED_LINEAR_SOLVE,
                           f"Monge-Ampere inner (Laplacian) solve failed: KSP reason {r}")
        self._inner_its += self.ksp.getIterationNumber()
        self.delta.x.scatter_forward()
        return self.delta.x.array.copy()

    # -- the iterations ---------------------------------------------------------------------------
    def _solve(self, monitor: Monitor) -> Outcome:
        self._inner_its = 0
        self._fold_ok, self._folds_from = False, None
        out = Outcome(info={"rtol": self.rtol})
        try:
            if self.variant == "newton":
                self._newton(monitor, out)
            else:
                self._relaxation(monitor, out)
        except MoveStop as stop:
            out.x, out.reason, out.message = None, stop.reason, str(stop)
        out.info["inner_iterations"] = self._inner_its
        if self._folds_from is not None:
            out.info["folds_from"] = self._folds_from
        if out.x is not None and self.tangling == "repair" and self.count_inverted(out.x) > 0:
            self.repair(monitor, out)
        return out

    def _folds(self, x: np.ndarray) -> bool:
        """Whether an iterate counts as tangled (inverts a cell) and must be avoided: always
        under ``tangling="refuse"``; under ``"repair"`` until :meth:`_allow_folds`."""
        return not self._fold_ok and self.count_inverted(x) > 0

    def _allow_folds(self, out: Outcome | None, it: int) -> None:
        """``tangling="repair"``: from iteration ``it`` on, iterates may fold (the equation
        lives on the computational mesh; the converged map is repaired at the end)."""
        if not self._fold_ok:
            self._fold_ok = True
            self._folds_from = it
            log.info("  %4d no untangled step makes progress: iterates may fold from here "
                     "(repaired at the end)", it)

    def _relaxation(self, monitor: Monitor, out: Outcome) -> None:
        """Forward-Euler pseudo-time stepping; fills ``out`` (x, reason, history, counters)."""
        sp = self.space
        hist = out.residual_history
        dt = ceiling = self.pseudo_dt
        halvings, calm, grow = 0, 0, 0
        phi_prev = H_prev = dphi_unit = None
        it = 0
        while True:
            out.iterations = it
            sp.set_coords(self.xi)
            x = self._coords_from_phi()
            tangled = self._folds(x)
            if tangled and phi_prev is not None and halvings < self.max_halvings:
                # the step was too long: go back and take half of it
                self.phi.x.array[:] = phi_prev
                self.H.x.array[:] = H_prev
                dt *= 0.5
                halvings += 1
                calm = 0
                self.phi.x.array[:] += dt * dphi_unit
                sp.set_coords(self.xi)
                self._recover_hessian()
                continue
            if tangled and self.tangling == "repair":
                self._allow_folds(out, it)   # halving cannot keep it untangled: let it fold
                dt, halvings = ceiling, 0
            elif tangled:
                self.check_tangling(x, it)
            res, r = self._residual(monitor, x)
            grow = grow + 1 if hist and res > hist[-1] else 0
            if grow >= 4 and halvings < self.max_halvings:
                # a growing oscillation: forward Euler is past its stability limit; halve the
                # step for good
                dt *= 0.5
                ceiling = dt
                halvings += 1
                grow = 0
            hist.append(res)
            out.info["step_halvings"] = halvings
            log.info("  %4d MA residual %.3e  pseudo-dt %.3g", it, res, dt)
            if res < self.rtol:
                out.reason = MoveReason.CONVERGED_RTOL
                break
            if res > self.dtol * hist[0]:
                raise MoveStop(MoveReason.DIVERGED_DTOL,
                               f"relaxation diverged at iteration {it}: residual {res:.3e} > "
                               f"{self.dtol:g} x initial {hist[0]:.3e} (try a smaller pseudo_dt "
                               "or a smoother monitor)")
            if it == self.max_it:
                out.reason = MoveReason.DIVERGED_MAX_IT
                break
            calm += 1
            if calm >= 10 and dt < ceiling:  # regrow after a calm stretch
                dt = min(ceiling, 2 * dt)
                calm = 0
            phi_prev, H_prev = self.phi.x.array.copy(), self.H.x.array.copy()
            dphi_unit = self._solve_increment(r)
            self.phi.x.array[:] += dt * dphi_unit
            self._recover_hessian()
            it += 1
        sp.set_coords(self.xi)
        out.x = self._coords_from_phi()
        out.info["pseudo_dt"] = self.pseudo_dt

    # -- Newton ---------------------------------------------------------------------------------
    def _build_newton(self) -> None:
        """The Newton system: the matrix-free Jacobian (:class:`_NewtonJacobian`) and GMRES
        preconditioned by -(GAMG of the Laplacian) / mean(m) (:class:`_ScaledLaplacianPC`)."""
        self.d_in = dolfinx.fem.Function(self.space.V)
        self.Hd = dolfinx.fem.Function(self.Vt)
        tau = ufl.TestFunction(self.Vt)
        v = ufl.TestFunction(self.space.V)
        n = ufl.FacetNormal(self.mesh)
        dx, ds = ufl.dx, ufl.ds
        I = ufl.Identity(self.d)
        self.f_hess_d = dolfinx.fem.form(
            -ufl.dot(ufl.div(tau), ufl.grad(self.d_in)) * dx
            + ufl.dot(ufl.dot(_tangential(ufl.grad(self.d_in), n), tau), n) * ds)
        self.gd = dolfinx.fem.Function(self.Vv)
        w = ufl.TestFunction(self.Vv)
        self.f_grad_d = dolfinx.fem.form(ufl.inner(w, ufl.grad(self.d_in)) * dx)
        cof = ufl.cofac(I + self.H)
        # d/dphi of (psi, m(x(phi)) det(I + H(phi))): the Hessian part and the monitor part
        # (grad_x m = (I + H)^-1 grad_xi m, and det(I+H) (I+H)^-1 = cof(I+H) for symmetric H)
        self.f_jac = dolfinx.fem.form(v * self.m * ufl.inner(cof, self.Hd) * dx
                                      + v * ufl.dot(ufl.dot(cof, ufl.grad(self.m)), self.gd) * dx)
        self._jb = self.A.createVecLeft()
        self._jy = dolfinx.fem.petsc.create_vector(self.space.V)
        self._ml_vec = self.A.createVecLeft()
        self._ml_vec.array[:] = self._ml[: self.space.n_owned]
        nloc, nglob = self.A.getSizes()[0]
        J = PETSc.Mat().createPython(((nloc, nglob), (nloc, nglob)), _NewtonJacobian(self),
                                     comm=self.comm)
        J.setUp()
        J.setNullSpace(self._ns)
        kn = self._make_ksp(J, "newton_", {"ksp_type": "gmres", "ksp_rtol": 1e-4, "ksp_max_it": 200,
                                           "ksp_gmres_restart": 200},
                            pc_context=_ScaledLaplacianPC(self))
        self.ksp_newton, self._J = kn, J
        self._pc_amg = self.ksp.getPC()
        self._m_mean = 1.0

    def _trial(self, monitor: Monitor, phi0: np.ndarray, dphi: np.ndarray, lam: float):
        """The state at phi0 + lam dphi: (residual, vector, coords, phi, H), or None where the
        mesh would tangle (mesh left at xi)."""
        sp = self.space
        self.phi.x.array[:] = phi0 + lam * dphi
        sp.set_coords(self.xi)
        self._recover_hessian()
        xt = self._coords_from_phi()
        if self._folds(xt):
            return None
        res_t, r_t = self._residual(monitor, xt)
        return res_t, r_t, xt, self.phi.x.array.copy(), self.H.x.array.copy()

    def _line_search(self, monitor: Monitor, res: float, phi0: np.ndarray, dphi: np.ndarray,
                     out: Outcome):
        """PETSc's ``l2`` line search in spirit, restricted to untangled steps: ||R||^2 at
        lam = 1/2 and 1 and the parabola's minimiser through them and lam = 0, keep the best
        that lowers the residual; else halve from 1/4. Returns the accepted trial or None."""
        trial = lambda lam: self._trial(monitor, phi0, dphi, lam)  # noqa: E731
        tried = {lam: trial(lam) for lam in (1.0, 0.5)}
        f0 = res**2
        if tried[1.0] is not None and tried[0.5] is not None:
            f1, fh = tried[1.0][0] ** 2, tried[0.5][0] ** 2
            curv = 2 * (f1 - 2 * fh + f0)  # second derivative in lam (step 1/2 grid)
            if curv > 0:
                lam_q = float(np.clip((4 * fh - 3 * f0 - f1) / (2 * curv), 0.05, 1.0))
                if all(abs(lam_q - k) > 1e-3 for k in tried):
                    tried[lam_q] = trial(lam_q)
        good = {k: v for k, v in tried.items() if v is not None and v[0] < (1 - 1e-4 * k) * res}
        lam = 0.25
        while not good and lam > 1e-3:
            out.info["backtracks"] += 1
            t = trial(lam)
            if t is not None and t[0] < (1 - 1e-4 * lam) * res:
                good[lam] = t
            lam *= 0.5
        if not good:
            return None
        return good[min(good, key=lambda k: good[k][0])]

    def _relaxation_step(self, monitor: Monitor, r: np.ndarray, phi0: np.ndarray,
                         H0: np.ndarray, it: int):
        """Newton's fallback where no step helps (a strongly nonlinear monitor): one
        pseudo-time step, halved until untangled. Returns (residual, vector, coords)."""
        sp = self.space
        self.phi.x.array[:] = phi0
        self.H.x.array[:] = H0
        sp.set_coords(self.xi)
        unit = self._solve_increment(r)
        lam = self.pseudo_dt
        for _ in range(self.max_halvings):
            self.phi.x.array[:] = phi0 + lam * unit
            self._recover_hessian()
            xt = self._coords_from_phi()
            if not self._folds(xt):
                break
            lam *= 0.5
        else:
            if self.tangling == "repair":  # no step keeps it untangled: let it fold
                self._allow_folds(None, it)
                return self._relaxation_step(monitor, r, phi0, H0, it)
            self.phi.x.array[:] = phi0
            self.H.x.array[:] = H0
            raise MoveStop(MoveReason.DIVERGED_STALL,
                           f"Newton iteration {it}: no Newton step and no relaxation step down to "
                           f"{lam:.2g} keeps the mesh untangled")
        res_t, r_t = self._residual(monitor, xt)
        return res_t, r_t, xt

    def _newton(self, monitor: Monitor, out: Outcome) -> None:
        """Newton with the untangled line search and the relaxation fallback; fills ``out``."""
        sp = self.space
        hist = out.residual_history
        out.info.update(linear_iterations=0, backtracks=0, relaxation_steps=0)
        it = 0
        sp.set_coords(self.xi)
        x = self._coords_from_phi()
        if self._folds(x):
            self.check_tangling(x, 0)
        res, r = self._residual(monitor, x)
        hist.append(res)
        while True:
            out.iterations = it
            log.info("  %4d MA residual %.3e", it, res)
            if res < self.rtol:
                out.reason = MoveReason.CONVERGED_RTOL
                break
            if it == self.max_it:
                out.reason = MoveReason.DIVERGED_MAX_IT
                break
            n = sp.n_owned
            self._m_mean = self.comm.allreduce(float(self.m.x.array[:n].sum()), op=MPI.SUM) / \
                self.comm.allreduce(n, op=MPI.SUM)
            rhs = self._jb
            rhs.array[:] = -r[:n]
            self._ns.remove(rhs)
            step = self.delta.x.petsc_vec
            step.set(0.0)
            self.ksp_newton.solve(rhs, step)
            out.info["linear_iterations"] += self.ksp_newton.getIterationNumber()
            self.delta.x.scatter_forward()
            dphi = self.delta.x.array.copy()
            phi0, H0 = self.phi.x.array.copy(), self.H.x.array.copy()
            best = self._line_search(monitor, res, phi0, dphi, out)
            if best is not None:
                res, r, x, phi_b, H_b = best
                self.phi.x.array[:] = phi_b
                self.H.x.array[:] = H_b
                self.m.x.array[:] = self.evaluate_monitor(monitor, x)  # m at the accepted point
                self.monitor_values = self.m.x.array.copy()
                sp.set_coords(self.xi)
                th = self.comm.allreduce(dolfinx.fem.assemble_scalar(self.f_theta), op=MPI.SUM)
                self.theta.value = th / self.volume
            else:
                res, r, x = self._relaxation_step(monitor, r, phi0, H0, it)
                out.info["relaxation_steps"] += 1
            hist.append(res)
            it += 1
            if (self.tangling == "repair" and not self._fold_ok and it >= 5
                    and out.info["relaxation_steps"] >= 5 and res > 0.99 * hist[-6]):
                # the untangled constraint has held the residual for 5 iterations: let it fold
                self._allow_folds(out, it)
            if res > self.dtol * hist[0]:
                out.iterations = it
                raise MoveStop(MoveReason.DIVERGED_DTOL,
                               f"Newton diverged at iteration {it}: residual {res:.3e} > "
                               f"{self.dtol:g} x initial {hist[0]:.3e}")
        sp.set_coords(self.xi)
        out.x = self._coords_from_phi()


class _NewtonJacobian:
    """Python ``Mat`` context: the matrix-free Newton Jacobian of the discrete residual
    R(phi) = (psi, m(x(phi)) det(I + H(phi)) - theta(phi)):
    J d = (psi, m cof(I+H) : H(d) + (cof(I+H) grad m) . G(d)) - dtheta (psi, 1), with H(d) the
    weak Hessian (a tensor-mass solve), G(d) the constrained gradient projection (a vector-mass
    solve) and grad m taken from m's P1 interpolant; the state (m, H, theta) is the mover's."""

    def __init__(self, mover: MongeAmpereMover) -> None:
        self.mover = mover

    def mult(self, mat: Any, x: Any, y: Any) -> None:
        mv = self.mover
        mv.d_in.x.petsc_vec.array[:] = x.array_r
        mv.d_in.x.scatter_forward()
        b = mv.b_H
        with b.localForm() as loc:
            loc.set(0.0)
        dolfinx.fem.petsc.assemble_vector(b, mv.f_hess_d)
        b.ghostUpdate(PETSc.InsertMode.ADD, PETSc.ScatterMode.REVERSE)
        mv.ksp_H.solve(b, mv.Hd.x.petsc_vec)
        mv.Hd.x.scatter_forward()
        mv._project_gradient(mv.f_grad_d, mv.gd)
        jy = mv._jy
        with jy.localForm() as loc:
            loc.set(0.0)
        dolfinx.fem.petsc.assemble_vector(jy, mv.f_jac)
        jy.ghostUpdate(PETSc.InsertMode.ADD, PETSc.ScatterMode.REVERSE)
        y.array[:] = jy.array_r
        # theta = (1, m det(I+H)) / |domain| moves too: d theta = sum(J d) / |domain|
        dtheta = y.sum() / mv.volume
        y.axpy(-dtheta, mv._ml_vec)


class _ScaledLaplacianPC:
    """Python ``PC`` context: J is about -mean(m) times the Laplacian, so precondition with
    -(the relaxation's GAMG on the Laplacian) / mean(m)."""

    def __init__(self, mover: MongeAmpereMover) -> None:
        self.mover = mover

    def apply(self, pc: Any, x: Any, y: Any) -> None:
        self.mover._pc_amg.apply(x, y)
        y.scale(-1.0 / self.mover._m_mean)
