"""A FEniCSx simulation that moves its mesh every few steps to follow its own solution.

Advection-diffusion of a Gaussian hill carried round the unit square by a solid-body rotation,
    u_t + b . grad u = kappa Laplace u,   b = 2 pi (0.5 - y, x - 0.5),
which has an exact solution (the hill rotates and spreads), so the error of each run is known.
P1 in space, Crank–Nicolson in time, the same run twice:

* on the uniform n x n mesh;
* on the same mesh (same dofs) adapted every ``--every`` steps by the Monge–Ampère mover with a
  gradient monitor of the current solution.

Two ways to carry the solution over (``--transfer``):

* ``interpolate``: jump to the new mesh and interpolate (``mover.move(..., fields=[u_n])``), the
  three-line version::

      mover = create_mover(None, mesh, rtol=1e-3)   # once; -mover_type picks it
      mover.move(GradientMonitor(u_n, alpha=20), fields=[u_n])  # every few steps

  Simple, but each interpolation of an under-resolved field loses accuracy (measured below);
* ``ale`` (default): the mover computes the target mesh, and the vertices travel there linearly
  over the next steps while the PDE is solved in arbitrary Lagrangian–Eulerian form
  (``b - w`` with the mesh velocity ``w``): nodal values move with the vertices, nothing is
  interpolated.

The mover is chosen by one option, ``-mover_type NAME`` (any registered mover, default
``monge-ampere``; its own options under ``-mover_``, e.g. ``-mover_variant newton``).

Run: ``mpiexec -n 2 python examples/dolfinx_moving_mesh.py --n 32 --steps 200 --every 5 -mover_type monge-ampere``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from hybridsolve.stack import MPI, PETSc  # import order: MPI, dolfinx_solver, PETSc

import dolfinx  # noqa: E402
import dolfinx.fem.petsc  # noqa: E402
import ufl  # noqa: E402

from hybridsolve.movement import (GradientMonitor, HessianMonitor, create_mover,  # noqa: E402
                                  gather_cells, plot_meshes)
from hybridsolve.options import defaults_under_prefix, unused_options  # noqa: E402
from hybridsolve.stack import insert_args  # noqa: E402
from hybridsolve.parallel import print0, run_collective_main  # noqa: E402

SIGMA0, KAPPA, C0 = 0.05, 1e-4, (0.5, 0.75)


def exact(x, t: float, mod=np):
    """The rotating, spreading Gaussian (numpy arrays or UFL expressions)."""
    a = 2 * np.pi * t
    cx = 0.5 + (C0[0] - 0.5) * np.cos(a) - (C0[1] - 0.5) * np.sin(a)
    cy = 0.5 + (C0[0] - 0.5) * np.sin(a) + (C0[1] - 0.5) * np.cos(a)
    s2 = SIGMA0**2 + 2 * KAPPA * t
    return SIGMA0**2 / s2 * mod.exp(-((x[0] - cx) ** 2 + (x[1] - cy) ** 2) / (2 * s2))


def simulate(comm, n: int, steps: int, T: float, every: int, alpha: float, out: Path | None,
             label: str, transfer: str = "ale", monitor: str = "hessian") -> dict:
    mesh = dolfinx.mesh.create_unit_square(comm, n, n)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    u_n = dolfinx.fem.Function(V, name="u")
    u_n.interpolate(lambda x: exact(x, 0.0))
    dt = T / steps
    xs = ufl.SpatialCoordinate(mesh)
    W = dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (2,)))
    w_mesh = dolfinx.fem.Function(W, name="mesh_velocity")  # zero unless the ALE mesh moves
    b = 2 * np.pi * ufl.as_vector((0.5 - xs[1], xs[0] - 0.5)) - w_mesh
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    k = KAPPA

    def op(w):
        return k * ufl.inner(ufl.grad(w), ufl.grad(v)) * ufl.dx + ufl.dot(b, ufl.grad(w)) * v * ufl.dx

    a = dolfinx.fem.form(u * v * ufl.dx + 0.5 * dt * op(u))
    L = dolfinx.fem.form(u_n * v * ufl.dx - 0.5 * dt * op(u_n))
    mesh.topology.create_connectivity(1, 2)
    bfacets = dolfinx.mesh.exterior_facet_indices(mesh.topology)
    g = dolfinx.fem.Function(V)
    uh = dolfinx.fem.Function(V)
    ksp = PETSc.KSP().create(comm)
    ksp.setOptionsPrefix("adv_")  # -adv_ksp_*/-adv_pc_* on the command line win
    with defaults_under_prefix("adv_", {"ksp_type": "gmres", "pc_type": "bjacobi", "ksp_rtol": 1e-10}):
        ksp.setFromOptions()
    mover = create_mover(None, mesh, rtol=1e-3) if every > 0 else None
    move_time, move_its, moves, fallbacks, blends = 0.0, 0, 0, 0, 0
    A = None
    t0 = time.perf_counter()
    node_of_dof = mover.space.node_of_dof if mover is not None else None
    for step in range(steps):
        if mover is not None and step % every == 0:
            x_old = mesh.geometry.x.copy()
            mon = (HessianMonitor(u_n, beta=alpha) if monitor == "hessian"
                   else GradientMonitor(u_n, alpha=alpha))
            res = mover.move(mon,
                             fields=[u_n] if transfer == "interpolate" else ())
            move_time += res.time
            move_its += res.iterations
            moves += 1
            fallbacks += "fallback" in res.info           # a learned mover's guarantee at work
            blends += res.reason.name == "CONVERGED_BLENDED"
            A = None  # the mesh moved: reassemble
            if transfer == "ale":  # travel to the target over the next `every` steps
                x_tgt = mesh.geometry.x.copy()
                vel = (x_tgt - x_old)[:, :2] / (every * dt)
                w_mesh.x.array[:] = vel[node_of_dof].ravel()
        if mover is not None and transfer == "ale":
            s = (step % every + 1) / every
            mesh.geometry.x[:] = x_old + s * (x_tgt - x_old)
            A = None
        if A is None:
            bcdofs = dolfinx.fem.locate_dofs_topological(V, 1, bfacets)
            A = dolfinx.fem.petsc.assemble_matrix(a, bcs=[dolfinx.fem.dirichletbc(g, bcdofs)])
            A.assemble()
            ksp.setOperators(A)
        t = (step + 1) * dt
        g.interpolate(lambda x: exact(x, t))
        bc = dolfinx.fem.dirichletbc(g, bcdofs)
        rhs = dolfinx.fem.petsc.assemble_vector(L)
        dolfinx.fem.petsc.apply_lifting(rhs, [a], [[bc]])
        rhs.ghostUpdate(PETSc.InsertMode.ADD, PETSc.ScatterMode.REVERSE)
        dolfinx.fem.petsc.set_bc(rhs, [bc])
        ksp.solve(rhs, uh.x.petsc_vec)
        uh.x.scatter_forward()
        u_n.x.array[:] = uh.x.array
        rhs.destroy()
        if (step + 1) % max(1, steps // 4) == 0:
            print0(f"  [{label}] step {step + 1}/{steps}", comm=comm)
    wall = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    ue = exact(xs, T, mod=ufl)
    err = dolfinx.fem.form((u_n - ue) ** 2 * ufl.dx(metadata={"quadrature_degree": 10}))
    nrm = dolfinx.fem.form(ue**2 * ufl.dx(metadata={"quadrature_degree": 10}))
    e = np.sqrt(comm.allreduce(dolfinx.fem.assemble_scalar(err), op=MPI.SUM))
    en = np.sqrt(comm.allreduce(dolfinx.fem.assemble_scalar(nrm), op=MPI.SUM))
    n_dofs = V.dofmap.index_map.size_global
    peak = comm.allreduce(float(u_n.x.array.max(initial=0)), op=MPI.MAX)
    polys = gather_cells(mesh)[0]
    return {"label": label, "dofs": n_dofs, "l2_error": e, "rel_error": e / en, "peak": peak,
            "peak_exact": SIGMA0**2 / (SIGMA0**2 + 2 * KAPPA * T), "wall": wall,
            "move_time": move_time, "moves": moves, "move_iterations": move_its, "polys": polys,
            "fallbacks": fallbacks, "blends": blends,
            "mover": mover.method if mover is not None else "-"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--T", type=float, default=0.5, help="end time (1 = one revolution)")
    p.add_argument("--every", type=int, default=5, help="move the mesh every this many steps")
    p.add_argument("--monitor", choices=["hessian", "gradient"], default="hessian")
    p.add_argument("--alpha", type=float, default=5.0, help="monitor amplitude (default 5)")
    p.add_argument("--transfer", choices=["ale", "interpolate"], default="ale",
                   help="carry the solution by ALE (default) or by interpolation after each move")
    p.add_argument("--out", type=Path, default=Path("out/moving_mesh"))
    args, petsc_args = p.parse_known_args()
    insert_args(petsc_args)  # -mover_type, -mover_*, -adv_ksp_* ...
    comm = MPI.COMM_WORLD
    print0(f"rotating Gaussian hill, {args.n}x{args.n} P1, {args.steps} CN steps to T={args.T}, "
           f"{comm.size} rank(s)", comm=comm)
    rows = [simulate(comm, args.n, args.steps, args.T, 0, args.alpha, args.out, "uniform"),
            simulate(comm, args.n, args.steps, args.T, args.every, args.alpha, args.out,
                     f"moved/{args.every} {args.transfer}", args.transfer, args.monitor)]
    print0(f"{'mesh':18s} {'dofs':>6s} {'L2 error':>10s} {'rel.':>7s} {'peak':>7s} {'wall [s]':>9s} "
           f"{'moving [s]':>10s} {'moves':>5s} {'MA its':>6s}", comm=comm)
    for r in rows:
        print0(f"{r['label']:18s} {r['dofs']:6d} {r['l2_error']:10.3e} {r['rel_error']:7.3f} "
               f"{r['peak']:7.4f} {r['wall']:9.2f} {r['move_time']:10.2f} {r['moves']:5d} "
               f"{r['move_iterations']:6d}", comm=comm)
    e0, e1 = rows[0]["l2_error"], rows[1]["l2_error"]
    print0(f"error reduction by moving the mesh: {100 * (e0 - e1) / e0:.1f}% "
           f"(exact peak {rows[0]['peak_exact']:.4f}; mover {rows[1]['mover']}; "
           f"{rows[1]['fallbacks']} fallbacks to the classical mover, {rows[1]['blends']} "
           "blended moves)", comm=comm)
    left = unused_options()
    if left:
        print0(f"WARNING: PETSc options nobody used: {' '.join(left)}", comm=comm)
    if comm.rank == 0:
        path = plot_meshes([(f"{r['label']}: L2 error {r['l2_error']:.2e}", r["polys"], None)
                            for r in rows], args.out / "moving_mesh_final.png",
                           title=f"meshes at T={args.T}")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_collective_main(main))
