"""Pictures people would rather look at than read (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["plot_convergence"]


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
