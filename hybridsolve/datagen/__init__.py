"""``hybridsolve datagen``: generate a neural-operator dataset from a family, fast and restartably.

Pipeline (SKR, Wang et al., ICLR 2024, with the choices measured here):

1. draw the ``count`` parameter arrays of a family from the seed (identical on every rank);
2. sort them into a chain where neighbours are similar (:mod:`hybridsolve.recycling.sorting`);
3. solve the chain with one KSP that carries information from system to system: a recycled
   Krylov space (GCRO-DR for nonsymmetric/indefinite families, recycling CG on request), the
   neighbour's solution as the initial guess, and for fixed-matrix families the matrix and its
   preconditioner set up once;
4. write each sample as soon as it is verified, atomically, to ``<out>.parts/``; at the end
   verify every sample against the true residual of its own freshly assembled system and
   assemble one HDF5 file (written to a temporary name and renamed: atomic).

Killing the job at any moment (``kill -9`` of any rank included) loses at most the samples being
solved: rerunning the same command resumes from the parts and ends with exactly ``count``
verified samples. A parts folder or dataset made with another configuration is refused.

MPI modes: ``data`` (default) splits the sorted chain into P contiguous chains, one per rank,
each solved on ``COMM_SELF``; ``domain`` solves every system on all ranks (for large systems).
Sequential families (``heat``) are solved in time order, in ``domain`` mode.

The tolerance is on the true residual relative to the right-hand side,
``||b - A x|| / ||b|| <= tol``, whatever the initial guess (so warm starts count).

HDF5 layout (``load`` reads it back): ``inputs`` (count, *param_shape), ``solutions``
(count, n_dofs) in the family's canonical numbering, or (count, *grid) when the unknowns form a
tensor grid (then indexed like the inputs: ``[ix, iy(, iz)]``), ``coordinates`` (n_dofs, dim)
in the same order as the flat solutions, ``grid_order`` (the permutation from flat to grid
order, when a grid exists), per-sample ``iterations``, ``solve_time``, ``true_residual``,
``chain_position``, ``rank``, ``fallback`` (1 where the chain's solver missed the tolerance and
unpreconditioned GMRES(200) finished the sample), and the provenance as JSON in the attribute
``provenance`` (with ``fallbacks``, their count, and ``ksp``, what the chain's KSP says it is).

Solvers: ``auto`` or any method of :mod:`hybridsolve.solvers.registry` (``cg`` is ``pcg``); its
settings are PETSc options under the ``datagen_`` prefix (``-datagen_ksp_gcrodr_k 10``, or
``DatagenConfig(petsc={"ksp_gcrodr_k": 10})``); the command line has the last word.

Modules: :mod:`~hybridsolve.datagen.config` (what determines a dataset, the solver choice),
:mod:`~hybridsolve.datagen.store` (the parts folder, resume), :mod:`~hybridsolve.datagen.chain`
(solve + verify), :mod:`~hybridsolve.datagen.dataset` (the HDF5 file: the only place h5py is
loaded, on first read or write), :mod:`~hybridsolve.datagen.run` (the job).
"""

from hybridsolve.datagen.config import DatagenConfig, solver_names, solver_options
from hybridsolve.datagen.dataset import load
from hybridsolve.datagen.run import run
from hybridsolve.datagen.store import Parts

__all__ = ["DatagenConfig", "run", "load", "solver_names", "solver_options", "Parts"]
