"""Online learners that pick one of a few values (an SOR omega, any solver option) per solve.

Khodak, Chow, Balcan, Talwalkar, "Learning to Relax: Setting Solver Parameters Across a Sequence
of Linear System Instances", ICLR 2024. Bandit feedback only: after each solve the learner sees
the cost of the value it chose (iterations, or seconds), nothing else, and no extra matrix work.

Every learner has the same small surface::

    value = learner.choose(context)   # before the solve (context: a scalar, or None)
    learner.observe(cost)             # after it

is seeded, and round-trips through :meth:`Learner.state_dict` / :func:`learner_from_state`
(or :meth:`Learner.save` / :func:`load_learner`, JSON) so a long simulation can checkpoint and
resume it: a resumed learner makes the same choices as one that never stopped.

This module needs neither MPI nor PETSc.
"""

from __future__ import annotations

import abc
import json
import math
import os
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from hybridsolve.errors import InputError

__all__ = ["Learner", "TsallisINF", "IGW", "BinnedTsallisINF", "ChebCB", "FixedValue", "LEARNERS",
           "make_learner", "learner_from_state", "load_learner", "default_omegas"]

_FORMAT = "hybridsolve-learner"
_VERSION = 1


def default_omegas() -> np.ndarray:
    """The paper's action grid: 20 values of omega evenly spaced in [1, 1.95]."""
    return np.linspace(1.0, 1.95, 20)


def _check_arms(arms: Any) -> np.ndarray:
    try:
        a = np.asarray(arms, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"learner: the values to choose from must be numbers, got {arms!r}") from None
    if a.size == 0:
        raise InputError("learner: the grid of values to choose from is empty")
    if not np.all(np.isfinite(a)):
        raise InputError("learner: the grid of values holds NaN or Inf")
    if np.unique(a).size != a.size:
        raise InputError("learner: the grid of values holds duplicates")
    return a


