"""SciPy CSR matrices as torch tensors, and the rows a network's output is kept on: the one place
for both (training, MGNet's levels and the physics-supervision batches use them)."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp


def torch_csr(A: sp.spmatrix, dtype, device=None):
    """``A`` as a torch sparse CSR tensor of ``dtype`` on ``device`` (index arrays int64)."""
    import torch

    A = A.tocsr()
    if not A.has_sorted_indices:      # products of SciPy matrices need not be sorted
        A = A.sorted_indices()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(torch.from_numpy(A.indptr.astype(np.int64)),
                                       torch.from_numpy(A.indices.astype(np.int64)),
                                       torch.from_numpy(np.ascontiguousarray(A.data)).to(dtype),
                                       size=A.shape, device=device, check_invariants=False)


def coupled_mask(A: sp.spmatrix) -> np.ndarray:
    """1 on rows that couple to other unknowns, 0 on decoupled (diagonal-only) rows: where
    :class:`~hybridsolve.learned.petsc.TorchPC` zeroes the model's output (``-pc_torch_mask``)."""
    A = A.tocsr()
    off = np.diff(A.indptr) - (A.diagonal() != 0)
    return (off > 0).astype(float)
