"""Iterative physics supervision (NPSolver, issue 15): label-free losses for a network that
predicts the solution of an assembled SPD system, and the batched Jacobi-PCG they stand on.

A training step's samples may live on different meshes (different sizes): they are stacked into
one block-diagonal CSR system (:class:`SystemBatch`), so one sparse product serves the whole
batch and every reduction is per sample (``index_add`` over the sample of each row). Everything
is torch, so the same code runs on a GPU when the tensors are there; the PCG runs in float64
whatever the model's dtype.

* :func:`batched_jacobi_pcg`: K steps of Jacobi-preconditioned CG from a given start, per sample
  (the iterates are PETSc's ``-ksp_type cg -pc_type jacobi`` with a nonzero initial guess, to
  round-off: tested);
* :func:`supervision_loss`: ``p_ref = PCG(A, b, x0 = p, K)`` with no gradient, in float64, then
  RMSE(p_ref - p) per sample, averaged: the target is detached (the stop-gradient the paper
  shows is essential);
* :func:`residual_loss`: the raw residual ||b - A p|| / ||b|| baseline the paper compares with.

No PETSc and no DOLFINx here: a system comes in as SciPy CSR (e.g. from
:func:`~hybridsolve.la.petsc.gather_csr_canonical` of a DOLFINx-assembled matrix).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from hybridsolve.errors import InputError
from hybridsolve.learned.sparse import torch_csr

__all__ = ["SystemBatch", "batched_jacobi_pcg", "supervision_loss", "residual_loss"]


@dataclass
class SystemBatch:
    """B SPD systems as one block-diagonal float64 CSR tensor.

    Attributes: ``A`` (torch sparse CSR, N x N with N the total size), ``b`` (N,), ``dinv``
    (N,, the inverse diagonal), ``seg`` (N,, the sample of each row), ``sizes`` (B,),
    ``offsets`` (B + 1,).
    """

    A: object
    b: object
    dinv: object
    seg: object
    sizes: np.ndarray
    offsets: np.ndarray

    @property
    def count(self) -> int:
        return len(self.sizes)

    @classmethod
    def from_scipy(cls, mats: list, rhs: list, device: str = "cpu") -> "SystemBatch":
        import torch

        if len(mats) != len(rhs) or not mats:
            raise InputError(f"SystemBatch: {len(mats)} matrices and {len(rhs)} right-hand sides")
        blocks, bs = [], []
        for k, (A, b) in enumerate(zip(mats, rhs)):
            A = sp.csr_matrix(A, dtype=np.float64)
            b = np.asarray(b, dtype=np.float64).reshape(-1)
            if A.shape[0] != A.shape[1] or A.shape[0] != b.shape[0]:
                raise InputError(f"SystemBatch: sample {k}: matrix {A.shape} and right-hand side "
                                 f"({b.shape[0]},) do not match")
            if not (np.isfinite(A.data).all() and np.isfinite(b).all()):
                raise InputError(f"SystemBatch: sample {k} has NaN/Inf in its matrix or "
                                 "right-hand side")
            d = A.diagonal()
            if (d <= 0).any():
                raise InputError(f"SystemBatch: sample {k}: the diagonal has {(d <= 0).sum()} "
                                 "entries <= 0: not an SPD matrix (Jacobi-PCG needs one)")
            blocks.append(A)
            bs.append(b)
        sizes = np.array([A.shape[0] for A in blocks], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        M = sp.block_diag(blocks, format="csr")
        M.sort_indices()
        At = torch_csr(M, torch.float64, device)
        seg = torch.from_numpy(np.repeat(np.arange(len(sizes)), sizes)).to(device)
        return cls(A=At, b=torch.from_numpy(np.concatenate(bs)).to(device),
                   dinv=torch.from_numpy(1.0 / M.diagonal()).to(device), seg=seg,
                   sizes=sizes, offsets=offsets)

    def matvec(self, x):
        return (self.A @ x.unsqueeze(1)).squeeze(1)

    def dot(self, u, v):
        """Per-sample inner products (B,)."""
        import torch

        out = torch.zeros(self.count, dtype=u.dtype, device=u.device)
        return out.index_add_(0, self.seg, u * v)

    def split(self, x) -> list:
        return [x[self.offsets[k]:self.offsets[k + 1]] for k in range(self.count)]


def batched_jacobi_pcg(batch: SystemBatch, x0, steps: int):
    """``steps`` iterations of Jacobi-PCG on every sample of ``batch`` from ``x0`` (N,), float64.

    Returns the iterate (N,). A sample whose residual reaches exactly zero stays where it is.
    """
    import torch

    if steps < 0:
        raise InputError(f"batched_jacobi_pcg: steps must be >= 0, got {steps}")
    x = x0.to(torch.float64).clone()
    r = batch.b - batch.matvec(x)
    z = batch.dinv * r
    p = z.clone()
    rz = batch.dot(r, z)
    for _ in range(steps):
        Ap = batch.matvec(p)
        pAp = batch.dot(p, Ap)
        alpha = torch.where(pAp > 0, rz / torch.where(pAp > 0, pAp, 1.0), 0.0)
        a = alpha[batch.seg]
        x = x + a * p       # out of place: a caller may differentiate through the steps
        r = r - a * Ap
        z = batch.dinv * r
        rz_new = batch.dot(r, z)
        beta = torch.where(rz > 0, rz_new / torch.where(rz > 0, rz, 1.0), 0.0)
        p = z + beta[batch.seg] * p
        rz = rz_new
    return x


def _rmse_per_sample(batch: SystemBatch, e):
    import torch

    n = torch.from_numpy(batch.sizes).to(e.device, e.dtype)
    return torch.sqrt(batch.dot(e, e) / n)


def supervision_loss(batch: SystemBatch, p, steps: int = 40):
    """The NPSolver loss: mean over samples of RMSE(p_ref - p), p_ref = ``steps`` Jacobi-PCG
    iterations from p (no gradient, float64). ``p`` (N,) carries the model's graph; the
    gradient flows through p only. Returns (loss, p_ref)."""
    import torch

    if not torch.isfinite(p).all():
        raise InputError("supervision_loss: the prediction has NaN/Inf")
    with torch.no_grad():
        p_ref = batched_jacobi_pcg(batch, p.detach(), steps)
    e = p_ref.to(p.dtype) - p
    return _rmse_per_sample(batch, e).mean(), p_ref


def residual_loss(batch: SystemBatch, p):
    """The raw residual baseline: mean over samples of ||b - A p|| / ||b||."""
    import torch

    r = batch.b - batch.matvec(p.to(torch.float64))   # the cast keeps the graph
    return torch.sqrt(batch.dot(r, r) / batch.dot(batch.b, batch.b)).mean()
