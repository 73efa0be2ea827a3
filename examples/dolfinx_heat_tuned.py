"""A DOLFINx time loop whose SSOR-PCG solves learn their relaxation factor as they go.

    mpiexec -n 2 python examples/dolfinx_heat_tuned.py --nx 64 --steps 500 --learner chebcb

The heat equation u_t = kappa(t) Laplace(u) + f on the unit square (P1, Crank–Nicolson, u = 0 on
the boundary), kappa(t) = max(0.1 sin 2 pi t, -10 sin 2 pi t) and a bump forcing circling the
centre: the setting of Khodak et al.'s bandit-SOR experiment, in DOLFINx. The tuning is three
lines (marked below); the same loop is then re-run with a fixed omega for comparison.
PETSc options under the prefix ``heat_`` still apply (e.g. ``-heat_ksp_converged_reason``).
"""

from __future__ import annotations

import argparse

from hybridsolve import stack

parser = argparse.ArgumentParser(description=__doc__, add_help=False, allow_abbrev=False)
parser.add_argument("--help", action="help", help="show this help and exit")
parser.add_argument("--nx", type=int, default=32, help="cells per side (default 32)")
parser.add_argument("--steps", type=int, default=400, help="time steps (default 400)")
parser.add_argument("--learner", default="chebcb", help="tsallis, binned-tsallis, chebcb")
parser.add_argument("--fixed", type=float, default=1.0, help="omega of the comparison run")
opts, petsc_args = parser.parse_known_args()
if any(a.startswith("--") for a in petsc_args):  # a typo, not a PETSc option (those are -name)
    parser.error(f"unknown option {next(a for a in petsc_args if a.startswith('--'))}")
PETSc = stack.init(petsc_args)  # hybridsolve first: it owns the MPI/PETSc import order

import dolfinx  # noqa: E402
import dolfinx.fem.petsc  # noqa: E402
import numpy as np  # noqa: E402
import ufl  # noqa: E402

from hybridsolve.parallel import print0  # noqa: E402
from hybridsolve.problems.gridpoisson import heat_kappa  # noqa: E402
from hybridsolve.solvers.petsc import KrylovSolver  # noqa: E402
from hybridsolve.tuning import SORTuner  # noqa: E402


def main(nx: int, steps: int, learner: str, fixed: float, dt: float = 1e-3) -> dict:
    comm = stack.MPI.COMM_WORLD
    mesh = dolfinx.mesh.create_unit_square(comm, nx, nx)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    kappa = dolfinx.fem.Constant(mesh, PETSc.ScalarType(0.0))
    u_n, f = dolfinx.fem.Function(V), dolfinx.fem.Function(V)
    facets = dolfinx.mesh.locate_entities_boundary(mesh, 1, lambda p: np.full(p.shape[1], True))
    bc = dolfinx.fem.dirichletbc(0.0, dolfinx.fem.locate_dofs_topological(V, 1, facets), V)

    def bump(x, cx, cy, r):
        r2 = np.minimum(((x[0] - cx) ** 2 + (x[1] - cy) ** 2) / r**2, 1.0)
        return np.where(r2 < 1, np.exp(1 - 1 / np.maximum(1 - r2, 1e-300)), 0.0)

    a = dolfinx.fem.form((u * v + 0.5 * dt * kappa * ufl.inner(ufl.grad(u), ufl.grad(v))) * ufl.dx)
    L = dolfinx.fem.form((u_n * v - 0.5 * dt * kappa * ufl.inner(ufl.grad(u_n), ufl.grad(v))
                          + dt * f * v) * ufl.dx)
    A = dolfinx.fem.petsc.create_matrix(a)
    b = dolfinx.fem.petsc.create_vector(V)
    out = {}
    for name in (learner, f"fixed omega={fixed:g}"):
        u_n.interpolate(lambda x: bump(x, 0.5, 0.5, 0.25))
        # (1) one tuner for the whole run: a learner choosing omega for SSOR-PCG
        tuner = SORTuner(KrylovSolver(comm, prefix="heat_", method="ssor-pcg", rtol=1e-8),
                         learner if name == learner else "fixed",
                         omegas=None if name == learner else [fixed], context_range=(0.0, 10.0))
        for i in range(steps):
            t = (i + 0.5) * dt
            kappa.value = heat_kappa(t)
            ph = 2 * np.pi * 8 * t
            f.interpolate(lambda x: 32 * bump(x, 0.5 + 0.25 * np.cos(ph), 0.5 + 0.25 * np.sin(ph), 0.125))
            A.zeroEntries()
            dolfinx.fem.petsc.assemble_matrix(A, a, bcs=[bc])
            A.assemble()
            with b.localForm() as loc:
                loc.set(0.0)
            dolfinx.fem.petsc.assemble_vector(b, L)
            dolfinx.fem.petsc.apply_lifting(b, [a], bcs=[[bc]])
            b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
            dolfinx.fem.petsc.set_bc(b, [bc])
            # (2) solve with the learner's omega for this step's kappa; it learns from the cost
            result = tuner.solve(A, b, x0=u_n.x.petsc_vec, context=float(kappa.value))
            if not result.converged or result.true_residual > 1e-8 * (1 + 1e-6):
                raise RuntimeError(f"step {i}: {result.summary()}")
            # (3) the solution becomes the next step's state
            result.x.copy(u_n.x.petsc_vec)
            u_n.x.scatter_forward()
            result.x.destroy()
            if (i + 1) % max(steps // 5, 1) == 0:
                print0(f"[{name}] step {i + 1}/{steps}: {tuner.summary()}", comm=comm)
        its = sum(r.iterations for r in tuner.results)
        out[name] = {"iterations": its, "solve_time": sum(r.time for r in tuner.results),
                     "learner_time": tuner.learner_time, "omegas": list(tuner.values),
                     "norm": float(np.sqrt(comm.allreduce(
                         dolfinx.fem.assemble_scalar(dolfinx.fem.form(u_n * u_n * ufl.dx))))),
                     }
        tuner.solver.destroy()
    names = list(out)
    print0(f"{nx}x{nx} P1 mesh, {V.dofmap.index_map.size_global} dofs, {steps} steps on "
           f"{comm.size} rank(s): " + "; ".join(
               f"{k}: {o['iterations']} its, {o['solve_time']:.2f} s solving + "
               f"{o['learner_time']:.3f} s learning" for k, o in out.items())
           + f"; final ||u|| {out[names[0]]['norm']:.6e} vs {out[names[1]]['norm']:.6e}", comm=comm)
    return out


if __name__ == "__main__":
    main(opts.nx, opts.steps, opts.learner, opts.fixed)
