"""Training DCDM's network label-free (Kaneda et al., ICML 2023).

Loss: with ``q = f(r)`` and the exact line search ``alpha = q.r / q.Aq``,
``mean ||r - alpha A q||^2``: scale invariant, no labels. Adam, the learning rate on a cosine
from ``lr`` to ``lr / 20`` over the epochs. Every batch holds right-hand sides of one matrix (the
loss needs its A); the batches of all matrices are shuffled together, so every sample is used
once per epoch.

Right-hand sides (``rhs``):

* ``smooth`` (default, generated on the fly, nothing stored): random fields smoothed by ``k``
  damped-Jacobi sweeps with the training matrix, ``k`` drawn from 0 to 256 per sample: what
  is left after ``k`` sweeps are the low eigenmodes, the hard-to-reduce residuals a Krylov
  method meets (the role the paper gives to its boosted Ritz vectors);
* ``ritz``: the paper's: Lanczos with full re-orthogonalisation gives Ritz pairs; random
  combinations of the Ritz vectors with the lower part's coefficients multiplied by 9.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from hybridsolve.errors import InputError
from hybridsolve.learned.sparse import coupled_mask, torch_csr

__all__ = ["lanczos_ritz", "ritz_rhs", "TrainConfig", "train_dcdm", "grid_training_matrices",
           "coupled_mask", "dcdm_loss"]


def lanczos_ritz(A: sp.spmatrix, m: int, rng: np.random.Generator,
                 drop: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """``m`` Lanczos steps with full re-orthogonalisation from a random start; returns the Ritz
    values (ascending, those below ``drop`` removed) and the Ritz vectors as columns."""
    n = A.shape[0]
    m = min(m, n)
    Q = np.zeros((n, m))
    alpha = np.zeros(m)
    beta = np.zeros(m)
    q = A @ rng.standard_normal(n)
    q /= np.linalg.norm(q)
    k = m
    for j in range(m):
        Q[:, j] = q
        w = A @ q
        alpha[j] = q @ w
        w -= Q[:, :j + 1] @ (Q[:, :j + 1].T @ w)   # full re-orthogonalisation, twice
        w -= Q[:, :j + 1] @ (Q[:, :j + 1].T @ w)
        b = np.linalg.norm(w)
        if j + 1 < m:
            if b < 1e-12:
                k = j + 1
                break
            beta[j] = b
            q = w / b
    T = np.diag(alpha[:k]) + np.diag(beta[:k - 1], 1) + np.diag(beta[:k - 1], -1)
    theta, S = np.linalg.eigh(T)
    keep = theta > drop
    return theta[keep], Q[:, :k] @ S[:, keep]


def ritz_rhs(vectors: np.ndarray, count: int, rng: np.random.Generator,
             low_fraction: float = 0.5, boost: float = 9.0) -> np.ndarray:
    """``count`` normalised right-hand sides (rows) from the Ritz vectors (columns, ascending):
    N(0, 1) coefficients, the lowest ``low_fraction`` of them times ``boost``."""
    k = vectors.shape[1]
    c = rng.standard_normal((count, k))
    c[:, :max(int(low_fraction * k), 1)] *= boost
    B = c @ vectors.T
    return B / np.linalg.norm(B, axis=1, keepdims=True)


def grid_training_matrices(n: int, dim: int, obstacles: int, count: int, seed: int):
    """``count`` structured-grid Poisson matrices with random obstacles (the ``grid`` family),
    as SciPy CSR in natural grid order."""
    from hybridsolve.problems import get_family
    from hybridsolve.stack import MPI

    fam = get_family("grid", n, count=count, seed=seed, dim=dim, obstacles=obstacles)
    out = []
    for i in range(count):
        s = fam.system(i, MPI.COMM_SELF)
        A, _ = s.to_scipy()
        out.append(A.tocsr())
        s.destroy()
    return out


@dataclass
class TrainConfig:
    """What ``hybridsolve train dcdm`` trains (all of it is stored with the model)."""

    n: int = 64
    dim: int = 2
    obstacles: int = 3
    matrices: int = 4
    lanczos: int = 400
    samples: int = 2000
    epochs: int = 10
    batch: int = 16
    lr: float = 1e-3
    seed: int = 0
    channels: int = 16
    pre: int = 3
    coarse: int = 4
    post: int = 3
    threads: int = 0
    out: str = "dcdm.safetensors"
    extra: dict = field(default_factory=dict)
    arch: str = "dcdm"        # "dcdm" (DCDMNet, one coarse level), "vcycle" (VCycleNet) or
                              # "mg" (MGNet: levels from the operator, a learned smoother)
    layers: int = 1           # MGNet: convolutions in the smoother network
    nu: int = 1               # MGNet: smoothing steps before and after the coarse correction
    smooth: int = 2           # VCycleNet: conv layers per smoothing block
    rhs: str = "ritz"         # "ritz" (stored Lanczos data) or "smooth" (on the fly)
    init: str = ""            # warm start: a model file of the same architecture (curriculum)

    def check(self) -> None:
        if self.dim not in (2, 3):
            raise InputError(f"train dcdm: dim must be 2 or 3, got {self.dim}")
        for k in ("n", "matrices", "lanczos", "samples", "epochs", "batch"):
            if getattr(self, k) < 1:
                raise InputError(f"train dcdm: {k} must be >= 1, got {getattr(self, k)}")
        if not self.lr > 0:
            raise InputError(f"train dcdm: lr must be > 0, got {self.lr}")
        if self.arch not in ("dcdm", "vcycle", "mg"):
            raise InputError(f"train dcdm: arch must be dcdm, vcycle or mg, got {self.arch!r}")
        if self.rhs not in ("ritz", "smooth"):
            raise InputError(f"train dcdm: rhs must be ritz or smooth, got {self.rhs!r}")


def config_key(cfg) -> str:
    """A training configuration as the text a checkpoint is matched against (the output path
    and the thread count do not change what is trained)."""
    return json.dumps({k: v for k, v in asdict(cfg).items() if k not in ("out", "threads")},
                      sort_keys=True)


def resume(state_path: Path, out: Path, key: str, model, opt) -> dict | None:
    """The checkpoint of a stopped run with configuration ``key`` (weights loaded into
    ``model`` from ``out``, optimizer state into ``opt``), or None when there is none. A state
    of another configuration, or one this version cannot read, is an :class:`InputError`."""
    from hybridsolve.learned.models import load_weights

    if not (state_path.exists() and out.exists()):
        return None
    try:
        st = torch_load(state_path)
    except Exception as e:
        raise InputError(f"{state_path} is not a training state this version can read ({e}); "
                         "remove it (and the model file) or choose another --out") from e
    if st.get("config") != key:
        raise InputError(f"{state_path} belongs to another training configuration: remove "
                         "it (and the model file) or choose another --out")
    load_weights(model, out)
    opt.load_state_dict(st["optimizer"])
    return st


def save_state(state_path: Path, key: str, opt, epoch: int, history: list, **extra) -> None:
    """Write the checkpoint after ``epoch`` epochs atomically (Python floats: a weights_only
    load refuses NumPy scalars)."""
    import torch

    torch.save({"config": key, "optimizer": opt.state_dict(), "epoch": epoch,
                "history": [float(h) for h in history], **extra}, str(state_path) + ".tmp")
    Path(str(state_path) + ".tmp").replace(state_path)


def torch_load(path: Path) -> dict:
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=True)


def cosine_lr(opt, base: float, epoch: int, epochs: int) -> float:
    """Set the cosine learning rate of ``epoch`` (from ``base`` down to ``base``/20)."""
    lr = float(base * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * epoch / max(epochs, 1)))))
    for g in opt.param_groups:
        g["lr"] = lr
    return lr


def dcdm_loss(model, A_t, R, shape, mask=None, hier=None):
    """``mean ||r - alpha A q||^2`` with ``q = model(r)`` (zero on decoupled rows when ``mask``
    is given), ``alpha = q.r / q.Aq`` (rows of R); ``hier``: the operator's levels for a model
    that takes them (MGNet)."""
    import torch

    k = R.shape[0]
    if hier is not None:
        Q = model(R.reshape(k, 1, *shape), hier).reshape(k, -1)
    elif mask is not None and getattr(model, "uses_mask", False):
        Q = model(R.reshape(k, 1, *shape), mask.reshape(1, 1, *shape)).reshape(k, -1)
    else:
        Q = model(R.reshape(k, 1, *shape)).reshape(k, -1)
    if mask is not None:
        Q = Q * mask
    AQ = torch.sparse.mm(A_t, Q.T).T
    alpha = (Q * R).sum(1) / (Q * AQ).sum(1).clamp_min(1e-30)
    return ((R - alpha[:, None] * AQ) ** 2).sum(1).mean()


def _orient(model, R, shape) -> None:
    """The loss cannot tell q from -q: flip the last layer so that the model proposes descent
    directions (``r . q > 0``) on training residuals (MGNet's symmetric smoother cannot flip)."""
    import torch

    if not hasattr(model, "last"):
        return
    with torch.no_grad():
        Q = model(R.reshape(R.shape[0], 1, *shape)).reshape(R.shape[0], -1)
        if float((Q * R).sum()) < 0:
            model.last.weight.neg_()
            if model.last.bias is not None:
                model.last.bias.neg_()


def smooth_rhs(A_t, dinv, mask, count: int, gen, kmax: int = 256):
    """``count`` normalised right-hand sides for the torch CSR matrix ``A_t``: random N(0, 1)
    fields after ``k`` damped-Jacobi sweeps (``omega = 2/3``), ``k`` log-uniform in 0..kmax per
    sample (``k = 0``: white noise), zero on decoupled rows."""
    import torch

    n = A_t.shape[0]
    X = torch.randn(count, n, generator=gen, dtype=dinv.dtype) * mask
    ks = torch.floor(torch.exp(torch.rand(count, generator=gen) * np.log(kmax + 1))).long() - 1
    ks = ks.clamp(0, kmax)
    for step in range(int(ks.max()) + 1):
        live = ks > step
        if not bool(live.any()):
            break
        AX = torch.sparse.mm(A_t, X.T).T
        X = torch.where(live[:, None], X - (2.0 / 3.0) * dinv * AX, X)
    X = X * mask
    return X / X.norm(dim=1, keepdim=True).clamp_min(1e-30)


def train_dcdm(cfg: TrainConfig, *, progress: bool = True, log=print) -> dict:
    """Train, checkpoint every epoch (``<out>`` and ``<out>.state.pt`` to resume), return a
    summary. A rerun with the same configuration resumes from the last epoch."""
    import torch

    from hybridsolve.learned.models import DCDMNet, VCycleNet, load_weights, save_model

    cfg.check()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    out = Path(cfg.out)
    state_path = out.with_name(out.name + ".state.pt")
    t0 = time.perf_counter()
    mats = grid_training_matrices(cfg.n, cfg.dim, cfg.obstacles, cfg.matrices, cfg.seed)
    per = -(-cfg.samples // len(mats))
    A_ts = [torch_csr(A, torch.float32) for A in mats]
    masks = [torch.from_numpy(coupled_mask(A)).float() for A in mats]
    dinvs = [torch.from_numpy(1.0 / A.diagonal()).float() for A in mats]
    X = None
    if cfg.rhs == "ritz":
        data = []
        for A in mats:
            theta, V = lanczos_ritz(A, cfg.lanczos, rng)
            data.append(ritz_rhs(V, per, rng))
        X = [torch.from_numpy(d).float() for d in data]   # X[m]: matrix m's right-hand sides
    shape = (cfg.n,) * cfg.dim
    t_data = time.perf_counter() - t0
    hiers = [None] * len(mats)
    if cfg.arch == "mg":
        from hybridsolve.learned.mgnet import MGNet

        model = MGNet(cfg.dim, cfg.channels, cfg.layers, cfg.nu, noise=0.05)
        hiers = [model.prepare(A, (cfg.n,) * cfg.dim) for A in mats]
    elif cfg.arch == "vcycle":
        model = VCycleNet(cfg.dim, cfg.channels, cfg.smooth)
    else:
        model = DCDMNet(cfg.dim, cfg.channels, cfg.pre, cfg.coarse, cfg.post)
    if cfg.init:
        load_weights(model, cfg.init)   # a mismatch (another architecture) is an InputError
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start, history = 0, []
    cfg_json = config_key(cfg)
    st = resume(state_path, out, cfg_json, model, opt)
    if st is not None:
        start, history = int(st["epoch"]), [float(h) for h in st["history"]]
        if "generator" in st:
            gen.set_state(st["generator"])
        log(f"train dcdm: resuming after epoch {start}")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.epochs, initial=start, desc="train dcdm", unit="epoch")
    for epoch in range(start, cfg.epochs):
        cosine_lr(opt, cfg.lr, epoch, cfg.epochs)
        for h in hiers:   # MGNet: the spectral cap of the weights as they are now
            if h is not None:
                model.rescale(h)
        # one matrix per batch (the loss needs its A), every sample once, batches shuffled
        batches = [(m, idx) for m in range(len(mats))
                   for idx in np.array_split(rng.permutation(per), max(1, -(-per // cfg.batch)))]
        order = rng.permutation(len(batches))
        tot, cnt = 0.0, 0
        model.train()
        for b in order:
            m, idx = batches[b]
            if X is not None:
                R = X[m][idx]
            else:
                R = smooth_rhs(A_ts[m], dinvs[m], masks[m], len(idx), gen)
            loss = dcdm_loss(model, A_ts[m], R, shape, masks[m], hiers[m])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += loss.item() * len(idx)
            cnt += len(idx)
        history.append(float(tot / cnt))
        probe = X[0][: cfg.batch] if X is not None else smooth_rhs(A_ts[0], dinvs[0], masks[0],
                                                                     cfg.batch, gen)
        _orient(model, probe, shape)
        save_model(model, out, train=json.loads(cfg_json), history=history)
        save_state(state_path, cfg_json, opt, epoch + 1, history, generator=gen.get_state())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{history[-1]:.4f}")
    if bar is not None:
        bar.close()
    return {"out": str(out), "epochs": cfg.epochs, "loss_history": history,
            "data_time": t_data, "time": time.perf_counter() - t0, "samples": int(per * len(mats))}