def _check_range(context_range: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in context_range)
    except (TypeError, ValueError):
        raise InputError(f"learner: context_range must be (low, high), got {context_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise InputError(f"learner: context_range must be finite with low < high, got ({lo}, {hi})")
    return lo, hi


class Learner(abc.ABC):
    """Base of the online learners: a grid of values, a seeded generator, the choose/observe cycle.

    Args:
        arms: the values to choose from (e.g. :func:`default_omegas`).
        seed: seed of the learner's own random generator (sampling of the values).
        floor: a lower bound of the cost, subtracted before normalising it (1 for iteration
            counts, the paper's choice; 0 for wall time).
    """

    kind: ClassVar[str] = ""
    contextual: ClassVar[bool] = False

    def __init__(self, arms: Sequence[float], *, seed: int = 0, floor: float = 1.0) -> None:
        self.arms = _check_arms(arms)
        if not np.isfinite(floor) or floor < 0:
            raise InputError(f"learner: the cost floor must be a finite number >= 0, got {floor!r}")
        self.floor = float(floor)
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.t = 0                      # rounds completed (choose + observe)
        self.pending: int | None = None  # index chosen and not yet observed
        self.history: dict[str, list] = {"index": [], "cost": [], "context": []}

    # -- the cycle ---------------------------------------------------------------------------
    @property
    def n_arms(self) -> int:
        return int(self.arms.size)

    def choose(self, context: float | None = None) -> float:
        """The value to use for the next solve (``context``: the instance's scalar, if any)."""
        if self.pending is not None:
            raise InputError(f"{type(self).__name__}.choose() called twice: observe(cost) the "
                             "previous choice first")
        ctx = self._check_context(context)
        self.pending = int(self._choose(ctx))
        self._context = ctx
        return float(self.arms[self.pending])

    def observe(self, cost: float) -> None:
        """Feed back the cost of the value returned by the last :meth:`choose`."""
        if self.pending is None:
            raise InputError(f"{type(self).__name__}.observe() without a choose() before it")
        try:
            c = float(cost)
        except (TypeError, ValueError):
            raise InputError(f"learner: cost must be a number, got {cost!r}") from None
        if not np.isfinite(c) or c < 0:
            raise InputError(f"learner: cost must be finite and >= 0, got {cost!r}")
        self._observe(self.pending, c)
        self.history["index"].append(self.pending)
        self.history["cost"].append(c)
        self.history["context"].append(self._context)
        self.pending = None
        self.t += 1

    @property
    def last_index(self) -> int | None:
        return self.history["index"][-1] if self.history["index"] else None

    def chosen_values(self) -> np.ndarray:
        """The value played in each completed round."""
        return self.arms[np.asarray(self.history["index"], dtype=int)]

    def costs(self) -> np.ndarray:
        return np.asarray(self.history["cost"], dtype=float)

    def _check_context(self, context: float | None) -> float | None:
        if context is None:
            return None
        try:
            c = float(context)
        except (TypeError, ValueError):
            raise InputError(f"learner: context must be a scalar, got {context!r}") from None
        if not np.isfinite(c):
            raise InputError(f"learner: context must be finite, got {context!r}")
        return c

    @abc.abstractmethod
    def _choose(self, context: float | None) -> int: ...

    @abc.abstractmethod
    def _observe(self, index: int, cost: float) -> None: ...

    # -- checkpointing -----------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"arms": self.arms.tolist(), "seed": self.seed, "floor": self.floor}

    @abc.abstractmethod
    def _state(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _load_state(self, state: dict[str, Any]) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: configuration, statistics, generator state, history."""
        return {"format": _FORMAT, "version": _VERSION, "kind": self.kind, "config": self.config(),
                "t": self.t, "pending": self.pending,
                "context": getattr(self, "_context", None),
                "rng": self.rng.bit_generator.state, "history": self.history,
                "state": self._state()}

    def save(self, path: str | os.PathLike, run: dict | None = None) -> Path:
        """Write :meth:`state_dict` as JSON (atomically: a crash never leaves half a file);
        ``run`` (what the run that owns the learner was configured with) is stored with it."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        state = self.state_dict()
        if run is not None:
            state["run"] = run
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)
        return path

    def summary(self) -> str:
        if not self.t:
            return f"{self.kind}: no rounds yet"
        idx = np.bincount(np.asarray(self.history["index"]), minlength=self.n_arms)
        top = int(np.argmax(idx))
        return (f"{self.kind}: {self.t} rounds, mean cost {np.mean(self.history['cost']):.4g}, "
                f"most played {self.arms[top]:g} ({idx[top] / self.t:.0%})")


# --------------------------------------------------------------------------------------------
class TsallisINF(Learner):
    """Tsallis-INF: 1/2-Tsallis-entropy online mirror descent with implicit normalisation.

    Zimmert & Seldin (2021), as used by Khodak et al. (ICLR 2024) for SOR's omega: learning
    rate ``eta = 2 / sqrt(t)``; weights ``p_i = 4 (eta (L_i / s - x))^-2`` with ``x`` found by
    Newton's method so that they sum to one; ``L_i`` the importance-weighted cumulative
    (cost - floor) of value ``i``, ``s`` the running mean of (cost - floor). Context is ignored.
    """

    kind = "tsallis"

    def __init__(self, arms: Sequence[float] | None = None, *, seed: int = 0,
                 floor: float = 1.0) -> None:
        super().__init__(default_omegas() if arms is None else arms, seed=seed, floor=floor)
        self.L = np.zeros(self.n_arms)    # importance-weighted cumulative normalised loss
        self.total = 0.0                  # sum of (cost - floor) so far
        self.prob = 1.0

    def probabilities(self) -> np.ndarray:
        """The distribution the next choice is drawn from."""
        eta = 2.0 / math.sqrt(self.t + 1)
        scale = self.total / self.t if self.t and self.total > 0 else 1.0
        return _tsallis_weights(self.L / scale, eta)

    def _choose(self, context):
        p = self.probabilities()
        i = _sample(p, self.rng.random())
        self.prob = float(p[i])
        return i

    def _observe(self, index, cost):
        loss = max(cost - self.floor, 0.0)
        self.total += loss
        self.L[index] += loss / self.prob

    def _state(self):
        return {"L": self.L.tolist(), "total": self.total, "prob": self.prob}

    def _load_state(self, state):
        self.L = np.asarray(state["L"], dtype=float)
        self.total = float(state["total"])
        self.prob = float(state["prob"])


class _Contextual(Learner):
    contextual = True

    def __init__(self, arms, context_range, *, seed=0, floor=1.0):
        super().__init__(default_omegas() if arms is None else arms, seed=seed, floor=floor)
        if context_range is None:
            raise InputError(f"{type(self).__name__}: give context_range=(low, high), the range "
                             "the contexts will fall in")
        self.context_range = _check_range(context_range)

    def _check_context(self, context):
        c = super()._check_context(context)
        lo, hi = self.context_range
        if c is None:
            raise InputError(f"{type(self).__name__} is contextual: choose(context) needs the "
                             f"instance's context, a scalar in [{lo:g}, {hi:g}]")
        if not lo <= c <= hi:
            raise InputError(f"{type(self).__name__}: context {c:g} is outside the declared range "
                             f"[{lo:g}, {hi:g}]")
        return c

    def config(self):
        return {**super().config(), "context_range": list(self.context_range)}


class BinnedTsallisINF(_Contextual):
    """Contextual Tsallis-INF: one independent :class:`TsallisINF` per bin of the context range.

    The bins are equal; a context goes to the bin whose centre is nearest (Khodak et al.'s
    "Tsallis-INF-CB").
    """

    kind = "binned-tsallis"

    def __init__(self, arms: Sequence[float] | None = None, context_range=None, *, bins: int = 5,
                 seed: int = 0, floor: float = 1.0) -> None:
        super().__init__(arms, context_range, seed=seed, floor=floor)
        if int(bins) < 1:
            raise InputError(f"BinnedTsallisINF: need bins >= 1, got {bins}")
        self.bins = int(bins)
        lo, hi = self.context_range
        self.centres = lo + (hi - lo) * np.linspace(0.5 / self.bins, 1 - 0.5 / self.bins, self.bins)
        # the bins share this learner's generator; each keeps its own statistics
        self.learners = [TsallisINF(self.arms, seed=self.seed, floor=self.floor)
                         for _ in range(self.bins)]
        for sub in self.learners:
            sub.rng = self.rng
        self.bin = 0

    def _choose(self, context):
        self.bin = int(np.argmin(np.abs(self.centres - context)))
        sub = self.learners[self.bin]
        sub.pending = sub._choose(None)
        return sub.pending

    def _observe(self, index, cost):
        sub = self.learners[self.bin]
        sub._observe(index, cost)
        sub.pending = None
        sub.t += 1

    def config(self):
        return {**super().config(), "bins": self.bins}

    def _state(self):
        return {"bin": self.bin, "t": [s.t for s in self.learners],
                "sub": [s._state() for s in self.learners]}

    def _load_state(self, state):
        self.bin = int(state["bin"])
        for sub, t, st in zip(self.learners, state["t"], state["sub"]):
            sub.t = int(t)
            sub._load_state(st)


class ChebCB(_Contextual):
    """Chebyshev-regression contextual bandit with inverse-gap weighting (Khodak et al., ICLR 2024).

    Per value, a least-squares fit (box-bounded as in the paper) of the normalised cost on the
    Chebyshev polynomials ``T_0 .. T_degree`` of the context mapped to [-1, 1]; then play the
    predicted best value with the remaining probability and every other value ``i`` with
    probability ``1 / (d + eta (yhat_i - yhat_best))``, ``eta`` growing with ``t`` as the
    regression error allows (times ``eta_scale``; 1 is the paper's schedule). Statistics are kept as per-value normal equations, so memory and
    time per round do not grow with the number of rounds.
    """

    kind = "chebcb"

    def __init__(self, arms: Sequence[float] | None = None, context_range=None, *,
                 degree: int = 5, eta_scale: float = 1.0, seed: int = 0, floor: float = 1.0) -> None:
        super().__init__(arms, context_range, seed=seed, floor=floor)
        if int(degree) < 0:
            raise InputError(f"ChebCB: need degree >= 0, got {degree}")
        if not (np.isfinite(eta_scale) and eta_scale > 0):
            raise InputError(f"ChebCB: need eta_scale > 0, got {eta_scale}")
        self.degree = int(degree)
        self.eta_scale = float(eta_scale)
        m, d = self.degree + 1, self.n_arms
        self.G = np.zeros((d, m, m))       # per value: sum of phi phi^T
        self.c = np.zeros((d, m))          # per value: sum of phi (cost - floor)
        self.yy = np.zeros(d)              # per value: sum of (cost - floor)^2
        self.count = np.zeros(d, dtype=int)
        self.theta = np.zeros((d, m))
        self.eta = 0.0
        self.scale = 0.0
        self.kmax = -np.inf
        self.kmin = np.inf
        self.S = np.zeros(3)               # sums of pred^2, pred*cost, cost^2 (for the fit error)
        self.resnorm = 0.0
        self.phi = np.zeros(m)
        self.predicted = 0.0

    def features(self, context: float) -> np.ndarray:
        """``T_0 .. T_degree`` at the context mapped to [-1, 1]."""
        lo, hi = self.context_range
        return _chebyshev(2.0 * (context - lo) / (hi - lo) - 1.0, self.degree + 1)

    def predict(self, context: float) -> np.ndarray:
        """The fitted normalised cost of every value at ``context``."""
        return self.theta @ self.features(self._check_context(context))

    def _choose(self, context):
        self.phi = self.features(context)
        yhat = self.theta @ self.phi
        best = int(np.argmin(yhat))
        p = 1.0 / (self.n_arms + self.eta * (yhat - yhat[best]))
        p[best] = 0.0
        p[best] = max(1.0 - p.sum(), 0.0)
        i = _sample(p, self.rng.random())
        self.predicted = float(yhat[i])
        return i

    def _fit(self, i: int, ub: np.ndarray) -> float:
        """Refit value ``i``; returns the squared residual when the bounds were active, else 0."""
        G, c = self.G[i], self.c[i] / self.scale
        theta = _min_norm_solve(G, c)
        if np.all(np.abs(theta) <= ub):
            self.theta[i] = theta
            return 0.0
        theta = _box_qp(G, c, ub)
        self.theta[i] = theta
        return float(max(theta @ G @ theta - 2 * c @ theta + self.yy[i] / self.scale ** 2, 0.0))

    def _observe(self, index, cost):
        y = cost - self.floor
        phi = self.phi
        self.G[index] += np.outer(phi, phi)
        self.c[index] += phi * y
        self.yy[index] += y * y
        self.count[index] += 1
        self.kmax, self.kmin = max(self.kmax, cost), min(self.kmin, cost)
        self.S += (self.predicted ** 2, self.predicted * cost, cost * cost)
        t = self.t + 1
        m, d = self.degree + 1, self.n_arms
        lo, hi = self.context_range
        bma = hi - lo
        K = max(self.kmax, 1e-300)
        Lip = (self.kmax - self.kmin) / bma
        N = 2.0 + 4.0 * bma * Lip / K * (1.0 + math.log(m))
        refit_all = self.scale != K * N
        self.scale = K * N
        ub = np.concatenate([[1.0 / N], 2.0 * bma * Lip / self.scale / np.arange(1, m)])
        ub = np.maximum(ub, 1e-300)
        resnorm = 0.0
        for i in (range(d) if refit_all else (index,)):
            if self.count[i]:
                r = self._fit(i, ub)
                if i == index:
                    resnorm = r
        self.resnorm = resnorm
        alpha = (math.pi + 2.0 / math.pi * math.log(2.0 * m + 1)) / (2.0 * self.scale * (m + 1)) * bma * Lip
        s = self.scale
        R = self.S[0] - 2.0 * self.S[1] / s + self.S[2] / s ** 2
        denom = R - resnorm + 2.0 * alpha ** 2 * t
        self.eta = 2.0 * t * math.sqrt(d * t / denom) if denom > 0 else 1e12
        self.eta = min(self.eta_scale * self.eta, 1e12)

    def config(self):
        return {**super().config(), "degree": self.degree, "eta_scale": self.eta_scale}

    def _state(self):
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in (
            ("G", self.G), ("c", self.c), ("yy", self.yy), ("count", self.count),
            ("theta", self.theta), ("eta", self.eta), ("scale", self.scale),
            ("kmax", self.kmax if np.isfinite(self.kmax) else None),
            ("kmin", self.kmin if np.isfinite(self.kmin) else None),
            ("S", self.S), ("resnorm", self.resnorm), ("phi", self.phi),
            ("predicted", self.predicted))}

    def _load_state(self, state):
        for k in ("G", "c", "yy", "theta", "S", "phi"):
            setattr(self, k, np.asarray(state[k], dtype=float))
        self.count = np.asarray(state["count"], dtype=int)
        for k in ("eta", "scale", "resnorm", "predicted"):
            setattr(self, k, float(state[k]))
        self.kmax = -np.inf if state["kmax"] is None else float(state["kmax"])
        self.kmin = np.inf if state["kmin"] is None else float(state["kmin"])


