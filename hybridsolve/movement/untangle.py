"""Local untangling of a moved simplex mesh, and the whole-mesh view it (and learned movers) use.

:func:`untangle` repairs a mesh whose map inverts a few cells (a Monge–Ampère map that folds
next to a re-entrant corner, a learned mover's output): it frees the vertices of the inverted
cells and of ``rings`` layers of neighbours around them and minimises, over those vertices only,
the simultaneous untangling and smoothing objective of Escobar et al. (2003):

    sum over patch cells K of  |S_K|_F^2 / (d h(sigma_K)^(2/d)),   S_K = J_K W_K^-1,
    h(sigma) = (sigma + sqrt(sigma^2 + 4 delta^2)) / 2,              sigma_K = det S_K,

where J_K is the cell's edge matrix and W_K the same cell's on the computational mesh, so the
objective asks for the computational cell's shape at any size and ``h`` keeps it finite (and
decreasing toward positive volumes) while cells are still inverted. Vertices outside the patch
keep the mover's positions (its adaptation); boundary vertices in the patch slide along their
segments (their tangent projector), corners and pinned vertices stay. The patch grows when the
repair fails. Pure NumPy/SciPy on one process: :class:`GlobalVertices` gathers the mesh to
rank 0 and scatters the result back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.optimize
import scipy.sparse as sps

from hybridsolve.stack import MPI

__all__ = ["GlobalVertices", "UntangleReport", "untangle", "signed_measure"]


class GlobalVertices:
    """A mover's mesh as one process sees it: global vertex coordinates (P1 dof order), owned
    cells and boundary projectors gathered on rank 0, and the way back.

    Attributes (rank 0; ``None`` elsewhere): ``cells`` (ncells, d+1) global vertex numbers,
    ``projector`` (nverts, d, d), ``xi`` (nverts, d) computational coordinates, ``n``.
    """

    def __init__(self, space: Any, xi: np.ndarray) -> None:
        self.space, self.comm = space, space.comm
        im = space.V.dofmap.index_map
        self.n_owned = space.n_owned
        self.global_of_local = np.asarray(im.local_to_global(
            np.arange(space.n_dofs, dtype=np.int32)), dtype=np.int64)
        self.n = im.size_global
        tdim = space.mesh.topology.dim
        nc = space.mesh.topology.index_map(tdim).size_local
        cells_local = self.global_of_local[space.V.dofmap.list[:nc]]
        parts = self.comm.gather(cells_local, root=0)
        self.cells = np.concatenate(parts) if self.comm.rank == 0 else None
        self.projector = self.gather(space.projector.reshape(space.n_dofs, -1))
        if self.projector is not None:
            self.projector = self.projector.reshape(self.n, space.d, space.d)
        self.xi = self.gather(xi)

    def gather(self, arr: np.ndarray) -> np.ndarray | None:
        """A (local dofs, k) vertex array as (global vertices, k) on rank 0 (owned rows)."""
        arr = np.asarray(arr)
        parts = self.comm.gather((self.global_of_local[: self.n_owned], arr[: self.n_owned]),
                                 root=0)
        if self.comm.rank != 0:
            return None
        out = np.empty((self.n, *arr.shape[1:]), dtype=arr.dtype)
        for idx, vals in parts:
            out[idx] = vals
        return out

    def scatter(self, arr: np.ndarray | None) -> np.ndarray:
        """A rank-0 (global vertices, k) array back to every rank's local dofs (ghosts too)."""
        full = self.comm.bcast(arr, root=0)
        return np.ascontiguousarray(full[self.global_of_local])


def signed_measure(cells: np.ndarray, x: np.ndarray) -> np.ndarray:
    """det of each cell's edge matrix (d! times the signed volume)."""
    p = x[cells]
    return np.linalg.det(np.swapaxes(p[:, 1:, :] - p[:, :1, :], 1, 2))


@dataclass
class UntangleReport:
    """What :func:`untangle` did: ``inverted_before``, ``inverted`` (after; 0 on success),
    ``vertices`` moved, ``cells`` in the final patch, ``rings``, ``rounds`` of optimisation."""

    inverted_before: int
    inverted: int
    vertices: int = 0
    cells: int = 0
    rings: int = 0
    rounds: int = 0

    def to_dict(self) -> dict:
        return {k: int(v) for k, v in self.__dict__.items()}


