"""Pictures people would rather look at than read (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["plot_convergence", "plot_tuning", "plot_meshes", "plot_wall_times"]


def plot_convergence(results: Sequence, path: str | Path, title: str = "",
                     labels: Sequence[str] | None = None) -> Path:
    """Residual histories (relative to each initial residual) of several solves, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    norms = set()
    for k, res in enumerate(results):
        h = np.asarray(res.residual_history, dtype=float)
        if h.size == 0:
            continue
        norms.add(res.residual_norm)
        rel = h / h[0] if h[0] > 0 else h
        ax.semilogy(np.arange(h.size), rel, lw=1.2,
                    label=labels[k] if labels else f"system {k} ({res.iterations} its)")
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"relative residual ({', '.join(sorted(norms)) or 'n/a'} norm)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if len(results) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_tuning(costs: np.ndarray, values: np.ndarray, path: str | Path, *,
                baselines: dict | None = None, cost_label: str = "iterations",
                value_label: str = "omega", title: str = "") -> Path:
    """A tuned sequence at a glance: cumulative cost (with constant-cost baselines, e.g. a fixed
    omega's per-solve costs) and the value chosen at each solve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8), dpi=110)
    a1.plot(np.cumsum(costs), lw=1.5, label="tuned")
    for name, c in (baselines or {}).items():
        a1.plot(np.cumsum(c), lw=1.0, ls="--", label=name)
    a1.set_xlabel("solve")
    a1.set_ylabel(f"cumulative {cost_label}")
    a1.grid(True, alpha=0.3)
    a1.legend(fontsize=8)
    a2.plot(values, ".", ms=2)
    a2.set_xlabel("solve")
    a2.set_ylabel(f"{value_label} chosen")
    a2.grid(True, alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_meshes(panels: list, path: str | Path, *, label: str = "", title: str = "",
                log: bool = False) -> Path | None:
    """Side-by-side 2-D meshes coloured by a per-cell value; ``panels`` is a list of
    ``(title, polygons (n, 3, 2), values or None)`` from
    :func:`hybridsolve.movement.gather_cells`. Call on rank 0 (the others hold no polygons)."""
    if panels is None or any(p[1] is None for p in panels):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import LogNorm, Normalize

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    k = len(panels)
    fig, axes = plt.subplots(1, k, figsize=(4.6 * k + 0.6, 4.4), dpi=120, squeeze=False)
    vals = [np.asarray(v) for _, _, v in panels if v is not None]
    norm = None
    if vals:
        lo = min(float(v.min()) for v in vals)
        hi = max(float(v.max()) for v in vals)
        norm = LogNorm(max(lo, 1e-12), max(hi, lo * 1.0001)) if log and lo > 0 else Normalize(lo, hi)
    coll = None
    for ax, (name, polys, v) in zip(axes[0], panels):
        if polys.shape[-1] != 2:
            ax.text(0.5, 0.5, "3-D mesh: see the XDMF file", ha="center")
            continue
        coll = PolyCollection(polys, array=None if v is None else np.asarray(v), cmap="viridis",
                              norm=norm, edgecolors="k", linewidths=0.15,
                              facecolors="none" if v is None else None)
        ax.add_collection(coll)
        ax.autoscale_view()
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if coll is not None and vals:
        fig.colorbar(coll, ax=axes[0].tolist(), shrink=0.85, label=label)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_wall_times(panels: dict[str, Sequence[tuple[str, float]]], path: str | Path, *,
                    xlabel: str = "wall time [s]", title: str = "") -> Path:
    """Horizontal bars of wall times, one panel per key (e.g. per family), each with its own
    methods: ``{"darcy": [("independent GMRES(40)", 3.1), ("SKR", 1.2)], ...}``, first on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(panels), 1, figsize=(8.0, 2.6 * len(panels)), dpi=110,
                             squeeze=False)
    for ax, (name, rows) in zip(axes[:, 0], panels.items()):
        ax.barh([r[0] for r in rows][::-1], [r[1] for r in rows][::-1], color="tab:blue")
        ax.set_xlabel(xlabel)
        ax.set_title(name)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
