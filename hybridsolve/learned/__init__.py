"""Learned components inside PETSc solvers.

* :mod:`~hybridsolve.learned.models`: torch networks on grid fields (:class:`DCDMNet`), weights
  I/O (safetensors, ``weights_only`` state dicts), the shipped model (``dcdm2d``); no PETSc;
* :mod:`~hybridsolve.learned.training`: DCDM's label-free training on Ritz-vector data;
* :mod:`~hybridsolve.learned.petsc`: :class:`TorchPC` (``-pc_type python``) and :class:`DCDM`
  (``-ksp_type python``).
"""
