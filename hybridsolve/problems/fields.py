"""Random fields that parameterise the families (pure numpy, identical on every rank)."""

from __future__ import annotations

import numpy as np
from numpy.polynomial import chebyshev

__all__ = ["gaussian_random_field", "chebyshev_coefficients", "chebyshev_eval",
           "fourier_field", "random_obstacles"]


def gaussian_random_field(rng: np.random.Generator, s: int, alpha: float = 2.5,
                          tau: float = 7.0, dim: int = 2) -> np.ndarray:
    """A sample of the Gaussian random field N(0, (-Laplace + tau^2)^-alpha) on ``s^dim`` points.

    The spectral construction of the FNO/SKR data generators (periodic on the unit box): Fourier
    coefficients ``s^dim sigma (4 pi^2 |k|^2 + tau^2)^(-alpha/2) xi`` with complex normal ``xi``,
    ``sigma = tau^(alpha - dim/2)``, mean zero.
    """
    k = np.fft.fftfreq(s, d=1.0 / s)
    grids = np.meshgrid(*([k] * dim), indexing="ij")
    k2 = sum(g**2 for g in grids)
    sigma = tau ** (0.5 * (2 * alpha - dim))
    sqrt_eig = s**dim * sigma * (4 * np.pi**2 * k2 + tau**2) ** (-alpha / 2)
    sqrt_eig.flat[0] = 0.0
    xi = rng.standard_normal((s,) * dim) + 1j * rng.standard_normal((s,) * dim)
    return np.real(np.fft.ifftn(sqrt_eig * xi))


def chebyshev_coefficients(rng: np.random.Generator, degree: int, decay: float = 2.0) -> np.ndarray:
    """Random coefficients ``c_ij ~ N(0, 1) / (1 + i + j)^decay`` of a 2-D Chebyshev series."""
    i, j = np.meshgrid(np.arange(degree), np.arange(degree), indexing="ij")
    return rng.standard_normal((degree, degree)) / (1.0 + i + j) ** decay


def chebyshev_eval(coeffs: np.ndarray, x: np.ndarray, y: np.ndarray,
                   box: tuple[float, float, float, float] = (0.0, 1.0, 0.0, 1.0)) -> np.ndarray:
    """Evaluate ``sum c_ij T_i(X) T_j(Y)`` with (X, Y) the point mapped from ``box`` to [-1, 1]^2."""
    x0, x1, y0, y1 = box
    return chebyshev.chebval2d(2 * (x - x0) / (x1 - x0) - 1, 2 * (y - y0) / (y1 - y0) - 1, coeffs)


def fourier_field(rng: np.random.Generator, shape: tuple[int, ...], modes: int = 4) -> np.ndarray:
    """A smooth random field on a grid: a sum of sines of the lowest ``modes`` per axis.

    Values at points ``(i + 1) h``, ``h = 1 / (n + 1)``; amplitudes decay like ``1 / |k|^2``.
    """
    dim = len(shape)
    axes = [np.arange(1, s + 1) / (s + 1) for s in shape]
    out = np.zeros(shape)
    ks = np.stack(np.meshgrid(*([np.arange(1, modes + 1)] * dim), indexing="ij"), -1).reshape(-1, dim)
    amps = rng.standard_normal(len(ks)) / np.sum(ks**2, axis=1)
    for kvec, amp in zip(ks, amps):
        term = np.ones(())
        for ax, kk in zip(axes, kvec):
            term = np.multiply.outer(term, np.sin(np.pi * kk * ax))
        out += amp * term
    return out / max(np.abs(out).max(), 1e-300)


def random_obstacles(rng: np.random.Generator, shape: tuple[int, ...], count: int,
                     size: tuple[float, float] = (0.1, 0.3)) -> np.ndarray:
    """A fluid mask (True = fluid) with ``count`` random solid boxes in the interior.

    Boxes keep at least one cell from the domain boundary. Fluid regions the solids cut off
    from the boundary (they would make the Neumann/Dirichlet problem singular) become solid.
    """
    from scipy import ndimage  # a third of a second to import: only when obstacles are drawn

    mask = np.ones(shape, dtype=bool)
    for _ in range(count):
        sl = []
        for s in shape:
            w = max(1, int(round(rng.uniform(*size) * s)))
            w = min(w, max(1, s - 2))
            start = int(rng.integers(1, max(2, s - w)))
            sl.append(slice(start, min(start + w, s - 1)))
        mask[tuple(sl)] = False
    labels, nlab = ndimage.label(mask)
    if nlab > 1:
        border = np.zeros(shape, dtype=bool)
        for ax in range(len(shape)):
            idx = [slice(None)] * len(shape)
            idx[ax] = 0
            border[tuple(idx)] = True
            idx[ax] = -1
            border[tuple(idx)] = True
        keep = np.unique(labels[border & mask])
        mask &= np.isin(labels, keep[keep > 0])
    return mask
