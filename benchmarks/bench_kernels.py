"""Kernels against PETSc's C on the same operator, and against the memory bandwidth.

    .venv/bin/python benchmarks/bench_kernels.py [--quick]

Writes ``results/stencil_apply.md`` (matrix-free stencil apply vs PETSc AIJ MatMult vs the
STREAM-triad bandwidth bound), ``results/sor_sweep.md`` (grid SOR sweeps vs PETSc MatSOR) and
``results/csr.md`` (CSR SpMV and SOR sweep vs PETSc and SciPy), plus ``results/dense_blocks.md``
(V^T w and V y: NumPy/BLAS against a Numba loop). Serial, one PETSc process; Numba at 1 thread
(the like-for-like column) and at all threads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numba  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from common import median_time, write_table  # noqa: E402
from hybridsolve.kernels import csr, sor, stencil  # noqa: E402
from hybridsolve.problems.grid import face_coefficients, stencil_rows  # noqa: E402
from hybridsolve.la.petsc import mat_from_local_csr  # noqa: E402
from hybridsolve.stack import MPI, PETSc  # noqa: E402

stencil.PARALLEL_MIN = sor.PARALLEL_MIN = csr.PARALLEL_MIN = 0  # threaded kernels at every size

NTHREADS = numba.config.NUMBA_NUM_THREADS
TOL = 1.05  # "no slower than PETSc": within 5%, the spread of repeated runs on this machine


def bandwidth(nbytes_target: int = 3 * 2**30) -> float:
    """STREAM triad bandwidth in bytes/s (24 bytes per element, STREAM's count), best of 5."""
    n = nbytes_target // 24
    a, b, c = np.zeros(n), np.ones(n), np.full(n, 2.0)
    stencil.stream_triad(a, b, c, 3.0)
    t = min(median_time(lambda: stencil.stream_triad(a, b, c, 3.0), 1) for _ in range(5))
    return 24.0 * n / t


def operator(shape, seed=0):
    rng = np.random.default_rng(seed)
    coef = np.exp(0.5 * rng.standard_normal(tuple(s + 2 for s in shape)))
    faces = face_coefficients(shape, coef=coef)
    n = int(np.prod(shape))
    r, c, v = stencil_rows(shape, np.arange(n), faces=faces)
    A = sp.csr_matrix((v, (r, c)), shape=(n, n))
    A.sort_indices()
    return faces, A


def with_threads(k, fn):
    numba.set_num_threads(k)
    try:
        return fn()
    finally:
        numba.set_num_threads(NTHREADS)


def bench_apply(sizes, bw1, bwN, reps):
    rows = []
    for shape in sizes:
        faces, A = operator(shape)
        n = A.shape[0]
        x = np.random.default_rng(1).standard_normal(shape)
        lo, hi = np.zeros(shape[1:]), np.zeros(shape[1:])
        y = np.empty(shape)
        stencil.apply(faces, x, lo, hi, 0.0, y)
        t1 = with_threads(1, lambda: median_time(lambda: stencil.apply(faces, x, lo, hi, 0.0, y), reps))
        tN = with_threads(NTHREADS, lambda: median_time(lambda: stencil.apply(faces, x, lo, hi, 0.0, y), reps))
        M = mat_from_local_csr(MPI.COMM_SELF, n, A)
        px, py = M.createVecs()
        px.getArray()[:] = x.ravel()
        M.mult(px, py)
        tp = median_time(lambda: M.mult(px, py), reps)
        err = np.linalg.norm(py.getArray() - y.ravel()) / np.linalg.norm(y)
        assert err < 1e-12, f"kernel and PETSc disagree: {err:.2e}"
        dim = len(shape)
        bytes_mf = 8.0 * n * (dim + 2)  # x, y and one face array per axis (STREAM-style count)
        bytes_aij = 12.0 * A.nnz + 4.0 * (n + 1) + 16.0 * n
        ideal1 = bytes_mf / bw1
        rows.append(["x".join(map(str, shape)), n, f"{t1 * 1e3:.2f}", f"{tN * 1e3:.2f}",
                     f"{tp * 1e3:.2f}", f"{tp / t1:.2f}", f"{ideal1 * 1e3:.2f}",
                     f"{100 * ideal1 / t1:.0f}%", f"{100 * bytes_mf / bwN / tN:.0f}%",
                     f"{100 * bytes_aij / bw1 / tp:.0f}%",
                     "yes" if tp / t1 >= 1.5 and ideal1 / t1 >= 0.8 else "no"])
        for o in (M, px, py):
            o.destroy()
        print(rows[-1], flush=True)
    return rows


def bench_sor(sizes, reps):
    rows = []
    for shape in sizes:
        faces, A = operator(shape, 2)
        n = A.shape[0]
        b = np.random.default_rng(3).standard_normal(shape)
        x = np.zeros(shape)
        lo, hi = np.zeros(shape[1:]), np.zeros(shape[1:])
        idiag = sor.inverse_diagonal(faces)  # computed once, as the matrix-free operator does

        def lex():
            sor.sweep(faces, b, x, omega=1.5, kind="symmetric", lo=lo, hi=hi, idiag=idiag)

        def rb():
            sor.sweep(faces, b, x, omega=1.5, kind="forward", ordering="redblack", lo=lo, hi=hi,
                      idiag=idiag)

        lex()
        rb()
        t_lex = with_threads(1, lambda: median_time(lex, reps))
        t_rb1 = with_threads(1, lambda: median_time(rb, reps))
        t_rbN = with_threads(NTHREADS, lambda: median_time(rb, reps))
        M = mat_from_local_csr(MPI.COMM_SELF, n, A)
        pb, px = M.createVecs()
        pb.getArray()[:] = b.ravel()
        st = PETSc.Mat.SORType.SYMMETRY_SWEEP
        M.SOR(pb, px, omega=1.5, sortype=st)
        tp = median_time(lambda: M.SOR(pb, px, omega=1.5, sortype=st), reps)
        # check: one symmetric sweep from the same start agrees with PETSc's
        x[...] = 0.0
        px.set(0.0)
        lex()
        M.SOR(pb, px, omega=1.5, sortype=st)
        agree = np.allclose(px.getArray(), x.ravel(), rtol=1e-10, atol=1e-12)
        rows.append(["x".join(map(str, shape)), n, f"{t_lex * 1e3:.2f}", f"{tp * 1e3:.2f}",
                     f"{tp / t_lex:.2f}", "yes" if agree else "NO",
                     f"{t_rb1 * 1e3 * 2:.2f}", f"{t_rbN * 1e3 * 2:.2f}",
                     "yes" if tp / t_lex >= 1.0 else "no"])
        for o in (M, pb, px):
            o.destroy()
        print(rows[-1], flush=True)
    return rows


def csr_matrices(quick):
    from hybridsolve import get_family

    out = []
    for name, opts, n in ([("darcy", {}, 128 if quick else 512),
                           ("grid", {"dim": 3}, 32 if quick else 96),
                           ("poisson", {"domain": "lshape_hole"}, 64 if quick else 400)]):
        s = get_family(name, n, count=1, **opts).system(0, MPI.COMM_SELF)
        A, _ = s.to_scipy()
        s.destroy()
        out.append((f"{name} {' '.join(f'{k}={v}' for k, v in opts.items())} n={n}".strip(), A))
    return out


def bench_csr(quick, reps):
    rows_mv, rows_sor = [], []
    for label, A in csr_matrices(quick):
        A = A.tocsr()
        A.sort_indices()
        n = A.shape[0]
        x = np.random.default_rng(0).standard_normal(n)
        y = np.empty(n)
        args = (A.indptr, A.indices, A.data)
        uargs = (csr.unsigned(A.indptr), csr.unsigned(A.indices), A.data)
        csr.spmv(*args, x, y)
        t1 = with_threads(1, lambda: median_time(lambda: csr.spmv(*args, x, y), reps))
        tN = with_threads(NTHREADS, lambda: median_time(lambda: csr.spmv(*args, x, y), reps))
        ts = median_time(lambda: A @ x, reps)
        M = mat_from_local_csr(MPI.COMM_SELF, n, A)
        px, py = M.createVecs()
        px.getArray()[:] = x
        tp = median_time(lambda: M.mult(px, py), reps)
        rows_mv.append([label, n, A.nnz, f"{t1 * 1e3:.2f}", f"{tN * 1e3:.2f}", f"{tp * 1e3:.2f}",
                        f"{ts * 1e3:.2f}", f"{tp / t1:.2f}", "yes" if t1 <= tp * TOL else "no"])
        idiag = 1.0 / csr.diagonal(*uargs)
        dpos = csr.diagonal_positions(*uargs[:2])
        b = A @ x
        z = np.zeros(n)
        S = (abs(A) + abs(A.T)).tocsr()
        colours = csr.colour_groups(csr.greedy_colouring(S.indptr, S.indices))
        tl = median_time(lambda: csr.sweep(A, b, z, omega=1.5, kind="symmetric", idiag=idiag, dpos=dpos), reps)
        tm1 = with_threads(1, lambda: median_time(lambda: csr.sweep(
            A, b, z, omega=1.5, kind="symmetric", ordering="multicolour", colours=colours, idiag=idiag, dpos=dpos), reps))
        tmN = with_threads(NTHREADS, lambda: median_time(lambda: csr.sweep(
            A, b, z, omega=1.5, kind="symmetric", ordering="multicolour", colours=colours, idiag=idiag, dpos=dpos), reps))
        pb = M.createVecLeft()
        pb.getArray()[:] = b
        st = PETSc.Mat.SORType.SYMMETRY_SWEEP
        tps = median_time(lambda: M.SOR(pb, py, omega=1.5, sortype=st), reps)
        rows_sor.append([label, n, len(colours[0]) - 1, f"{tl * 1e3:.2f}", f"{tps * 1e3:.2f}",
                         f"{tps / tl:.2f}", f"{tm1 * 1e3:.2f}", f"{tmN * 1e3:.2f}",
                         "yes" if tl <= tps * TOL else "no"])
        for o in (M, px, py, pb):
            o.destroy()
        print(rows_mv[-1], rows_sor[-1], flush=True)
    return rows_mv, rows_sor


def bench_dense(reps):
    rows = []

    @numba.njit(parallel=True, cache=True)
    def vtw(V, w, out):
        k, n = V.shape
        for j in numba.prange(k):
            acc = 0.0
            for i in range(n):
                acc += V[j, i] * w[i]
            out[j] = acc

    @numba.njit(parallel=True, cache=True)
    def vy(V, y, out):
        k, n = V.shape
        for i in numba.prange(n):
            acc = 0.0
            for j in range(k):
                acc += V[j, i] * y[j]
            out[i] = acc

    for n, k in ((10**5, 20), (10**6, 20), (10**6, 40)):
        V = np.random.default_rng(0).standard_normal((k, n))
        w = np.random.default_rng(1).standard_normal(n)
        yk = np.random.default_rng(2).standard_normal(k)
        o1, o2 = np.empty(k), np.empty(n)
        vtw(V, w, o1)
        vy(V, yk, o2)
        rows.append([n, k, f"{median_time(lambda: V @ w, reps) * 1e3:.2f}",
                     f"{median_time(lambda: vtw(V, w, o1), reps) * 1e3:.2f}",
                     f"{median_time(lambda: yk @ V, reps) * 1e3:.2f}",
                     f"{median_time(lambda: vy(V, yk, o2), reps) * 1e3:.2f}"])
        print(rows[-1], flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    args = ap.parse_args()
    reps = 5 if args.quick else 11
    bw1 = with_threads(1, bandwidth)
    bwN = with_threads(NTHREADS, bandwidth)
    print(f"STREAM triad: {bw1 / 1e9:.1f} GB/s (1 thread), {bwN / 1e9:.1f} GB/s ({NTHREADS} threads)")
    sizes = ([(256, 256), (512, 512), (32, 32, 32), (64, 64, 64)] if args.quick else
             [(256, 256), (512, 512), (1024, 1024), (2048, 2048), (64, 64, 64), (96, 96, 96),
              (128, 128, 128), (160, 160, 160)])
    rows = bench_apply(sizes, bw1, bwN, reps)
    write_table("stencil_apply", "Matrix-free stencil apply (Numba) vs PETSc AIJ MatMult", [
        "grid", "unknowns", "kernel 1 thr [ms]", f"kernel {NTHREADS} thr [ms]", "PETSc MatMult [ms]",
        "speed-up vs PETSc (1 thr)", "bandwidth bound [ms]", "% of bound (1 thr)",
        f"% of bound ({NTHREADS} thr)", "PETSc % of its bound", "goals met"], rows,
        notes=f"STREAM triad measured in the same run: {bw1 / 1e9:.1f} GB/s on 1 thread, "
              f"{bwN / 1e9:.1f} GB/s on {NTHREADS}. Bound = bytes / triad bandwidth with the "
              "STREAM count (no write-allocate): matrix-free (dim + 2) x 8 B per unknown (x, y, "
              "one face array per axis), AIJ 12 B per nonzero + row pointers + x, y. Goals: >= "
              "1.5x PETSc and >= 80% of the bound (1 thread). Median of repeats; variable "
              "coefficient exp(0.5 N(0,1)), no obstacles.")
    sor_sizes = [s for s in sizes if np.prod(s) <= (2**20 if not args.quick else 2**16)]
    rows = bench_sor(sor_sizes, reps)
    write_table("sor_sweep", "Grid SOR sweep (Numba) vs PETSc MatSOR on AIJ", [
        "grid", "unknowns", "lexicographic SSOR sweep [ms]", "PETSc MatSOR SSOR [ms]",
        "speed-up", "same result", "red-black SSOR-equiv. 1 thr [ms]",
        f"red-black SSOR-equiv. {NTHREADS} thr [ms]", "goal met (>= PETSc)"], rows,
        notes="One symmetric (forward + backward) sweep, omega 1.5, nonzero initial guess; "
              "'same result' checks our lexicographic sweep against PETSc's to 1e-10. Red-black: "
              "two forward red-black sweeps (the same work), a different ordering and a "
              "different preconditioner, parallel over threads.")
    mv, so = bench_csr(args.quick, reps)
    write_table("csr", "CSR kernels (Numba) vs PETSc (C) vs SciPy", [
        "matrix", "rows", "nnz", "SpMV 1 thr [ms]", f"SpMV {NTHREADS} thr [ms]",
        "PETSc MatMult [ms]", "SciPy A@x [ms]", "PETSc time / ours (1 thr)",
        "goal met (1 thr no slower than PETSc, 5% noise)"], mv,
        notes="Matrices from the families (P1 Darcy, 7-point 3-D grid, P1 Poisson on the gmsh "
              "L-shape with a hole), canonical numbering.")
    path = Path(__file__).resolve().parent / "results" / "csr.md"
    with open(path, "a") as fh:
        fh.write("\n## CSR SOR sweep\n\n| matrix | rows | colours | lexicographic SSOR [ms] | "
                 "PETSc MatSOR SSOR [ms] | PETSc time / ours | multicolour SSOR 1 thr [ms] | "
                 f"multicolour SSOR {NTHREADS} thr [ms] | goal met (lex no slower, 5% noise) |\n"
                 "|---|---|---|---|---|---|---|---|---|\n")
        for r in so:
            fh.write("| " + " | ".join(str(c) for c in r) + " |\n")
    rows = bench_dense(reps)
    write_table("dense_blocks", "Block products V^T w and V y: NumPy (BLAS) vs a Numba loop", [
        "n", "k", "NumPy V@w [ms]", "Numba V^T w [ms]", "NumPy y@V [ms]", "Numba V y [ms]"], rows,
        notes="V stored as k rows of length n (a Krylov basis). Decides whether a kernel is "
              "worth writing for the recycling methods.")


if __name__ == "__main__":
    main()
