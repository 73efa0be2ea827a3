"""Numba kernels (CPU twins, and GPU twins on the CUDA simulator) against plain numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from hybridsolve.kernels import csr, sor, stencil
from hybridsolve.problems.grid import face_coefficients, stencil_csr

pytestmark = pytest.mark.serial  # pure kernels: nothing to distribute


def _problem(shape, seed, masked=True, coef=True):
    rng = np.random.default_rng(seed)
    c = np.exp(rng.standard_normal(tuple(s + 2 for s in shape))) if coef else None
    mask = (rng.random(shape) > 0.25) if masked else None
    faces = face_coefficients(shape, coef=c, mask=mask, scale=1.0)
    return rng, faces


def ref_apply(faces, x, lo, hi, shift):
    """Plain numpy: pad x with the ghost planes (axis 0) and zeros (other axes), sum the faces."""
    dim = x.ndim
    xp = np.concatenate([lo[None], x, hi[None]], axis=0)
    xp = np.pad(xp, [(0, 0)] + [(1, 1)] * (dim - 1))
    core = tuple(slice(1, -1) for _ in range(dim))
    s = np.zeros_like(x)
    y = np.zeros_like(x)
    for ax in range(dim):
        lo_f = faces[ax][tuple(slice(0, -1) if a == ax else slice(None) for a in range(dim))]
        hi_f = faces[ax][tuple(slice(1, None) if a == ax else slice(None) for a in range(dim))]
        s += lo_f + hi_f
        down = tuple(slice(0, -2) if a == ax else core[a] for a in range(dim))
        up = tuple(slice(2, None) if a == ax else core[a] for a in range(dim))
        y -= lo_f * xp[down] + hi_f * xp[up]
    d = np.where(s != 0, s + shift, 1.0)
    return y + d * x


def ref_sor(A, b, x, omega, order, fshift=0.0):
    """Plain Python SOR over the rows of a SciPy CSR matrix in the given order."""
    A = A.tocsr()
    x = x.copy()
    for i in order:
        row = slice(A.indptr[i], A.indptr[i + 1])
        cols, vals = A.indices[row], A.data[row]
        diag = vals[cols == i].sum()
        off = vals[cols != i] @ x[cols[cols != i]]
        x[i] = (1 - omega) * x[i] + omega * (b[i] - off) / (diag + fshift)
    return x


@pytest.mark.parametrize("shape", [(7, 9), (1, 5), (13, 4), (5, 6, 7), (3, 1, 4), (6, 5, 9)])
@pytest.mark.parametrize("masked", [False, True])
def test_stencil_apply_matches_numpy(shape, masked):
    rng, faces = _problem(shape, sum(shape), masked)
    x = rng.standard_normal(shape)
    lo, hi = rng.standard_normal(shape[1:]), rng.standard_normal(shape[1:])
    y = stencil.apply(faces, x, lo, hi, shift=0.7)
    np.testing.assert_allclose(y, ref_apply(faces, x, lo, hi, 0.7), rtol=1e-13, atol=1e-12)
    # and the assembled rows describe the same operator (zero ghosts)
    A = stencil_csr(shape, faces=faces, shift=0.7)
    np.testing.assert_allclose(stencil.apply(faces, x, shift=0.7).ravel(), A @ x.ravel(),
                               rtol=1e-13, atol=1e-12)


def _lex_order(shape, backward=False):
    n = int(np.prod(shape))
    return range(n - 1, -1, -1) if backward else range(n)


def _rb_order(shape, first):
    idx = np.indices(shape).sum(axis=0).ravel() % 2
    flat = np.arange(idx.size)
    return list(flat[idx == first]) + list(flat[idx == 1 - first])


@pytest.mark.parametrize("shape", [(6, 7), (9, 4), (4, 5, 3), (3, 6, 5)])
@pytest.mark.parametrize("kind", ["forward", "backward", "symmetric"])
@pytest.mark.parametrize("ordering", ["lexicographic", "redblack"])
def test_grid_sor_matches_reference(shape, kind, ordering):
    rng, faces = _problem(shape, 3 + sum(shape))
    A = stencil_csr(shape, faces=faces, shift=0.2)
    b, x0 = rng.standard_normal(shape), rng.standard_normal(shape)
    omega, fshift = 1.3, 0.1
    x = sor.sweep(faces, b, x0.copy(), omega=omega, kind=kind, ordering=ordering, shift=0.2,
                  fshift=fshift)
    ref = x0.ravel()
    passes = {"forward": [0], "backward": [1], "symmetric": [0, 1]}[kind]
    for d in passes:
        order = _lex_order(shape, d == 1) if ordering == "lexicographic" else _rb_order(shape, d)
        ref = ref_sor(A, b.ravel(), ref, omega, order, fshift)
    np.testing.assert_allclose(x.ravel(), ref, rtol=1e-12, atol=1e-12)


def test_grid_sor_uses_ghost_planes():
    shape = (5, 6)
    rng, faces = _problem(shape, 1, masked=False)
    b, lo, hi = rng.standard_normal(shape), rng.standard_normal(6), rng.standard_normal(6)
    x = sor.sweep(faces, b, np.zeros(shape), kind="forward", lo=lo, hi=hi)
    # ghosts act as known values: same as zero ghosts with b corrected by the coupling
    b2 = b.copy()
    b2[0] += faces[0][0] * lo
    b2[-1] += faces[0][-1] * hi
    x2 = sor.sweep(faces, b2, np.zeros(shape), kind="forward")
    np.testing.assert_allclose(x, x2, rtol=1e-13)


def _random_spd(n, seed, density=0.08):
    rng = np.random.default_rng(seed)
    M = sp.random(n, n, density=density, random_state=rng)
    M = M + M.T
    return (M + sp.diags(np.asarray(abs(M).sum(axis=1)).ravel() + 1.0)).tocsr(), rng


@pytest.mark.parametrize("n", [1, 17, 60, 151])
def test_csr_spmv_matches_scipy(n):
    A, rng = _random_spd(n, n)
    x = rng.standard_normal(n)
    y = np.empty(n)
    csr.spmv(A.indptr, A.indices, A.data, x, y)
    np.testing.assert_allclose(y, A @ x, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("n", [23, 80])
@pytest.mark.parametrize("kind", ["forward", "backward", "symmetric"])
def test_csr_sor_lexicographic_matches_reference(n, kind):
    A, rng = _random_spd(n, 7 * n)
    b, x0 = rng.standard_normal(n), rng.standard_normal(n)
    x = csr.sweep(A, b, x0.copy(), omega=1.4, kind=kind, fshift=0.05)
    ref = x0
    for d in {"forward": [0], "backward": [1], "symmetric": [0, 1]}[kind]:
        ref = ref_sor(A, b, ref, 1.4, _lex_order((n,), d == 1), 0.05)
    np.testing.assert_allclose(x, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [30, 97])
def test_greedy_colouring_and_multicolour_sor(n):
    A, rng = _random_spd(n, 11 * n, density=0.1)
    colour = csr.greedy_colouring(A.indptr, A.indices)
    r, c = A.nonzero()
    off = r != c
    assert np.all(colour[r[off]] != colour[c[off]]), "adjacent rows share a colour"
    ptr, rows = csr.colour_groups(colour)
    b, x0 = rng.standard_normal(n), rng.standard_normal(n)
    x = csr.sweep(A, b, x0.copy(), omega=1.2, kind="symmetric", ordering="multicolour",
                  colours=(ptr, rows))
    order_f = list(rows)
    order_b = [q for cc in range(len(ptr) - 2, -1, -1) for q in rows[ptr[cc]:ptr[cc + 1]]]
    ref = ref_sor(A, b, ref_sor(A, b, x0, 1.2, order_f), 1.2, order_b)
    np.testing.assert_allclose(x, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ordering,kind", [("lexicographic", "symmetric"), ("redblack", "forward")])
def test_sor_converges_on_grid_poisson(ordering, kind):
    # (a symmetric red-black sweep updates one colour twice in a row: for omega > 1 that acts
    # as under-relaxation of that colour, so red-black is used forward here)
    shape = (12, 10)
    _, faces = _problem(shape, 5, masked=False)
    A = stencil_csr(shape, faces=faces)
    xs = np.random.default_rng(0).standard_normal(shape)
    b = (A @ xs.ravel()).reshape(shape)
    x = np.zeros(shape)
    for _ in range(300):
        sor.sweep(faces, b, x, omega=1.6, kind=kind, ordering=ordering)
    assert np.linalg.norm(x - xs) < 1e-8 * np.linalg.norm(xs)


# --- GPU twins (numba-cuda; the CUDA simulator in CI: tiny sizes) --------------------------
cuda = pytest.importorskip("numba.cuda")


@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 5)])
def test_cuda_stencil_apply(shape):
    from hybridsolve.kernels import stencil_cuda

    rng, faces = _problem(shape, 2)
    x = rng.standard_normal(shape)
    lo, hi = rng.standard_normal(shape[1:]), rng.standard_normal(shape[1:])
    d = [cuda.to_device(f) for f in faces]
    y = stencil_cuda.apply(d, cuda.to_device(x), cuda.to_device(lo), cuda.to_device(hi), 0.3)
    np.testing.assert_allclose(y.copy_to_host(), ref_apply(faces, x, lo, hi, 0.3), rtol=1e-13,
                               atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 6), (3, 4, 3)])
@pytest.mark.parametrize("ordering", ["lexicographic", "redblack"])
def test_cuda_grid_sor(shape, ordering):
    from hybridsolve.kernels import sor_cuda

    rng, faces = _problem(shape, 4)
    b, x0 = rng.standard_normal(shape), rng.standard_normal(shape)
    cpu = sor.sweep(faces, b, x0.copy(), omega=1.5, kind="symmetric", ordering=ordering)
    d = [cuda.to_device(f) for f in faces]
    xg = cuda.to_device(x0.copy())
    sor_cuda.sweep(d, cuda.to_device(b), xg, omega=1.5, kind="symmetric", ordering=ordering)
    np.testing.assert_allclose(xg.copy_to_host(), cpu, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ordering", ["lexicographic", "multicolour"])
def test_cuda_csr_spmv_and_sor(ordering):
    from hybridsolve.kernels import csr_cuda

    A, rng = _random_spd(24, 5)
    x = rng.standard_normal(24)
    y = cuda.device_array(24)
    csr_cuda.spmv[1, 32](cuda.to_device(A.indptr), cuda.to_device(A.indices), cuda.to_device(A.data),
                         cuda.to_device(x), y)
    np.testing.assert_allclose(y.copy_to_host(), A @ x, rtol=1e-13)
    b = rng.standard_normal(24)
    cpu = csr.sweep(A, b, x.copy(), omega=1.3, kind="symmetric", ordering=ordering)
    gpu = csr_cuda.sweep(A, b, x.copy(), omega=1.3, kind="symmetric", ordering=ordering)
    np.testing.assert_allclose(gpu.copy_to_host(), cpu, rtol=1e-12, atol=1e-12)
