"""Learned movers against the classical Monge–Ampère mover (issue 16), side by side in one run.

    python benchmarks/bench_movement_learned.py [--dmm dmm2d] [--um2n um2n2d] [--n 20 40]
    python benchmarks/bench_movement_learned.py --simulation    # the FEniCSx moving-mesh example

Held-out cases (none of them drawn in training: DMM's monitors and UM2N's data are random analytic
bumps, fronts and rings from seed 0, UM2N's on gmsh squares, 1.5 x 1 rectangles, L-shapes and
squares with a hole): movement's Helmholtz reference and four Helmholtz problems with the Gaussian
moved (seed 2026) on structured meshes, monitor 1 + 5 |H(u)|/max (the PDE error of the P1 solution
is measured); a ring, a wavy front and an anisotropic bump on the square (equidistribution only);
issue 16's L-shape front (a domain DMM never saw; UM2N saw L-shapes, not this monitor) and a
front in the slot domain (no mover trained on it). For each
mover: outcome (reason; blend factor and fallback for the learned one), time per move (the
slowest rank, without the quality metrics; DMM's model share separately), sigma/mu before and
after, PDE error reduction, cells the raw model output inverts (before the guarantee) and cells
returned inverted (must be 0). Writes ``benchmarks/results/movement_learned.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_table  # noqa: E402
from bench_movement import HelmholtzMonitor, _front, helmholtz_error  # noqa: E402

from hybridsolve.stack import MPI, PETSc  # noqa: E402,F401

import dolfinx  # noqa: E402

from hybridsolve.movement import (CallableMonitor, Monitor, RingMonitor, cell_metrics,  # noqa: E402
                                  create_mover, gather_cells, plot_meshes)
from hybridsolve.parallel import print0  # noqa: E402


class Gaussian:
    """A Helmholtz case of bench_movement's: the Gaussian at (x0, y0) of width w, its P1 error and
    its Hessian monitor."""

    def __init__(self, x0: float, y0: float, w: float) -> None:
        self.x0, self.y0, self.w = x0, y0, w

    def error(self, mesh) -> float:
        return helmholtz_error(mesh, self.x0, self.y0, self.w)

    def monitor(self) -> Monitor:
        return HelmholtzMonitor(self.x0, self.y0, self.w)


def _aniso(x):
    u = 0.8 * (x[0] - 0.35) + 0.6 * (x[1] - 0.55)
    v = -0.6 * (x[0] - 0.35) + 0.8 * (x[1] - 0.55)
    return 1 + 6 * np.exp(-0.5 * ((u / 0.06) ** 2 + (v / 0.2) ** 2))


def movers(models: dict):
    return [("monge-ampere", "relaxation, rtol 1e-3 (UM2N's labels)",
             dict(variant="relaxation", rtol=1e-3)),
            ("monge-ampere", "newton, rtol 1e-8", dict(variant="newton", rtol=1e-8))] + [
            (name, f"model {m}", dict(model=m)) for name, m in models.items()]


def run_case(comm, make_mesh, monitor, pde, model, rows, label, pics):
    e0 = pde.error(make_mesh()) if pde else None
    out = {}
    for name, how, kw in movers(model):
        mesh = make_mesh()
        before = gather_cells(mesh)[0]
        mover = create_mover(name, mesh, monitor, **kw)
        mover.move()          # first call: JIT/form compilation and the model's set-up
        mover.reset()
        res = mover.move()
        q0, q = res.quality_before, res.quality
        e1 = pde.error(mesh) if pde else None
        info = res.info
        outcome = f"{res.reason_name}, {res.iterations} its"
        if "fallback" in info:
            outcome += f"; fallback to {info['fallback']['to']}"
        if "blend" in info:
            outcome += f"; blend {info['blend']:.2f}"
        if "repair" in info:
            outcome += f"; repaired {info['repair']['inverted_before']} cells"
        er = (e0 - e1) / e0 if pde else None
        out[(name, how)] = (res.time, er, q["equidistribution_cv"])
        rows.append([label, name, how, outcome, f"{res.time * 1e3:.1f}",
                     f"{info['model_time'] * 1e3:.1f}" if "model_time" in info else "",
                     f"{q0['equidistribution_cv']:.3f} -> {q['equidistribution_cv']:.3f}",
                     f"{100 * er:.1f}%" if pde else "", info.get("model_inverted", ""),
                     q["inverted"]])
        print0(" | ".join(str(v) for v in rows[-1]), comm=comm)
        if name != "monge-ampere" and not pics.get((label, name)) and comm.size == 1:
            cm = cell_metrics(mesh, mover.monitor_values, space=mover.space)
            pics[(label, name)] = True
            pics.setdefault("_list", []).append((f"{name}: {label}", before,
                                                 gather_cells(mesh, cm["equidistribution"])))
    return out


def simulation(comm, models: dict) -> None:
    """The FEniCSx moving-mesh example (rotating Gaussian, ALE, Hessian monitor, a move every 10
    of 200 steps on 32 x 32) with each mover selected by ``-mover_type``, as a user would."""
    import tempfile

    from hybridsolve.stack import PETSc

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from dolfinx_moving_mesh import simulate

    out = Path(tempfile.mkdtemp())
    rows = []
    base = simulate(comm, 32, 200, 0.5, 0, 5.0, out, "uniform")
    rows.append(["uniform", "-", f"{base['l2_error']:.3e}", "", f"{base['wall']:.2f}", "0", 0, 0,
                 "", ""])
    opts = PETSc.Options()
    for name, model in [("monge-ampere", None)] + list(models.items()):
        opts["mover_type"] = name
        if model:
            opts["mover_model"] = model
        try:
            r = simulate(comm, 32, 200, 0.5, 10, 5.0, out, f"moved ({name})", "ale", "hessian")
        finally:
            opts.delValue("mover_type")
            if model:
                opts.delValue("mover_model")
        er = (base["l2_error"] - r["l2_error"]) / base["l2_error"]
        rows.append([f"moved every 10 steps, ALE", r["mover"], f"{r['l2_error']:.3e}",
                     f"{100 * er:.1f}%", f"{r['wall']:.2f}", f"{r['move_time']:.2f}",
                     r["moves"], r["move_iterations"], r["blends"], r["fallbacks"]])
        print0(" | ".join(str(v) for v in rows[-1]), comm=comm)
    write_table("movement_learned_simulation",
                "Learned movers inside the FEniCSx simulation (examples/dolfinx_moving_mesh.py)",
                ["mesh", "mover (-mover_type)", "L2 error at T", "error reduction", "wall [s]",
                 "of which moving [s]", "moves", "mover iterations", "blended moves",
                 "fallbacks to Monge-Ampere"], rows,
                notes=(f"{comm.size} rank(s). Rotating Gaussian hill on 32 x 32 P1, 200 "
                       "Crank-Nicolson steps to T = 0.5, a move every 10 steps with the Hessian "
                       "monitor of the current solution (1 + 5 |H|/max), ALE transfer; each mover "
                       "selected by `-mover_type` alone (`create_mover(None, mesh, rtol=1e-3)` in "
                       "the example; the learned movers hand rtol to their fallback). Held out "
                       "for both networks: Hessian monitors of a discrete solution were never "
                       "in their training."))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dmm", default="dmm2d", help="DMM model ('' to leave it out)")
    p.add_argument("--um2n", default="um2n2d", help="UM2N model ('' to leave it out)")
    p.add_argument("--n", type=int, nargs="+", default=[20, 40])
    p.add_argument("--out", default="movement_learned")
    p.add_argument("--simulation", action="store_true",
                   help="only the FEniCSx moving-mesh simulation with each mover")
    args = p.parse_args()
    comm = MPI.COMM_WORLD
    models = {k: v for k, v in (("dmm", args.dmm), ("um2n", args.um2n)) if v}
    if args.simulation:
        return simulation(comm, models)
    from hybridsolve.problems.fem import gmsh_domain

    rng = np.random.default_rng(2026)
    bumps = [Gaussian(0.51, 0.65, 0.1)] + [
        Gaussian(*rng.uniform(0.3, 0.7, 2), rng.uniform(0.08, 0.15)) for _ in range(4)]
    rows, pics, summary = [], {}, []
    for n in args.n:
        square = (lambda n=n: dolfinx.mesh.create_unit_square(
            comm, n, n, diagonal=dolfinx.mesh.DiagonalType.left))
        for k, g in enumerate(bumps):
            label = f"Helmholtz {'reference' if k == 0 else f'bump {k}'}, {n}x{n}"
            summary.append(run_case(comm, square, g.monitor(), g, models, rows, label, pics))
        for mon, label in ((RingMonitor(10.0, 100.0, 0.3), "ring alpha 10, r 0.3"),
                           (_front(0.5), "front x + 0.3 sin 4y = 0.5"),
                           (CallableMonitor(_aniso, "aniso"), "anisotropic bump")):
            run_case(comm, square, mon, None, models, rows, f"{label}, {n}x{n}", pics)
    run_case(comm, lambda: gmsh_domain(comm, "lshape", 24), _front(0.5), None, models, rows,
             "L-shape front (issue 16), gmsh h 1/24", pics)
    slot = CallableMonitor(
        lambda x: 1 + 8 * np.exp(-100 * (x[0] + 0.2 * np.sin(3 * x[1]) - 1.2) ** 2), "slot-front")
    run_case(comm, lambda: gmsh_domain(comm, "slot", 16), slot, None, models, rows,
             "slot (2 x 1 with a slot; no mover trained on it), front, gmsh h 1/16", pics)
    # the goal: each learned mover's error reduction vs the classical mover's, and the time ratio
    lines = []
    for name, m in models.items():
        for how in ("relaxation, rtol 1e-3 (UM2N's labels)", "newton, rtol 1e-8"):
            ratios = [s[(name, f"model {m}")][1] / s[("monge-ampere", how)][1] for s in summary]
            speed = [s[("monge-ampere", how)][0] / s[(name, f"model {m}")][0] for s in summary]
            lines.append(f"Over the {len(summary)} Helmholtz cases, {name.upper()}'s error reduction "
                         f"is {100 * np.mean(ratios):.0f}% (min {100 * np.min(ratios):.0f}%) of "
                         f"Monge-Ampere {how}'s, at {np.mean(speed):.1f}x less time per move "
                         f"(min {np.min(speed):.1f}x).")
    if comm.rank == 0:
        for k, (title, b, (after, vals)) in enumerate(pics.get("_list", [])[:4]):
            plot_meshes([("initial", b, None), (title, after, vals)],
                        RESULTS / f"{args.out}_{k}.png", label="m_K |K| / mean")
    write_table(args.out, "Learned mesh movers (DMM, UM2N) against the Monge-Ampere mover",
                ["case", "mover", "settings", "outcome", "time per move [ms]",
                 "model time [ms]", "sigma/mu before -> after", "PDE error reduction",
                 "cells the model inverts (before the guarantee)", "inverted returned"], rows,
                notes=(f"{comm.size} rank(s). " + " ".join(lines) + " Times: the second move of "
                       "each mover on its mesh (the first compiles forms and builds the model's "
                       "sensor interpolation); DMM's 'model time' is the network and the blend "
                       "check on rank 0, the rest is the monitor evaluation and the broadcast. "
                       "DMM was trained data-free on the unit square only (the paper's setting); "
                       "the L-shape row shows the guarantee on a domain it never saw."))


if __name__ == "__main__":
    main()
