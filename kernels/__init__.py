"""Numba kernels for the hot loops (installed as ``hybridsolve.kernels``).

CPU twins use ``numba.njit``; GPU twins use ``numba.cuda.jit``. Each kernel is tested against a
plain numpy reference (GPU twins under ``NUMBA_ENABLE_CUDASIM=1`` in CI).
"""