def _objective(cells, W_inv, x0, free, proj, delta, d):
    """Escobar's objective on ``cells`` and its gradient with respect to the free vertices."""
    nfree = len(free)

    def f(z):
        x = x0.copy()
        x[free] = z.reshape(nfree, d)
        p = x[cells]
        J = np.swapaxes(p[:, 1:, :] - p[:, :1, :], 1, 2)          # (nc, d, d), columns = edges
        S = J @ W_inv
        sig = np.linalg.det(S)
        root = np.sqrt(sig * sig + 4.0 * delta * delta)
        h = 0.5 * (sig + root)
        F = np.einsum("kij,kij->k", S, S)
        hp = h ** (2.0 / d)
        eta = F / (d * hp)
        # d eta / dS = 2 S / (d h^(2/d)) - (2/d) F h' / (d h^(2/d+1)) * cof(S)
        dh = 0.5 * (1.0 + sig / root)
        cof = _cofactor(S)
        G_S = 2.0 * S / (d * hp)[:, None, None] - ((2.0 / d) * F * dh / (d * hp * h))[:, None, None] * cof
        G_J = G_S @ np.swapaxes(W_inv, 1, 2)                       # dE/dJ = dE/dS W^-T
        g = np.zeros_like(x)
        cols = np.swapaxes(G_J, 1, 2)                             # (nc, d edges, d coords)
        for i in range(d):
            np.add.at(g, cells[:, i + 1], cols[:, i])
        np.add.at(g, cells[:, 0], -cols.sum(axis=1))
        gf = np.einsum("nij,nj->ni", proj[free], g[free])
        return float(eta.sum()), gf.ravel()

    return f


def _cofactor(S: np.ndarray) -> np.ndarray:
    """Cofactor matrices (d = 2 or 3), safe for singular S."""
    if S.shape[1] == 2:
        return np.stack([np.stack([S[:, 1, 1], -S[:, 1, 0]], -1),
                         np.stack([-S[:, 0, 1], S[:, 0, 0]], -1)], 1)
    c = np.empty_like(S)
    for i in range(3):
        for j in range(3):
            rows = [r for r in range(3) if r != i]
            colsj = [k for k in range(3) if k != j]
            m = S[:, rows][:, :, colsj]
            c[:, i, j] = (-1) ** (i + j) * (m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0])
    return c


def untangle(cells: np.ndarray, x: np.ndarray, xi: np.ndarray, projector: np.ndarray, *,
             rings: int = 2, max_rings: int = 64, rounds: int = 8,
             margin: float = 1e-3) -> tuple[np.ndarray, UntangleReport]:
    """Repair the inverted cells of ``x`` (a map of the computational mesh ``xi``) locally.

    Args:
        cells: (ncells, d+1) vertex numbers; x, xi: (nverts, d) coordinates;
        projector: (nverts, d, d) each vertex's allowed-motion projector (zero = fixed).
        rings: vertex-neighbour layers freed around the inverted cells (doubled on failure,
            up to ``max_rings``).
        margin: a cell counts as untangled when its volume ratio to the computational cell
            (sigma) exceeds ``margin`` (a sliver of the computational cell is not accepted).

    Returns:
        (new coordinates, report); ``report.inverted == 0`` on success. Vertices outside the
        final patch are returned exactly as given.
    """
    d = x.shape[1]
    Wm = np.swapaxes(xi[cells][:, 1:, :] - xi[cells][:, :1, :], 1, 2)
    W_inv = np.linalg.inv(Wm)

    def sigma(y):
        p = y[cells]
        return np.linalg.det(np.swapaxes(p[:, 1:, :] - p[:, :1, :], 1, 2) @ W_inv)

    sig = sigma(x)
    bad = np.flatnonzero(sig <= margin)
    rep = UntangleReport(inverted_before=int(np.count_nonzero(sig <= 0)), inverted=0)
    if len(bad) == 0:
        return x.copy(), rep
    n = len(x)
    nc = len(cells)
    C = sps.csr_matrix((np.ones(cells.size), (np.repeat(np.arange(nc), d + 1), cells.ravel())),
                       shape=(nc, n))
    adj = (C.T @ C).tocsr()
    movable = np.einsum("nii->n", projector) > 1e-12
    y = x.copy()
    k = rings
    while True:
        seed = np.zeros(n, bool)
        seed[np.unique(cells[bad])] = True
        region = seed.copy()
        for _ in range(k):
            region |= (adj @ region.astype(float)) > 0
        patch = np.flatnonzero((C @ region.astype(float)) > 0)     # cells touching the region
        free = np.flatnonzero(region & movable)
        # vertices of patch cells outside the region stay where they are (the patch's frame)
        y = x.copy()
        rep.rings, rep.cells, rep.vertices = k, len(patch), len(free)
        pc = cells[patch]
        for r in range(rounds):
            s = sigma(y)[patch]
            smin = float(s.min())
            eps = 1e-2
            delta = np.sqrt(eps * (eps - smin)) if smin < eps else 1e-4
            f = _objective(pc, W_inv[patch], y, free, projector, delta, d)
            sol = scipy.optimize.minimize(f, y[free].ravel(), jac=True, method="L-BFGS-B",
                                          options={"maxiter": 500, "gtol": 1e-10})
            z = sol.x.reshape(len(free), d)
            # stay on the boundary segments exactly
            y[free] = x[free] + np.einsum("nij,nj->ni", projector[free], z - x[free])
            rep.rounds = r + 1
            if sigma(y)[patch].min() > margin:
                break
        sig = sigma(y)
        rep.inverted = int(np.count_nonzero(sig <= 0))
        if sig.min() > margin or k >= max_rings or len(patch) == nc:
            if sig.min() <= margin and rep.inverted == 0:
                rep.inverted = int(np.count_nonzero(sig <= margin))
            return y, rep
        k *= 2