# Plain numpy on purpose: with 20 values and 6 features a round costs tens of microseconds, and a
# JIT would add its one-time start-up (about 0.4 s) to every run's learner overhead.
def _tsallis_weights(L: np.ndarray, eta: float) -> np.ndarray:
    """Tsallis-INF's distribution ``p_i = 4 (eta (L_i - x))^-2`` with ``sum p = 1``: Newton's
    method on the convex increasing ``f(x) = sum p - 1`` from a point where ``f >= 0``."""
    Lm = L - L.min()
    x = -2.0 / eta                      # the smallest weight is exactly 1 here
    for _ in range(100):
        w = 4.0 / (eta * (Lm - x)) ** 2
        f = w.sum() - 1.0
        if f < 1e-12:
            break
        x -= f / (eta * np.sum(w * np.sqrt(w)))
    w = 4.0 / (eta * (Lm - x)) ** 2
    return w / w.sum()


def _sample(p: np.ndarray, u: float) -> int:
    """Index drawn from the (unnormalised) weights ``p`` with the uniform variate ``u``."""
    cdf = np.cumsum(p)
    i = int(np.searchsorted(cdf, u * cdf[-1], side="right"))
    if i >= p.size or p[i] <= 0:        # round-off at the top end: the last value with weight
        i = int(np.flatnonzero(p > 0)[-1])
    return i


