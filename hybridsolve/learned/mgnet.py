"""A learned multigrid network for DCDM whose view grows with the grid (issue: DCDM that scales).

:class:`MGNet` maps a residual on a 2-D or 3-D grid to a search direction by one V-cycle:

* the **levels** come from the operator it is given (:meth:`MGNet.prepare`): Galerkin coarse
  operators ``A_c = P^T A P`` with bilinear (trilinear) interpolation ``P`` over 2x coarser
  grids, the decoupled rows of ``A`` (solid cells, Dirichlet rows) cut out of ``P``, down to a
  coarsest grid of at most ``coarsest`` points per side solved exactly. The number of levels is
  ``log2(N / coarsest)``: every output point sees the whole grid at every size, and the
  coarse grids see the obstacles through their operators (the network is told the geometry by
  the operator, not by a mask channel);
* the **learned part** is the smoother, one convolutional network shared by every level (a
  fixed parameter count, one model for every size): ``S(r) = m d C^T C (d m r)`` with ``C`` a
  bias-free linear stack of convolutions (1 -> channels -> ... channels), ``C^T`` its adjoint
  (transposed convolutions with the same weights), ``d = diag(A_l)^(-1/2)`` per point (the
  per-pixel normalisation that makes one set of weights fit every level's scale) and ``m`` the
  level's coupled-point mask. ``S`` is symmetric positive semi-definite by construction; with
  the same smoother before and after the coarse correction the V-cycle is a symmetric linear
  map.

So ``f(a r) = a f(r)`` exactly for every real ``a`` (linear, no biases: the input-driven share of
the output is 100% at every size) and the network cannot return an ascent direction unless the
learned smoother is unstable (the safeguards of :class:`~hybridsolve.learned.petsc.TorchPC`
still check every output). Untrained (``C`` = sqrt(omega) times the identity) it is a
damped-Jacobi Galerkin V-cycle: the benchmark's control row says what the training adds.
Trained by DCDM's label-free loss (:func:`hybridsolve.learned.training.train_dcdm`,
``--arch mg``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from hybridsolve.errors import InputError
from hybridsolve.learned.sparse import coupled_mask, torch_csr

__all__ = ["MGNet", "Hierarchy", "interpolation_1d", "interpolation"]


def interpolation_1d(n: int) -> sp.csr_matrix:
    """Linear interpolation from ``n // 2`` coarse points (the fine points 1, 3, 5, ...) to ``n``
    fine points on a line with zero (Dirichlet) values beyond both ends: (n, n // 2)."""
    m = n // 2
    rows, cols, vals = [], [], []
    for i in range(n):
        if i % 2 == 1:
            j = (i - 1) // 2
            if j < m:
                rows.append(i), cols.append(j), vals.append(1.0)
        else:
            for j in (i // 2 - 1, i // 2):
                if 0 <= j < m:
                    rows.append(i), cols.append(j), vals.append(0.5)
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, m))


def interpolation(shape: tuple[int, ...]) -> sp.csr_matrix:
    """Tensor-product interpolation from the 2x coarser grid (C order, like the fields)."""
    P = sp.csr_matrix(np.ones((1, 1)))
    for s in shape:
        P = sp.kron(P, interpolation_1d(s), format="csr")
    return P


@dataclass
class Level:
    shape: tuple[int, ...]
    A: object              # torch sparse CSR (n, n)
    d: torch.Tensor        # (1, 1, *shape): m / sqrt(diag A)
    P: object = None       # torch sparse CSR (n, n_coarse), None on the coarsest
    PT: object = None
    lam: float = 0.0       # the estimate of lambda_max(S A) of the unscaled smoother here
    scale: float = 1.0     # the smoother's factor on this level: min(1, cap / lam)


