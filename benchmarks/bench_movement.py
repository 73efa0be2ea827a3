"""Mesh movement benchmarks: the `movement` library's reference cases re-created, scaling to
1e5 cells on 1 and 2 ranks, and non-convex domains.

    python benchmarks/bench_movement.py reference     # Helmholtz + ring (20 x 20), both variants
    python benchmarks/bench_movement.py scaling       # ring on n x n squares, 1 and 2 ranks
    python benchmarks/bench_movement.py domains       # L-shape and square with a square hole
    python benchmarks/bench_movement.py all
    python benchmarks/bench_movement.py snes          # Newton: ours vs PETSc SNES line searches

Tables go to benchmarks/results/movement_*.md, pictures to benchmarks/results/movement_*.png.
The `movement` figures (Firedrake, quasi-Newton, rtol 1e-8) are the ones recorded in its demos
(see ../shared/reference/mesh_movement.md); `movement` itself is not installable here (Firedrake).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_table  # noqa: E402

from hybridsolve.stack import MPI, PETSc  # noqa: E402,F401

import dolfinx  # noqa: E402
import dolfinx.fem.petsc  # noqa: E402
import ufl  # noqa: E402

from hybridsolve.movement import (CallableMonitor, Monitor, MongeAmpereMover, RingMonitor,  # noqa: E402
                                  cell_metrics, gather_cells, mesh_quality, plot_meshes)
from hybridsolve.parallel import print0  # noqa: E402

X0, Y0, W = 0.51, 0.65, 0.1


def helmholtz_error(mesh, x0: float = X0, y0: float = Y0, w: float = W) -> float:
    """movement's Helmholtz demo: -Laplace u + u = f, u = Gaussian bump at (x0, y0) of width w;
    L2 error of P1."""
    comm = mesh.comm
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    x = ufl.SpatialCoordinate(mesh)
    ue = ufl.exp(-((x[0] - x0) ** 2 + (x[1] - y0) ** 2) / w**2)
    f = -ufl.div(ufl.grad(ue)) + ue
    a = (ufl.inner(ufl.grad(u), ufl.grad(v)) + u * v) * ufl.dx
    L = f * v * ufl.dx
    mesh.topology.create_connectivity(1, 2)
    bf = dolfinx.mesh.exterior_facet_indices(mesh.topology)
    g = dolfinx.fem.Function(V)
    g.interpolate(dolfinx.fem.Expression(ue, V.element.interpolation_points))
    bc = dolfinx.fem.dirichletbc(g, dolfinx.fem.locate_dofs_topological(V, 1, bf))
    prob = dolfinx.fem.petsc.LinearProblem(a, L, bcs=[bc], petsc_options_prefix="helm_",
                                           petsc_options={"ksp_type": "preonly", "pc_type": "lu"})
    uh = prob.solve()
    uh = uh[0] if isinstance(uh, tuple) else uh
    e = dolfinx.fem.form((uh - ue) ** 2 * ufl.dx(metadata={"quadrature_degree": 8}))
    return float(np.sqrt(comm.allreduce(dolfinx.fem.assemble_scalar(e), op=MPI.SUM)))


class HelmholtzMonitor(Monitor):
    """movement's monitor_exact: 1 + 5 |H(u_exact)|_F / max over the current mesh's vertices
    (u_exact the Gaussian at (x0, y0) of width w; movement's by default)."""

    def __init__(self, x0: float = X0, y0: float = Y0, w: float = W) -> None:
        self.x0, self.y0, self.w = x0, y0, w
        self.name = ("1 + 5|H|/max|H|" if (x0, y0, w) == (X0, Y0, W) else
                     f"1 + 5|H|/max|H| (bump at {x0:.2f}, {y0:.2f}, w {w:.2f})")

    def evaluate(self, V, x):
        W = self.w
        dx, dy = x[:, 0] - self.x0, x[:, 1] - self.y0
        u = np.exp(-(dx**2 + dy**2) / W**2)
        hxx = u * (4 * dx * dx / W**4 - 2 / W**2)
        hyy = u * (4 * dy * dy / W**4 - 2 / W**2)
        hxy = u * 4 * dx * dy / W**4
        h = np.sqrt(hxx**2 + hyy**2 + 2 * hxy**2)
        hmax = V.mesh.comm.allreduce(float(h.max(initial=0.0)), op=MPI.MAX)
        return 1.0 + 5.0 * h / hmax


def firedrake_square(comm, n: int):
    """Firedrake's UnitSquareMesh(n, n): diagonals to the left (DOLFINx's default is right)."""
    return dolfinx.mesh.create_unit_square(comm, n, n, diagonal=dolfinx.mesh.DiagonalType.left)


def _fmt(v, p=4):
    return f"{v:.{p}g}"


def reference(args) -> None:
    comm = MPI.COMM_WORLD
    rows = []
    pics = []
    mesh = firedrake_square(comm, 20)
    e0 = helmholtz_error(mesh)
    before = gather_cells(mesh)[0]
    rows.append(["Helmholtz", "movement (recorded)", "quasi-Newton", 17, "2.27", "0.01023", "0.00596",
                 "41.7%", "", "", ""])
    for variant in ("relaxation", "newton"):
        for rtol in (1e-8, 1e-3):
            mover = MongeAmpereMover(mesh, HelmholtzMonitor(), variant=variant, rtol=rtol)
            res = mover.move()
            e1 = helmholtz_error(mesh)
            q = res.quality
            rows.append(["Helmholtz", "hybridsolve", f"{variant}, rtol {rtol:g}", res.iterations,
                         f"{res.time:.3f}", f"{e0:.5f}", f"{e1:.5f}", f"{100 * (e0 - e1) / e0:.1f}%",
                         _fmt(q["weighted_volume_ratio"]), _fmt(q["equidistribution_cv"], 3),
                         q["inverted"]])
            if variant == "newton" and rtol == 1e-8:
                cm = cell_metrics(mesh, mover.monitor_values, space=mover.space)
                pics.append(("Helmholtz, 1 + 5|H|/max|H|", before, gather_cells(mesh, cm["equidistribution"])))
            mover.reset()
    # the uniform mesh a user would need for the moved mesh's error
    target = None
    for n in range(21, 60):
        if helmholtz_error(firedrake_square(comm, n)) <= 0.00596:
            target = n
            break
    rows.append(["Helmholtz", "uniform refinement", f"{target} x {target} to match the moved error",
                 "", "", "", "", "", "", "", ""])
    rows.append(["ring", "movement (recorded)", "quasi-Newton", 74, "", "", "", "", "9.19", "0.349", ""])
    for variant in ("relaxation", "newton"):
        mesh = firedrake_square(comm, 20)
        mover = MongeAmpereMover(mesh, RingMonitor(20, 200, 0.4), variant=variant, rtol=1e-8)
        res = mover.move()
        q = res.quality
        rows.append(["ring", "hybridsolve", f"{variant}, rtol 1e-8", res.iterations,
                     f"{res.time:.3f}", "", "", "", _fmt(q["weighted_volume_ratio"]),
                     _fmt(q["equidistribution_cv"], 3), q["inverted"]])
        if variant == "relaxation":
            cm = cell_metrics(mesh, mover.monitor_values, space=mover.space)
            pics.append(("ring alpha 20, beta 200, r 0.4", before, gather_cells(mesh, cm["equidistribution"])))
    if comm.rank == 0:
        for k, (title, b, (after, vals)) in enumerate(pics):
            plot_meshes([("uniform 20 x 20", b, None), (f"moved: {title}", after, vals)],
                        RESULTS / f"movement_{'helmholtz' if k == 0 else 'ring'}.png",
                        label="m_K |K| / mean (1 = equidistributed)")
        write_table("movement_reference", "Mesh movement: the `movement` library's reference cases",
                    ["case", "who", "variant", "its", "time [s]", "L2 err uniform", "L2 err moved",
                     "error reduction", "volume ratio (m-weighted)", "sigma/mu", "inverted"], rows,
                    notes=("20 x 20 unit-square mesh with left diagonals (Firedrake's UnitSquareMesh; "
                           "with DOLFINx's default right diagonals the moved Helmholtz error is "
                           "0.00599, 41.5 %), 1 rank. `movement` numbers are "
                           "those recorded in its demos (Firedrake, quasi-Newton, rtol 1e-8); its "
                           "'volume ratio' is max/min of m_K |K|, which is what the column shows for "
                           "both. Times are the mover's own (after setup: form compilation is cached)."))


def _scaling_worker(args) -> None:
    comm = MPI.COMM_WORLD
    out = []
    for n in args.sizes:
        mesh = dolfinx.mesh.create_unit_square(comm, n, n)
        comm.Barrier()
        t0 = time.perf_counter()
        mover = MongeAmpereMover(mesh, RingMonitor(20, 200, 0.4), variant=args.variant, rtol=args.rtol)
        setup = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
        res = mover.move()
        q = res.quality
        out.append({"n": n, "cells": q["cells"], "ranks": comm.size, "setup": setup,
                    "time": res.time, "its": res.iterations,
                    "inner": res.info.get("inner_iterations", res.info.get("linear_iterations")),
                    "cv": q["equidistribution_cv"], "inverted": q["inverted"],
                    "converged": res.converged})
        del mover
    if comm.rank == 0:
        Path(args.json).write_text(json.dumps(out))


def scaling(args) -> None:
    here = Path(__file__).resolve()
    bindir = Path(sys.executable).parent
    rows, data = [], {}
    for ranks in (1, 2):
        js = RESULTS / f".scaling_{ranks}.json"
        cmd = [str(bindir / "mpiexec"), "-n", str(ranks), sys.executable, str(here), "scaling-worker",
               "--sizes", *map(str, args.sizes), "--json", str(js), "--variant", args.variant,
               "--rtol", str(args.rtol)]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        subprocess.run(cmd, check=True, env=env)
        data[ranks] = json.loads(js.read_text())
        js.unlink()
    base = None
    for r1, r2 in zip(data[1], data[2]):
        per_it = r1["time"] / max(r1["its"], 1)
        if base is None:
            base = (r1["cells"], per_it)
        rows.append([r1["n"], r1["cells"], r1["its"], r1["inner"], f"{r1['setup']:.2f}",
                     f"{r1['time']:.2f}", f"{1e3 * per_it:.2f}",
                     f"{(per_it / base[1]) / (r1['cells'] / base[0]):.2f}",
                     r2["its"], f"{r2['time']:.2f}", f"{r1['time'] / r2['time']:.2f}",
                     f"{r1['cv']:.3f}", r1["inverted"] + r2["inverted"]])
    write_table("movement_scaling", f"Mesh movement: scaling ({args.variant}, ring monitor "
                f"alpha 20, beta 200, r 0.4, rtol {args.rtol:g})",
                ["n", "cells", "its (1 rank)", "inner its", "setup [s]", "move [s] 1 rank",
                 "ms / it", "cost per it per cell (vs smallest)", "its (2 ranks)",
                 "move [s] 2 ranks", "speed-up 2 vs 1", "sigma/mu", "inverted"], rows,
                notes=("n x n right-diagonal unit-square meshes (2 n^2 cells). 'move' is the "
                       "mover's wall time after setup (setup: spaces, forms, matrices, AMG). "
                       "Inner its = CG iterations of the Laplacian solves (GAMG)."))


def _front(c: float, axis: int = 0, name: str = "front"):
    """1 + 10 exp(-200 (x_axis + 0.3 sin(4 x_other) - c)^2): a wavy front (issue 16)."""
    o = 1 - axis
    return CallableMonitor(
        lambda x: 1 + 10 * np.exp(-200 * (x[axis] + 0.3 * np.sin(4 * x[o]) - c) ** 2), name)


def domains(args) -> None:
    """Non-convex domains, both ways of meeting a map that folds (``-mover_tangling refuse``:
    halve and stop; ``repair``, the default: converge, then untangle the folded cells locally)."""
    comm = MPI.COMM_WORLD
    from hybridsolve.problems.fem import gmsh_domain

    rows, panels = [], []
    cases = [("lshape", RingMonitor(10, 100, 0.25), "ring alpha 10, beta 100, r 0.25 at the re-entrant corner"),
             ("square_hole", RingMonitor(5, 50, 0.3), "ring alpha 5, beta 50, r 0.3 round the hole"),
             ("lshape", RingMonitor(20, 200, 0.25), "ring alpha 20, beta 200, r 0.25 (sharp)"),
             ("square_hole", RingMonitor(20, 200, 0.3), "ring alpha 20, beta 200, r 0.3 (sharp)"),
             ("lshape", _front(0.5), "front x + 0.3 sin 4y = 0.5 (issue 16)"),
             ("lshape", _front(0.45, 1, "front2"), "front y + 0.3 sin 4x = 0.45 (held out)"),
             ("slot", _front(1.0, 0, "front3"), "front x + 0.3 sin 4y = 1 across the slot (held out)")]
    for kind, mon, label in cases:
        for variant in ("relaxation", "newton"):
            for tangling in ("refuse", "repair"):
                mesh = gmsh_domain(comm, kind, args.domain_n)
                mover = MongeAmpereMover(mesh, mon, variant=variant, rtol=1e-8,
                                         max_it=2000 if variant == "relaxation" else 300,
                                         tangling=tangling)
                q0 = mesh_quality(mesh, mover.evaluate_monitor(mon, mover.xi), space=mover.space,
                                  reference_sign=mover.ref_sign)
                mover.reset()
                before = gather_cells(mesh)[0]
                repaired, ratio = "", ""
                t0 = time.perf_counter()
                try:
                    res = mover.move()
                    q = res.quality
                    outcome = f"{res.reason_name}, {res.iterations} its, {res.time:.2f} s"
                    cvs = f"{q0['equidistribution_cv']:.3f} -> {q['equidistribution_cv']:.3f}"
                    ratio = f"{q0['equidistribution_cv'] / q['equidistribution_cv']:.2f}"
                    inv = q["inverted"]
                    rep = res.info.get("repair")
                    if rep:
                        repaired = (f"{rep['inverted_before']} cells, {rep['vertices']} vertices, "
                                    f"{rep['time']:.2f} s")
                    if variant == "relaxation" and (len(panels) < 2 or (rep and len(panels) < 3)):
                        cm = cell_metrics(mesh, mover.monitor_values, space=mover.space)
                        panels.append((f"{kind}: {label}", before,
                                       gather_cells(mesh, cm["equidistribution"])))
                except Exception as err:  # noqa: BLE001 - the table records what happened
                    outcome = (f"refused after {time.perf_counter() - t0:.1f} s: "
                               f"{type(err).__name__}: {str(err)[:70]}")
                    cvs = f"{q0['equidistribution_cv']:.3f} -> (mesh unchanged)"
                    inv = 0
                rows.append([kind, label, variant, tangling, q0["cells"], outcome, cvs, ratio,
                             repaired, inv])
                print0(" | ".join(str(v) for v in rows[-1]))
    if comm.rank == 0:
        for k, (title, b, (after, vals)) in enumerate(panels):
            plot_meshes([("initial", b, None), (f"moved: {title}", after, vals)],
                        RESULTS / f"movement_domain_{k}.png", label="m_K |K| / mean")
    write_table("movement_domains", "Mesh movement on non-convex domains",
                ["domain", "monitor", "variant", "tangling", "cells", "outcome",
                 "sigma/mu before -> after", "sigma/mu reduction", "repaired (local untangling)",
                 "inverted returned"], rows,
                notes=(f"gmsh meshes with size 1/{args.domain_n}, rtol 1e-8, at most 2000 "
                       "relaxation or 300 Newton iterations, 1 rank; boundary "
                       "vertices slide along the straight sides, corners (incl. the re-entrant one "
                       "and the hole's) fixed. A refused move leaves the mesh unchanged. "
                       "`refuse`: steps that would fold are halved, the move ends where that does "
                       "not help; `repair` (default): iterates may fold on the way, the converged "
                       "map's inverted cells and 2 rings of neighbours are untangled locally "
                       "(Escobar's untangling-and-smoothing objective, the rest of the mesh kept), "
                       "reason CONVERGED_REPAIRED. The front cases' monitor and the repair's ring "
                       "count were set on the first front (issue 16's); front2 and front3 were not "
                       "looked at before this run."))


def _snes_newton(mover: MongeAmpereMover, monitor: Monitor, line_search: str, restart: bool,
                 max_it: int) -> dict:
    """Newton on PETSc SNES (newtonls) with the mover's matrix-free Jacobian and preconditioner;
    an inverted trial mesh is a NaN residual (what SNESSetFunctionDomainError does; petsc4py
    lacks that call). ``restart``: where the line search fails, one relaxation step (halved
    until untangled), then SNES again: our fallback around SNES."""
    comm, sp, n = mover.comm, mover.space, mover.space.n_owned
    mover._inner_its = 0
    state = {"res": np.nan, "X": None, "fevals": 0, "nan": 0}

    def at(X):
        mover.phi.x.petsc_vec.array[:] = X.array_r
        mover.phi.x.scatter_forward()
        sp.set_coords(mover.xi)
        mover._recover_hessian()
        x = mover._coords_from_phi()
        return None if mover.count_inverted(x) > 0 else mover._residual(monitor, x)

    def function(snes, X, F):
        state["fevals"] += 1
        out = at(X)
        if out is None:
            state["nan"] += 1
            F.set(np.nan)
            return
        F.array[:] = out[1][:n]
        state["res"], state["X"] = out[0], X.array_r.copy()

    def jacobian(snes, X, J, P):
        if state["X"] is None or not np.array_equal(state["X"], X.array_r):
            at(X)
        mover._m_mean = comm.allreduce(float(mover.m.x.array[:n].sum()), op=MPI.SUM) / \
            comm.allreduce(n, op=MPI.SUM)

    def converged(snes, it, norms):
        if state["res"] < mover.rtol:
            return PETSc.SNES.ConvergedReason.CONVERGED_FNORM_ABS
        return PETSc.SNES.ConvergedReason.DIVERGED_MAX_IT if it >= max_it else 0

    snes = PETSc.SNES().create(comm)
    snes.setFunction(function, mover.A.createVecLeft())
    mover._J.setTransposeNullSpace(mover._ns)   # the rhs made consistent, as ours does
    snes.setJacobian(jacobian, mover._J, mover._J)
    snes.setConvergenceTest(converged)
    ksp = snes.getKSP()
    ksp.setType("gmres")
    ksp.setTolerances(rtol=1e-4, max_it=200)
    ksp.setGMRESRestart(200)
    ksp.getPC().setType("python")
    ksp.getPC().setPythonContext(mover.ksp_newton.getPC().getPythonContext())
    snes.getLineSearch().setType(line_search)
    snes.setTolerances(max_it=max_it)
    snes.setMaxFunctionEvaluations(10**7)
    snes.setMaxKSPFailures(10**7)   # ours ignores an inexact GMRES step too
    X = mover.A.createVecLeft()
    X.set(0.0)
    its = relax = 0
    t0 = time.perf_counter()
    while True:
        snes.solve(None, X)
        its += snes.getIterationNumber()
        reason = snes.getConvergedReason()
        failed_search = reason == PETSc.SNES.ConvergedReason.DIVERGED_LINE_SEARCH
        if not (restart and failed_search) or its >= max_it:
            break
        res, r = at(X)
        sp.set_coords(mover.xi)
        unit = mover._solve_increment(r)
        phi0, lam = X.array_r.copy(), mover.pseudo_dt
        for _ in range(mover.max_halvings):
            X.array[:] = phi0 + lam * unit[:n]
            if at(X) is not None:
                break
            lam *= 0.5
        its, relax = its + 1, relax + 1
    wall = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    out = at(X)
    ok = out is not None and out[0] < mover.rtol
    snes.destroy()
    names = {v: k for k, v in vars(PETSc.SNES.ConvergedReason).items() if isinstance(v, int)}
    return {"its": its, "converged": ok, "reason": names.get(reason, str(reason)), "relax": relax,
            "time": wall,
            "fevals": state["fevals"], "nan": state["nan"],
            "residual": out[0] if out is not None else np.nan}


def snes(args) -> None:
    """Newton iterations: our line search vs PETSc SNES's (issue 12's question)."""
    comm = MPI.COMM_WORLD
    from hybridsolve.problems.fem import gmsh_domain

    square = lambda: firedrake_square(comm, 20)  # noqa: E731
    lshape = lambda: gmsh_domain(comm, "lshape", args.domain_n)  # noqa: E731
    hole = lambda: gmsh_domain(comm, "square_hole", args.domain_n)  # noqa: E731
    cases = [("Helmholtz reference", square, HelmholtzMonitor()),
             ("ring alpha 20, beta 200, r 0.4", square, RingMonitor(20, 200, 0.4)),
             ("L-shape, ring alpha 10, beta 100", lshape, RingMonitor(10, 100, 0.25)),
             ("square_hole, ring alpha 5, beta 50", hole, RingMonitor(5, 50, 0.3)),
             ("L-shape, ring alpha 20, beta 200", lshape, RingMonitor(20, 200, 0.25)),
             ("square_hole, ring alpha 20, beta 200", hole, RingMonitor(20, 200, 0.3))]
    max_it = args.snes_max_it

    def cell(r):
        return (f"{r['its']} ({r['time']:.2f} s)" if r["converged"] else
                f"not converged after {r['its']} ({r['reason']})")

    rows = []
    for label, make, mon in cases:
        mover = MongeAmpereMover(make(), mon, variant="newton", rtol=1e-8, max_it=max_it)
        res = mover.move(raise_on_fail=False)
        ours = {"its": res.iterations, "time": res.time, "converged": res.converged,
                "reason": res.reason_name}
        row = [label, cell(ours) + (f", {res.info['relaxation_steps']} relaxation steps"
                                    if res.converged and res.info["relaxation_steps"] else "")]
        for ls, restart in (("bt", False), ("l2", False), ("basic", False), ("bt", True)):
            mover.reset()
            r = _snes_newton(mover, mon, ls, restart, max_it)
            row.append(cell(r) + (f", {r['relax']} relaxation steps" if restart and r["relax"]
                                  else ""))
        rows.append(row)
        if comm.rank == 0:
            print(" | ".join(map(str, row)), flush=True)
    write_table("movement_snes", "Mesh movement: Newton iterations, our line search vs PETSc SNES",
                ["case", "ours (l2-like, untangled steps, relaxation fallback)", "SNES newtonls bt",
                 "SNES l2", "SNES basic", "SNES bt + our relaxation step on line-search failure"],
                rows,
                notes=("rtol 1e-8 on the relative Monge-Ampere residual, the same matrix-free Jacobian "
                       "and GAMG preconditioner in all columns; an inverted trial mesh is a NaN "
                       "residual for SNES. 20 x 20 left-diagonal squares, gmsh domains "
                       f"h = 1/{args.domain_n}, "
                       f"1 rank, at most {max_it} iterations. Times are the solves' own."))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["reference", "scaling", "domains", "snes", "all",
                                    "scaling-worker"])
    p.add_argument("--sizes", type=int, nargs="+", default=[20, 40, 80, 160, 224])
    p.add_argument("--variant", default="relaxation")
    p.add_argument("--rtol", type=float, default=1e-6)
    p.add_argument("--domain-n", type=int, default=24)
    p.add_argument("--json")
    p.add_argument("--snes-max-it", type=int, default=300)
    args = p.parse_args()
    if args.what == "scaling-worker":
        return _scaling_worker(args)
    if args.what in ("reference", "all"):
        reference(args)
    if args.what in ("domains", "all"):
        domains(args)
    if args.what in ("scaling", "all"):
        scaling(args)
    if args.what == "snes":
        snes(args)


if __name__ == "__main__":
    main()
