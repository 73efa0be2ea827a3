"""Distributed linear algebra helpers (DOLFINx's ``la`` is the model).

Everything that needs PETSc is in :mod:`hybridsolve.la.petsc`: ownership ranges, distributed
``Mat``/``Vec`` from local rows, gathers in a canonical (rank-independent) numbering, ghost
updates, operator identity, and :class:`~hybridsolve.la.petsc.MultiVec`, a block of distributed
vectors stored as one array (the recycle spaces and Krylov bases of ``hybridsolve.recycling``).
"""