@dataclass
class Hierarchy:
    """The levels :meth:`MGNet.prepare` built for one operator (torch tensors on one device)."""

    levels: list
    coarse_inverse: torch.Tensor   # dense (n_c, n_c) on the coarsest grid
    setup_time: float = 0.0

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [lv.shape for lv in self.levels]

    @property
    def scaled(self) -> int:
        """How many levels' smoothers the spectral cap scaled down."""
        return sum(lv.scale < 1.0 for lv in self.levels[:-1])


class MGNet(nn.Module):
    """One V-cycle with a learned convolutional smoother shared by all levels (module doc).

    Args:
        dim: 2 or 3.
        channels: feature channels of the smoother network ``C``.
        layers: convolutions in ``C`` (3x3 or 3x3x3 each; the smoother's stencil spans
            ``2 * layers`` points each way).
        nu: smoothing steps before and after each coarse correction.
        coarsest: coarsen while the grid has more than this many points per side.
        omega: the damping of the untrained smoother (``C = sqrt(omega) I`` on channel 0).
        cap: the bound on ``lambda_max(S_l A_l)`` kept on every level ``l``: the smoother is
            scaled by ``min(1, cap / lambda)`` there, ``lambda`` estimated by power iteration
            when the levels are built (:meth:`rescale`). Below 2 every level's smoothing is a
            contraction in the energy norm, so the V-cycle stays positive definite on deeper
            hierarchies than training saw; 0 turns it off.
        noise: random weights of this relative size added at construction (training starts
            there: all-zero extra channels would be a stationary point of any loss).
    """

    uses_operator = True

    def __init__(self, dim: int = 2, channels: int = 4, layers: int = 1, nu: int = 1,
                 coarsest: int = 6, omega: float = 0.6, noise: float = 0.0,
                 cap: float = 1.9) -> None:
        super().__init__()
        if dim not in (2, 3):
            raise InputError(f"MGNet: dim must be 2 or 3, got {dim}")
        if channels < 1 or layers < 1 or nu < 1 or coarsest < 2 or not 0 <= cap < 2:
            raise InputError("MGNet: need channels >= 1, layers >= 1, nu >= 1, coarsest >= 2, "
                             "0 <= cap < 2")
        self.config = {"kind": "MGNet", "dim": dim, "channels": channels, "layers": layers,
                       "nu": nu, "coarsest": coarsest, "omega": omega, "cap": cap}
        self.dim, self.nu, self.coarsest, self.cap = dim, nu, coarsest, cap
        k = (3,) * dim
        ws = []
        for i in range(layers):
            cin = 1 if i == 0 else channels
            w = torch.zeros(channels, cin, *k)
            centre = (slice(None), slice(None)) + (1,) * dim
            if i == 0:
                w[(0, 0) + (1,) * dim] = omega ** (0.5 / layers)
            else:
                w[centre] = torch.eye(channels) * omega ** (0.5 / layers)
            if noise:   # other channels start near zero, not at zero (a stationary point)
                w = w + noise * omega ** (0.5 / layers) * torch.randn(w.shape)
            ws.append(nn.Parameter(w))
        self.weights = nn.ParameterList(ws)

    # -- the operator's levels ----------------------------------------------------------------
    def levels_for(self, shape) -> int:
        count, s = 0, tuple(int(v) for v in shape)
        while min(s) > self.coarsest and min(s) >= 4:
            s = tuple(v // 2 for v in s)
            count += 1
        return count

    def prepare(self, A: sp.spmatrix, shape, *, dtype=torch.float32, device="cpu") -> Hierarchy:
        """The Galerkin hierarchy of ``A`` (SciPy, rows in the grid order of ``shape``)."""
        import time

        t0 = time.perf_counter()
        shape = tuple(int(s) for s in shape)
        if len(shape) != self.dim:
            raise InputError(f"MGNet({self.dim}-D) given a {len(shape)}-D grid {shape}")
        A = sp.csr_matrix(A, dtype=np.float64)
        if A.shape != (int(np.prod(shape)),) * 2:
            raise InputError(f"MGNet.prepare: operator {A.shape} does not fit the grid {shape}")
        A.eliminate_zeros()
        levels = []
        for _ in range(self.levels_for(shape)):
            coupled = coupled_mask(A) > 0
            P = interpolation(shape)
            P = sp.diags(coupled.astype(float)) @ P        # no correction on decoupled rows
            P.eliminate_zeros()
            levels.append(self._level(A, shape, coupled, P, dtype, device))
            Ac = (P.T @ A @ P).tocsr()
            Ac.eliminate_zeros()
            # coarse points no fine point interpolates from: identity rows (decoupled)
            empty = np.flatnonzero(np.diff(Ac.indptr) == 0)
            if empty.size:
                Ac = (Ac + sp.csr_matrix((np.ones(empty.size), (empty, empty)),
                                         shape=Ac.shape)).tocsr()
            A, shape = Ac, tuple(s // 2 for s in shape)
        coupled = coupled_mask(A) > 0
        levels.append(self._level(A, shape, coupled, None, dtype, device))
        dense = A.toarray()
        try:
            inv = np.linalg.inv(dense)
        except np.linalg.LinAlgError:
            inv = np.linalg.pinv(dense)
        inv[~coupled, :] = 0.0
        inv[:, ~coupled] = 0.0
        hier = Hierarchy(levels, torch.from_numpy(inv).to(device=device, dtype=dtype))
        self.rescale(hier)
        hier.setup_time = time.perf_counter() - t0
        return hier

    @torch.no_grad()
    def rescale(self, hier: Hierarchy, steps: int = 20, finest: bool = False) -> Hierarchy:
        """Estimate ``lambda_max(S_l A_l)`` of the current weights on the coarse smoothing levels
        (and on the finest one too when ``finest``) and set each level's factor
        ``min(1, cap / lambda)``. The estimate is the largest Ritz value of ``steps`` Lanczos
        steps on ``S A`` (self-adjoint in the energy inner product, fully reorthogonalised, in
        float64) from a fixed start: one smoothing and one operator product per step.

        The finest level is left as trained by default: its operator is the kind training saw
        (the estimate there measures 1.0-1.2 for the shipped models at every size, far below
        the cap), and estimating it costs about as much as ten applications of the whole
        cycle. The Galerkin operators of deeper levels are the ones no training saw; there the
        unscaled estimate grows with depth (2.4, 3.3, 4.3 on the 2nd-4th levels of a 64^3
        grid for mg3d). :meth:`prepare` calls this; training calls it again when the weights
        have moved."""
        gen = torch.Generator().manual_seed(0)
        for i, lv in enumerate(hier.levels[:-1]):
            if i == 0 and not finest:
                lv.lam, lv.scale = 0.0, 1.0
                continue
            lv.lam = self._lambda_max(lv, steps, gen)
            lv.scale = (min(1.0, self.cap / lv.lam) if self.cap > 0 and lv.lam > 0 else 1.0)
        return hier

    def _lambda_max(self, lv: Level, steps: int, gen) -> float:
        # in float64 whatever the levels' dtype: float32 Lanczos loses the basis in 40 steps
        f64 = torch.float64
        A, d = lv.A.to(f64), lv.d.to(f64)
        ws = [w.detach().to(device=d.device, dtype=f64) for w in self.weights]
        mask = (d != 0).reshape(-1)
        k_max = min(steps, int(mask.sum()))
        v = (torch.rand(mask.shape, generator=gen, dtype=f64).to(d.device) * mask)
        v = v.reshape(1, 1, *lv.shape)
        av = self._mult(A, v, lv.shape)
        vav = float((v * av).sum())
        if not vav > 0:
            return 0.0
        V, AV = [v / vav ** 0.5], [av / vav ** 0.5]       # A-orthonormal basis and A times it
        T = np.zeros((k_max + 1, k_max + 1))
        lam = 0.0
        for j in range(k_max):
            w = self.smooth(AV[j], d, ws)                  # S A v_j
            aw = self._mult(A, w, lv.shape)
            size = float((w * aw).sum())
            for _ in range(2):                             # Gram-Schmidt twice, A inner product
                for i in range(len(V)):
                    c = float((w * AV[i]).sum())
                    T[i, j] += c
                    w, aw = w - c * V[i], aw - c * AV[i]
            H = T[: j + 1, : j + 1]       # diagonal and subdiagonal: the Lanczos tridiagonal
            lam = float(np.linalg.eigvalsh(np.tril(H) + np.tril(H, -1).T)[-1])
            b2 = float((w * aw).sum())
            if not b2 > 1e-16 * size:                      # an invariant subspace: exact
                break
            T[j + 1, j] = b2 ** 0.5
            V.append(w / b2 ** 0.5)
            AV.append(aw / b2 ** 0.5)
        return lam

    @staticmethod
    def _level(A, shape, coupled, P, dtype, device) -> Level:
        diag = A.diagonal()
        d = np.where(coupled & (diag > 0), 1.0 / np.sqrt(np.abs(diag).clip(1e-300)), 0.0)
        dt = torch.from_numpy(d.reshape(1, 1, *shape)).to(device=device, dtype=dtype)
        if P is None:
            return Level(shape, torch_csr(A, dtype, device), dt)
        return Level(shape, torch_csr(A, dtype, device), dt, torch_csr(P, dtype, device),
                     torch_csr(P.T.tocsr(), dtype, device))

    # -- the cycle ----------------------------------------------------------------------------
    def smooth(self, r: torch.Tensor, d: torch.Tensor, weights=None) -> torch.Tensor:
        """``S r = d C^T C (d r)``: symmetric positive semi-definite; (k, 1, *grid)
        (``weights``: the convolutions' weights in another dtype, default the parameters)."""
        conv = F.conv2d if self.dim == 2 else F.conv3d
        convt = F.conv_transpose2d if self.dim == 2 else F.conv_transpose3d
        ws = list(self.weights) if weights is None else weights
        h = d * r
        for w in ws:
            h = conv(h, w, padding=1)
        for w in reversed(ws):
            h = convt(h, w, padding=1)
        return d * h

    @staticmethod
    def _mult(M, x: torch.Tensor, shape) -> torch.Tensor:
        k = x.shape[0]
        y = torch.sparse.mm(M, x.reshape(k, -1).T).T
        return y.reshape(k, 1, *shape)

    def _cycle(self, hier: Hierarchy, i: int, r: torch.Tensor) -> torch.Tensor:
        lv = hier.levels[i]
        if i == len(hier.levels) - 1:
            k = r.shape[0]
            return (r.reshape(k, -1) @ hier.coarse_inverse.T).reshape(r.shape)
        w = lv.scale
        z = w * self.smooth(r, lv.d)
        for _ in range(self.nu - 1):
            z = z + w * self.smooth(r - self._mult(lv.A, z, lv.shape), lv.d)
        res = r - self._mult(lv.A, z, lv.shape)
        nxt = hier.levels[i + 1]
        rc = self._mult(lv.PT, res, nxt.shape)
        z = z + self._mult(lv.P, self._cycle(hier, i + 1, rc), lv.shape)
        for _ in range(self.nu):
            z = z + w * self.smooth(r - self._mult(lv.A, z, lv.shape), lv.d)
        return z

    def forward(self, r: torch.Tensor, hier: Hierarchy | None = None) -> torch.Tensor:
        """``r``: (batch, 1, *grid) with the grid of ``hier`` -> a direction of the same shape."""
        if not isinstance(hier, Hierarchy):
            raise InputError("MGNet needs the operator's levels: model(r, model.prepare(A, shape))")
        if r.dim() != self.dim + 2 or tuple(r.shape[2:]) != hier.levels[0].shape:
            raise InputError(f"MGNet: input {tuple(r.shape)} does not fit the operator's grid "
                             f"{hier.levels[0].shape}")
        return self._cycle(hier, 0, r)
