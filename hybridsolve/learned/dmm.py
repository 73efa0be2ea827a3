"""DMM: the data-free mesh mover (Hu et al., ICLR 2024), 2-D, on the unit square.

:class:`DMMNet` is DeepONet-like: a branch MLP reads the monitor on an S x S sensor grid
(normalised by its mean), a trunk MLP reads the computational coordinates xi, and the potential is
phi(m, xi) = branch(m) . trunk(xi) / p; the mesh is x = xi + grad_xi phi (autograd), so it can be
queried at any vertex set. Activations are tanh (phi needs smooth second derivatives).

:func:`train_dmm` trains it without any solved mesh: for a batch of random analytic monitors
(anisotropic Gaussian bumps, wavy fronts, rings; :func:`random_monitors`) and collocation points
(half uniform, half drawn in proportion to the monitor), the loss is the Monge–Ampère residual

    mean over points ( m(x(xi)) det(I + Hess phi) / theta - 1 )^2,   theta = the batch sample's
    mean of m det(I + Hess phi) over its uniform points,

plus 1000 x mean (d phi / d n)^2 on the boundary (the paper's soft boundary condition; its hard
option maps the boundary to 2 xi, a known bug) plus the convexity penalty
mean(min(0, 1 + phi_xx)^2 + min(0, 1 + phi_yy)^2). The monitor is differentiated through x, as in
the paper. Limits (the paper's): the unit square only (other domains are handled by the mover
through their bounding box, which is not what the network was trained on), and the monitor must
be seen on the sensor grid (a front thinner than the sensor spacing is blurred).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

__all__ = ["DMMNet", "DMMTrainConfig", "random_monitors", "train_dmm", "sensor_matrix"]


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


class DMMNet(nn.Module):
    """phi(m, xi) = branch(m on the sensors) . trunk(xi) / basis (see the module text)."""

    def __init__(self, dim: int = 2, sensors: int = 24, width: int = 128, basis: int = 64,
                 layers: int = 3) -> None:
        super().__init__()
        if dim != 2:
            raise ValueError("DMMNet is 2-D (the paper's setting)")
        self.dim, self.sensors, self.basis = dim, sensors, basis
        self.config = {"kind": "DMMNet", "dim": dim, "sensors": sensors, "width": width,
                       "basis": basis, "layers": layers}
        self.branch = _mlp([sensors * sensors] + [2 * width] * 2 + [basis])
        self.trunk = _mlp([dim] + [width] * layers + [basis])
        nn.init.zeros_(self.branch[-1].weight)   # start at the identity map (phi = const)
        nn.init.zeros_(self.branch[-1].bias)

    def potential(self, m_sensors: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        """phi at points ``xi`` (B, N, 2) for monitors ``m_sensors`` (B, S*S) -> (B, N)."""
        b = self.branch(m_sensors)                                  # (B, p)
        t = self.trunk(2.0 * xi - 1.0)                               # (B, N, p)
        # elementwise, not einsum: its batched BLAS call crashes (SIGSEGV) once
        # dolfinx.fem.petsc has loaded PETSc's BLAS into the process (measured, torch 2.x CPU)
        return (t * b[:, None, :]).sum(-1) / self.basis

    def displacement(self, m_sensors: torch.Tensor, xi: torch.Tensor, create_graph: bool = False):
        """(grad phi, phi) at ``xi`` (requires_grad is set here)."""
        xi = xi.requires_grad_(True)
        phi = self.potential(m_sensors, xi)
        (g,) = torch.autograd.grad(phi.sum(), xi, create_graph=create_graph)
        return g, phi

    def move_points(self, xi: np.ndarray, values: np.ndarray, interp=None) -> np.ndarray:
        """New coordinates for vertices ``xi`` (n, 2) with monitor ``values`` at them: the
        vertices' bounding box is mapped onto the unit square, the sensors are the monitor's
        piecewise-linear interpolant there (``interp``: the matrix of
        :func:`sensor_matrix` for these vertices, built here when not given), and
        x = xi + grad phi mapped back."""
        lo, hi = xi.min(axis=0), xi.max(axis=0)
        scale = hi - lo
        u = (xi - lo) / scale
        if interp is None:
            interp = sensor_matrix(u, self.sensors)
        s = torch.as_tensor(interp @ np.asarray(values, dtype=np.float64),
                            dtype=torch.float32)[None]
        s = s / s.mean() - 1.0
        pts = torch.as_tensor(u, dtype=torch.float32)[None]
        with torch.enable_grad():
            g, _ = self.displacement(s, pts)
        return lo + (u + g[0].detach().double().numpy()) * scale


def sensor_grid(S: int) -> np.ndarray:
    """The S x S sensor points (cell centres of an S x S grid on the unit square), (S*S, 2)."""
    c = (np.arange(S) + 0.5) / S
    X, Y = np.meshgrid(c, c, indexing="xy")
    return np.stack([X.ravel(), Y.ravel()], axis=1)


def sensor_matrix(points: np.ndarray, S: int, cells: np.ndarray | None = None):
    """The sparse (S*S, n) matrix that interpolates vertex values at ``points`` (unit square
    coordinates) linearly to the sensors, through the mesh's own ``cells`` (so the result does
    not depend on the vertex order, i.e. on the number of ranks); a sensor outside the mesh (in
    an L-shape's missing corner) takes the clipped barycentric weights of the nearest cell.
    Without ``cells`` a Delaunay triangulation of the points is used. Built once per mesh."""
    import scipy.sparse as sps

    if cells is None:
        from scipy.spatial import Delaunay

        cells = Delaunay(points).simplices
    q = sensor_grid(S)
    p = points[cells]                                    # (nc, 3, 2)
    T = np.stack([p[:, 0] - p[:, 2], p[:, 1] - p[:, 2]], axis=2)    # (nc, 2, 2)
    Tinv = np.linalg.inv(T)
    best = np.full(len(q), -np.inf)
    which = np.zeros(len(q), dtype=np.int64)
    wts = np.zeros((len(q), 3))
    for a in range(0, len(cells), 4096):                 # chunks of cells
        b = np.einsum("cij,qcj->qci", Tinv[a:a + 4096], q[:, None, :] - p[None, a:a + 4096, 2])
        w = np.concatenate([b, 1 - b.sum(axis=2, keepdims=True)], axis=2)   # (nq, chunk, 3)
        score = w.min(axis=2)
        k = score.argmax(axis=1)
        s = score[np.arange(len(q)), k]
        better = s > best
        best[better] = s[better]
        which[better] = a + k[better]
        wts[better] = w[np.flatnonzero(better), k[better]]
    wts = np.clip(wts, 0.0, None)
    wts /= wts.sum(axis=1, keepdims=True)
    rows = np.repeat(np.arange(len(q)), 3)
    return sps.csr_matrix((wts.ravel(), (rows, cells[which].ravel())), shape=(len(q), len(points)))


# --- the analytic monitor family ----------------------------------------------------------------
def random_monitors(rng: np.random.Generator, count: int) -> list[dict]:
    """Random monitor descriptions: 1-3 anisotropic Gaussian bumps, a wavy front or a ring."""
    out = []
    for _ in range(count):
        kind = rng.choice(["bumps", "front", "ring"], p=[0.45, 0.35, 0.2])
        if kind == "bumps":
            k = int(rng.integers(1, 4))
            out.append({"kind": "bumps", "amp": rng.uniform(2, 10, k).tolist(),
                        "c": rng.uniform(0.15, 0.85, (k, 2)).tolist(),
                        "w": rng.uniform(0.05, 0.2, (k, 2)).tolist(),
                        "rot": rng.uniform(0, np.pi, k).tolist()})
        elif kind == "front":
            ang = rng.uniform(0, 2 * np.pi)
            out.append({"kind": "front", "amp": float(rng.uniform(3, 10)),
                        "n": [math.cos(ang), math.sin(ang)], "c": float(rng.uniform(-0.2, 0.2)),
                        "A": float(rng.uniform(0, 0.3)), "k": float(rng.uniform(1, 6)),
                        "w": float(rng.uniform(0.06, 0.15))})
        else:
            out.append({"kind": "ring", "amp": float(rng.uniform(3, 10)),
                        "c": rng.uniform(0.3, 0.7, 2).tolist(), "r": float(rng.uniform(0.15, 0.35)),
                        "beta": float(rng.uniform(30, 120))})
    return out


def monitor_torch(desc: dict, x: torch.Tensor) -> torch.Tensor:
    """The monitor ``desc`` at points x (..., 2), differentiable."""
    X, Y = x[..., 0], x[..., 1]
    if desc["kind"] == "bumps":
        m = torch.ones_like(X)
        for a, c, w, r in zip(desc["amp"], desc["c"], desc["w"], desc["rot"]):
            dx, dy = X - c[0], Y - c[1]
            u = math.cos(r) * dx + math.sin(r) * dy
            v = -math.sin(r) * dx + math.cos(r) * dy
            m = m + a * torch.exp(-0.5 * ((u / w[0]) ** 2 + (v / w[1]) ** 2))
        return m
    if desc["kind"] == "front":
        n = desc["n"]
        s = n[0] * (X - 0.5) + n[1] * (Y - 0.5)
        t = -n[1] * (X - 0.5) + n[0] * (Y - 0.5)
        d = s + desc["A"] * torch.sin(desc["k"] * t) - desc["c"]
        return 1 + desc["amp"] * torch.exp(-((d / desc["w"]) ** 2))
    c = desc["c"]
    rr = (X - c[0]) ** 2 + (Y - c[1]) ** 2 - desc["r"] ** 2
    return 1 + desc["amp"] * (1 - torch.tanh(desc["beta"] * rr) ** 2)   # 1/cosh^2, no overflow


def monitor_numpy(desc: dict) -> Callable[[np.ndarray], np.ndarray]:
    """``f(x)`` with x of shape (2, n) (DOLFINx's interpolation convention)."""
    def f(x):
        t = torch.as_tensor(np.ascontiguousarray(x[:2].T), dtype=torch.float64)
        return monitor_torch(desc, t).numpy()
    return f


# --- training ---------------------------------------------------------------------------------------
@dataclass
class DMMTrainConfig:
    steps: int = 3000
    batch: int = 8
    points: int = 512
    boundary_points: int = 128
    lr: float = 1e-3
    sensors: int = 24
    width: int = 128
    basis: int = 64
    layers: int = 3
    boundary_weight: float = 1000.0
    convexity_weight: float = 1.0
    seed: int = 0
    threads: int = 1
    out: str = "dmm.safetensors"


def _hessian(g: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
    """(B, N, 2, 2) from the gradient g (B, N, 2) of phi w.r.t. xi (graph kept)."""
    rows = [torch.autograd.grad(g[..., i].sum(), xi, create_graph=True)[0] for i in range(2)]
    return torch.stack(rows, dim=-2)


def _boundary_points(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    side = rng.integers(0, 4, n)
    t = rng.uniform(0, 1, n)
    p = np.zeros((n, 2))
    nrm = np.zeros((n, 2))
    for s, (fix, val, nv) in enumerate([(0, 0.0, (-1, 0)), (0, 1.0, (1, 0)),
                                        (1, 0.0, (0, -1)), (1, 1.0, (0, 1))]):
        k = side == s
        p[k, fix] = val
        p[k, 1 - fix] = t[k]
        nrm[k] = nv
    return p, nrm


def dmm_loss(model: DMMNet, descs: list[dict], rng: np.random.Generator, cfg: DMMTrainConfig,
             sensors: np.ndarray) -> tuple[torch.Tensor, dict]:
    """The data-free loss on one batch of monitors (see the module text)."""
    B, N, Nb = len(descs), cfg.points, cfg.boundary_points
    s = torch.stack([monitor_torch(d, torch.as_tensor(sensors, dtype=torch.float32))
                     for d in descs])
    s = s / s.mean(dim=1, keepdim=True) - 1.0
    # collocation: half uniform, half in proportion to the monitor (from a candidate pool)
    pts = np.empty((B, N, 2))
    half = N // 2
    for b, d in enumerate(descs):
        pts[b, :half] = rng.uniform(0, 1, (half, 2))
        pool = rng.uniform(0, 1, (8 * (N - half), 2))
        w = monitor_torch(d, torch.as_tensor(pool)).numpy()
        pts[b, half:] = pool[rng.choice(len(pool), N - half, p=w / w.sum())]
    xi = torch.as_tensor(pts, dtype=torch.float32)
    g, _ = model.displacement(s, xi, create_graph=True)
    H = _hessian(g, xi)
    # det(I + H) written out: torch.linalg.det calls LAPACK, which crashes (SIGSEGV) once
    # dolfinx.fem.petsc has loaded PETSc's own BLAS/LAPACK into the process
    det = (1 + H[..., 0, 0]) * (1 + H[..., 1, 1]) - H[..., 0, 1] * H[..., 1, 0]
    x = xi + g
    m = torch.stack([monitor_torch(d, x[b]) for b, d in enumerate(descs)])
    q = m * det
    theta = q[:, :half].mean(dim=1, keepdim=True)
    ma = ((q / theta - 1.0) ** 2).mean()
    bp, bn = _boundary_points(rng, B * Nb)
    bxi = torch.as_tensor(bp.reshape(B, Nb, 2), dtype=torch.float32)
    gb, _ = model.displacement(s, bxi, create_graph=True)
    normal = (gb * torch.as_tensor(bn.reshape(B, Nb, 2), dtype=torch.float32)).sum(-1)
    bnd = (normal ** 2).mean()
    cvx = (torch.relu(-(1 + H[..., 0, 0])) ** 2 + torch.relu(-(1 + H[..., 1, 1])) ** 2).mean()
    loss = ma + cfg.boundary_weight * bnd + cfg.convexity_weight * cvx
    return loss, {"ma": float(ma.detach()), "boundary": float(bnd.detach()),
                  "convexity": float(cvx.detach())}


def train_dmm(cfg: DMMTrainConfig, *, log: Callable[[str], None] = print,
              every: int = 100) -> dict:
    """Train a :class:`DMMNet` (CPU, ``cfg.threads`` threads); write it to ``cfg.out`` with its
    configuration and the training facts. Returns a summary."""
    from hybridsolve.learned.models import count_parameters, save_model

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = DMMNet(sensors=cfg.sensors, width=cfg.width, basis=cfg.basis, layers=cfg.layers)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sensors = sensor_grid(cfg.sensors)
    val = random_monitors(np.random.default_rng(cfg.seed + 10_000), 16)   # never trained on

    def validate() -> float:
        parts = dmm_loss(model, val, np.random.default_rng(1), cfg, sensors)[1]
        return parts["ma"]

    val_before = validate()
    hist, t0, skipped = [], time.perf_counter(), 0
    for step in range(cfg.steps):
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for grp in opt.param_groups:
            grp["lr"] = lr
        loss, parts = dmm_loss(model, random_monitors(rng, cfg.batch), rng, cfg, sensors)
        opt.zero_grad()
        if not torch.isfinite(loss):
            skipped += 1   # counted and reported, never silently averaged in
            continue
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        hist.append(float(loss.detach()))
        if (step + 1) % every == 0 or step == 0:
            avg = float(np.mean(hist[-every:]))
            log(f"dmm step {step + 1}/{cfg.steps}: loss {avg:.4f} (MA {parts['ma']:.4f}, "
                f"boundary {parts['boundary']:.2e}, convexity {parts['convexity']:.2e}), "
                f"lr {lr:.2e}, {skipped} non-finite batches skipped, "
                f"{time.perf_counter() - t0:.0f} s")
    elapsed = time.perf_counter() - t0
    val_after = validate()
    log(f"dmm: Monge-Ampere residual on 16 held-out monitors {val_before:.4f} (identity map) -> "
        f"{val_after:.4f}")
    out = save_model(model, cfg.out, training=asdict(cfg), time=elapsed,
                     final_loss=float(np.mean(hist[-100:])), skipped=skipped,
                     validation={"before": val_before, "after": val_after})
    return {"out": str(Path(out)), "loss_history": hist, "time": elapsed, "skipped": skipped,
            "parameters": count_parameters(model),
            "validation": {"before": val_before, "after": val_after}}
