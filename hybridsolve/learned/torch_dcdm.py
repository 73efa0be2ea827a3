"""DCDM in torch alone, on any torch device: a matrix-free 5/7-point stencil and the same
iteration as :class:`hybridsolve.learned.petsc.DCDM` (window of A-orthogonalised directions,
exact line search, true residual every iteration, the network's output masked on solid cells).

For a GPU run of the grid family (``benchmarks/gpu_check.py``); on the CPU the PETSc DCDM is the
one to use (it is the same method, with PETSc's options, monitors and fallbacks). No fallback
here: a non-finite direction or a non-positive curvature ends the solve with ``reason < 0``.
"""

from __future__ import annotations

import time

import numpy as np
import torch

__all__ = ["StencilTorch", "torch_dcdm"]


class StencilTorch:
    """``y = A u`` of the grid family's stencil from its face coefficients
    (:func:`hybridsolve.problems.grid.face_coefficients`), on ``device`` in ``dtype``: Dirichlet
    zero outside the box, no flux through faces touching solids, solid rows the identity."""

    def __init__(self, faces, mask: np.ndarray, device="cpu", dtype=torch.float64) -> None:
        self.shape = tuple(mask.shape)
        self.dim = len(self.shape)
        self.w = [torch.as_tensor(f, device=device, dtype=dtype) for f in faces]
        self.fluid = torch.as_tensor(mask.astype(float), device=device, dtype=dtype)
        diag = torch.zeros(self.shape, device=device, dtype=dtype)
        for ax, w in enumerate(self.w):
            n = self.shape[ax]
            diag += w.narrow(ax, 0, n) + w.narrow(ax, 1, n)
        self.diag = torch.where(self.fluid > 0, diag, torch.ones_like(diag))

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        """``u``: (..., *shape) -> A u, same shape."""
        y = self.diag * u
        lead = u.dim() - self.dim
        for ax, w in enumerate(self.w):
            a = lead + ax
            n = self.shape[ax]
            inner = w.narrow(ax, 1, n - 1)              # faces between points p-1 and p
            lo = u.narrow(a, 0, n - 1)
            hi = u.narrow(a, 1, n - 1)
            y.narrow(a, 1, n - 1).sub_(inner * lo)      # - w[p] u[p-1]
            y.narrow(a, 0, n - 1).sub_(inner * hi)      # - w[p+1] u[p+1]
        return y * self.fluid + (1 - self.fluid) * u


def torch_dcdm(A: StencilTorch, b: torch.Tensor, model, *, rtol: float = 1e-6,
               max_it: int = 1000, window: int = 2, model_dtype=torch.float32,
               levels=None) -> dict:
    """Solve ``A x = b`` (``b``: the grid's shape) by DCDM with ``model``; returns iterations,
    reason (> 0 converged, < 0 failed), relative true residual, time and ``x``. ``levels``: the
    operator's hierarchy for a model that takes one (MGNet: ``model.prepare(A_csr, shape,
    device=...)``, built by the caller, outside the time)."""
    from hybridsolve.errors import InputError

    if getattr(model, "uses_operator", False) and levels is None:
        raise InputError(f"torch_dcdm: {type(model).__name__} needs the operator's levels "
                         "(levels=model.prepare(A_csr, shape, device=...))")
    if b.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    mask = A.fluid
    x = torch.zeros_like(b)
    r = b - A(x)
    bnorm = float(torch.linalg.vector_norm(b))
    dirs: list = []
    its, reason = 0, 0
    uses_mask = getattr(model, "uses_mask", False)
    m_in = mask.to(model_dtype)[None, None]
    with torch.no_grad():
        while True:
            rn = float(torch.linalg.vector_norm(r))
            if rn <= rtol * bnorm:
                reason = 2
                break
            if its >= max_it:
                reason = -3
                break
            inp = (r / rn).to(model_dtype)[None, None]
            if levels is not None:
                q = model(inp, levels)
            else:
                q = model(inp, m_in) if uses_mask else model(inp)
            q = q[0, 0].to(b.dtype) * mask
            if float((q * r).sum()) < 0:
                q = -q
            for p, Ap, pAp in dirs:
                q = q - (q * Ap).sum() / pAp * p
            Aq = A(q)
            qAq = float((q * Aq).sum())
            if not np.isfinite(qAq) or qAq <= 0:
                reason = -8 if np.isfinite(qAq) else -9
                break
            alpha = float((q * r).sum()) / qAq
            x = x + alpha * q
            r = b - A(x)
            dirs.append((q, Aq, qAq))
            if len(dirs) > window:
                dirs.pop(0)
            its += 1
    if b.is_cuda:
        torch.cuda.synchronize()
    return {"iterations": its, "reason": reason, "time": time.perf_counter() - t0,
            "relative_residual": float(torch.linalg.vector_norm(b - A(x))) / bnorm, "x": x}
