"""Krylov subspace recycling for sequences of linear systems, and the sorts that order them (SKR).

* :class:`~hybridsolve.recycling.petsc.GCRODR`: GCRO-DR(m, k) as a PETSc KSP of python type
  (``-ksp_type python -ksp_python_type hybridsolve.recycling.petsc.GCRODR``).
* :class:`~hybridsolve.recycling.petsc.RecyclingCG`: deflated CG with a recycled Ritz space for
  SPD sequences (``-ksp_python_type hybridsolve.recycling.petsc.RecyclingCG``).
* :mod:`hybridsolve.recycling.sorting`: greedy nearest-neighbour chains and a scalable ordering.
"""

__all__ = ["GCRODR", "RecyclingCG"]


def __getattr__(name):
    if name in __all__:
        from hybridsolve.recycling import petsc

        return getattr(petsc, name)
    raise AttributeError(name)
