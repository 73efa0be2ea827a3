"""Learned components inside PETSc solvers.

* :mod:`~hybridsolve.learned.models`: torch networks on grid fields (:class:`DCDMNet`), weights
  I/O (safetensors, ``weights_only`` state dicts), the shipped model (``dcdm2d``); no PETSc;
* :mod:`~hybridsolve.learned.training`: DCDM's label-free training on Ritz-vector data;
* :mod:`~hybridsolve.learned.petsc`: :class:`TorchPC` (``-pc_type python``) and :class:`DCDM`
  (``-ksp_type python``);
* :mod:`~hybridsolve.learned.physics`: NPSolver's label-free losses (Jacobi-PCG steps from the
  prediction as a detached target; the raw residual baseline) and the batched torch PCG on
  block-diagonal CSR systems they use (issue 15, first part);
* :mod:`~hybridsolve.learned.layout`: the grid order of a DOLFINx P1 space on a rectangle or box
  (:func:`save_grid_layout` returns the TorchPC options that use it).
"""

from hybridsolve.learned.layout import grid_permutation, save_grid_layout  # noqa: F401
