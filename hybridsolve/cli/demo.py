"""``hybridsolve demo``: the main job (datasets with and without SKR, speed-up tables)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hybridsolve.errors import SolverError


def _demo_runs(family: str) -> list:
    """The four ways the demo generates a family's dataset (strongest independent solvers as
    measured in benchmarks/results/skr_bar.md)."""
    strongest = ({"solver": "cg", "petsc": {"pc_type": "icc"}}, "CG + ICC") if family == "darcy" \
        else ({"solver": "gmres", "petsc": {"pc_type": "ilu", "ksp_gmres_restart": 100}},
              "GMRES(100) + ILU")
    # with no PC, GMRES(40) stagnates on the (really indefinite) Helmholtz systems: the paper's
    # rows use ILU there
    pc = "none" if family == "darcy" else "ilu"
    return [
        (f"independent GMRES(40), PC {pc} (the paper's baseline)",
         dict(solver="gmres", order="none", warm_start=False, petsc={"pc_type": pc})),
        (f"SKR: sorted + GCRO-DR(40,20), PC {pc} (the paper's method)",
         dict(solver="gcrodr", order="auto", warm_start=False, petsc={"pc_type": pc})),
        (f"independent {strongest[1]} (strongest independent)",
         dict(order="none", warm_start=False, reuse_matrix=False, reuse_pattern=False,
              **strongest[0])),
        ("datagen default (SKR mode, auto)", dict()),
    ]


def cmd_demo(args: argparse.Namespace, comm) -> int:
    """The main job on an embedded default: Darcy and Helmholtz datasets, each generated four
    ways, with the speed-up table."""
    from hybridsolve.datagen import DatagenConfig, run
    from hybridsolve.parallel import print0
    from hybridsolve.stack import describe

    out = Path(args.out)
    if comm.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    print0(f"hybridsolve demo: datasets of {args.count} systems, tol 1e-8 on ||b - Ax||/||b||, "
           f"{comm.size} rank(s), data-parallel datagen; stack: {describe()}", comm=comm)
    tables = {}
    for family, opts in (("darcy", {"discretization": "grid"}), ("helmholtz", {})):
        n = args.n if family == "darcy" else max(args.n - 1, 32)  # keep k h below 0.7
        rows = []
        for i, (label, kw) in enumerate(_demo_runs(family)):
            path = out / f"demo_{family}_{i}.h5"
            if comm.rank == 0 and path.exists():
                path.unlink()
            comm.Barrier()
            cfg = DatagenConfig(family=family, n=n, count=args.count, out=str(path),
                                options=opts, tol=1e-8, **kw)
            s = run(cfg, comm, progress=False)
            if "auto" in label and s.get("method"):
                label = f"{label[:-1]}: {s['method']})"
            rows.append((label, s["solver"], s["mean_iterations"], s["wall_time"],
                         s["max_true_residual"], s.get("fallbacks", 0)))
        tables[family] = rows
        base, strong = rows[0][3], rows[2][3]
        print0("", comm=comm)
        print0(f"{family} ({'5-point grid' if family == 'darcy' else 'P1, k in [10, 20]'}, "
               f"n={n}):", comm=comm)
        print0(f"  {'method':58s} {'its/sample':>10s} {'wall [s]':>9s} {'vs paper base':>13s} "
               f"{'vs strongest':>12s} {'max res':>9s} {'fallbacks':>9s}", comm=comm)
        for label, _, its, wall, res, fb in rows:
            print0(f"  {label:58s} {its:10.1f} {wall:9.2f} {base / wall:12.2f}x "
                   f"{strong / wall:11.2f}x {res:9.1e} {fb:9d}", comm=comm)
    if comm.rank == 0:
        from hybridsolve.plotting import plot_wall_times

        png = plot_wall_times(
            {family: [(r[0].split(" (")[0], r[3]) for r in rows] for family, rows in tables.items()},
            out / "demo_speedup.png", xlabel=f"wall time for {args.count} samples [s]",
            title=f"dataset generation on {comm.size} rank(s): independent solves vs SKR")
        print0(f"\nwrote the datasets {out / 'demo_*_3.h5'} and {png}", comm=comm)
    if any(r[4] > 1e-8 * (1 + 1e-6) for rows in tables.values() for r in rows):
        raise SolverError("demo: a sample missed the tolerance")
    return 0