def _chebyshev(z: float, m: int) -> np.ndarray:
    out = np.empty(m)
    out[0] = 1.0
    if m > 1:
        out[1] = z
    for k in range(2, m):
        out[k] = 2.0 * z * out[k - 1] - out[k - 2]
    return out


def _min_norm_solve(G: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The minimum-norm least-squares solution of ``G theta = c`` (G symmetric PSD)."""
    lam, V = np.linalg.eigh(G)
    keep = lam > 1e-12 * max(lam.max(), 1e-300)
    return V[:, keep] @ ((V[:, keep].T @ c) / lam[keep])


def _box_qp(G: np.ndarray, c: np.ndarray, ub: np.ndarray) -> np.ndarray:
    """``argmin theta^T G theta - 2 c^T theta`` subject to ``|theta| <= ub`` (G symmetric PSD),
    as a bounded least-squares problem on G's square root."""
    from scipy.optimize import lsq_linear

    lam, V = np.linalg.eigh(G)
    keep = lam > 1e-12 * max(lam.max(), 1e-300)
    R = np.sqrt(lam[keep])[:, None] * V[:, keep].T
    z = (V[:, keep].T @ c) / np.sqrt(lam[keep])
    return lsq_linear(R, z, bounds=(-ub, ub), method="bvls").x


class IGW(ChebCB):
    """Non-contextual inverse-gap weighting on each value's mean cost: ChebCB with degree 0.

    Our non-contextual learner for i.i.d.-like sequences (beyond the paper): the predicted best
    value is played with the remaining probability, value ``i`` with ``1 / (d + eta gap_i)``,
    ``eta`` on ChebCB's adaptive schedule times ``eta_scale``. Unlike :class:`TsallisINF` it
    estimates each value's mean cost from its own plays (no importance weighting), which is far
    less noisy when costs are heavy-tailed; it assumes the costs do not drift over time (for
    drifting costs use a contextual learner, or :class:`TsallisINF`, which is adversarially
    robust). ``eta_scale = 3`` was chosen on the shifted-Laplacian sequences (held-out seeds in
    benchmarks/results/tuning_laplacian.md; anything in [3, 10] behaved alike).
    """

    kind = "igw"
    contextual = False

    def __init__(self, arms: Sequence[float] | None = None, *, eta_scale: float = 3.0,
                 seed: int = 0, floor: float = 1.0) -> None:
        super().__init__(arms, (0.0, 1.0), degree=0, eta_scale=eta_scale, seed=seed, floor=floor)

    def _check_context(self, context):
        Learner._check_context(self, context)  # validated, then ignored
        return 0.5

    def config(self):
        return {"arms": self.arms.tolist(), "seed": self.seed, "floor": self.floor,
                "eta_scale": self.eta_scale}


class FixedValue(Learner):
    """Always the same value: the baseline a learner is compared with (``--learner fixed``)."""

    kind = "fixed"

    def __init__(self, value: float, *, seed: int = 0, floor: float = 1.0) -> None:
        super().__init__([value], seed=seed, floor=floor)

    def _choose(self, context):
        return 0

    def _observe(self, index, cost):
        pass

    def config(self):
        return {"value": float(self.arms[0]), "seed": self.seed, "floor": self.floor}

    def _state(self):
        return {}

    def _load_state(self, state):
        pass


LEARNERS: dict[str, type[Learner]] = {c.kind: c for c in (TsallisINF, IGW, BinnedTsallisINF, ChebCB,
                                                           FixedValue)}


def make_learner(kind: str, **kwargs: Any) -> Learner:
    """A learner by name (``tsallis``, ``igw``, ``binned-tsallis``, ``chebcb``, ``fixed``)."""
    key = kind.lower().replace("_", "-")
    if key not in LEARNERS:
        raise InputError(f"unknown learner {kind!r}; known: {', '.join(LEARNERS)}")
    try:
        return LEARNERS[key](**kwargs)
    except TypeError as err:
        raise InputError(f"learner {key}: {err}") from None


def learner_from_state(state: dict[str, Any]) -> Learner:
    """Rebuild a learner from :meth:`Learner.state_dict` (the inverse, exactly)."""
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise InputError("not a hybridsolve learner checkpoint")
    if state.get("version") != _VERSION:
        raise InputError(f"learner checkpoint version {state.get('version')} is not {_VERSION}")
    try:
        learner = make_learner(state["kind"], **state["config"])
        learner.t = int(state["t"])
        learner.pending = state["pending"]
        learner._context = state["context"]
        learner.rng.bit_generator.state = state["rng"]
        learner.history = {k: list(v) for k, v in state["history"].items()}
        learner._load_state(state["state"])
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"learner checkpoint is incomplete or corrupt ({err!r})") from None
    return learner


def load_learner(path: str | os.PathLike, run: dict | None = None) -> Learner:
    """Read a learner written by :meth:`Learner.save`; with ``run``, a checkpoint written by a
    run of another configuration is refused, naming what differs."""
    path = Path(path)
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"learner checkpoint {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"learner checkpoint {path} is not valid JSON ({err})") from None
    if run is not None and isinstance(state, dict):
        saved = state.get("run") or {}
        keys = sorted(set(run) | set(saved))
        diff = [f"{k} {saved.get(k)!r} (now {run.get(k)!r})" for k in keys
                if json.dumps(saved.get(k)) != json.dumps(run.get(k))]
        if diff:
            raise InputError(f"checkpoint {path} is from another configuration: "
                             f"{'; '.join(diff)}; use another --checkpoint or delete it")
    try:
        return learner_from_state(state)
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
