"""Operators: matrix-free structured-grid operators whose hot loops are the Numba kernels."""

__all__ = ["StencilOperator", "create_stencil_mat", "slab_range"]


def __getattr__(name):
    if name in __all__:
        from hybridsolve.operators import petsc

        return getattr(petsc, name)
    raise AttributeError(name)
