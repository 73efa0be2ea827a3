"""``hybridsolve datagen``: generate a neural-operator dataset from a family, fast and restartably.

Pipeline (SKR, Wang et al., ICLR 2024, with the choices measured here):

1. draw the ``count`` parameter arrays of a family from the seed (identical on every rank);
2. sort them into a chain where neighbours are similar (:mod:`hybridsolve.recycling.sorting`);
3. solve the chain with one KSP that carries information from system to system: a recycled
   Krylov space (GCRO-DR for nonsymmetric/indefinite families, recycling CG on request), the
   neighbour's solution as the initial guess, and for fixed-matrix families the matrix and its
   preconditioner set up once;
4. write each sample as soon as it is verified, atomically and already compressed, to
   ``<out>.parts/``; at the end
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

HDF5 layout, format version 2 (the ``format_version`` attribute; the attribute ``layout``
says, as JSON, what each array of this file is indexed by): ``inputs`` (count, *param_shape),
the parameter arrays the systems are assembled from; ``solutions`` (count, *grid) when the
unknowns form a tensor grid, on the same grid as the inputs where the family has an input field
(Darcy, grid and FEM discretization alike: ``(count, n + 1, n + 1)`` for both arrays, boundary
included: the grid discretization's boundary nodes hold the Dirichlet value 0; ``grid``: the
interior points, ``inputs[s, c]`` goes with ``solutions[s]``), else (count, n_dofs) in the
family's canonical order; ``coordinates`` (n_dofs, dim) of the unknowns in canonical order,
``grid_index`` (where each unknown is in a flattened grid sample) and ``grid_coordinates``
(*grid, dim); per-sample ``iterations``, ``solve_time``, ``true_residual``, ``chain_position``,
``rank``, ``fallback`` (1 where the chain's solver missed the tolerance and a direct solve
(GMRES + LU; matrix-free: GMRES(200)) finished the sample); the provenance as JSON in the attribute ``provenance`` (with
``fallbacks``, their count, ``ksp``, what the chain's KSP says it is, and ``options``, every
family option with its value). Every array is gzip-compressed; ``inputs`` and ``solutions`` hold one sample per chunk,
compressed by the rank that solved it (the final write copies the chunks).
:func:`load` opens it lazily (a :class:`Dataset`: ``len``, ``ds[i] -> (input, solution)``,
``.read()`` for everything in memory); :class:`TorchDataset` (imports torch on first use)
yields ``(input, solution)`` tensors; :func:`verify` (``hybridsolve verify FILE``) re-assembles
every sample and recomputes its true residual. Version 1 files (no ``format_version``) load.

A resumed run compares configurations normalised: family options parsed by their type, those
equal to the default left out (``--opt alpha=2.5`` is darcy's default: the same
configuration); a different one is refused with the difference named. Temporaries a kill left
behind (the final file's, the parts') are removed when the next run starts. Progress counts
every rank's samples (rank 0 counts the parts folder about once a second): a bar on a
terminal, plain lines (every tenth of the samples, at least every 10 s) in a log.

Solvers: ``auto`` or any method of :mod:`hybridsolve.solvers.registry` (``cg`` is ``pcg``); its
settings are PETSc options under the ``datagen_`` prefix (``-datagen_ksp_gcrodr_k 10``, or
``DatagenConfig(petsc={"ksp_gcrodr_k": 10})``); the command line has the last word.

Modules: :mod:`~hybridsolve.datagen.config` (what determines a dataset, the solver choice),
:mod:`~hybridsolve.datagen.store` (the parts folder, resume), :mod:`~hybridsolve.datagen.chain`
(solve + verify), :mod:`~hybridsolve.datagen.dataset` (the HDF5 file: the only place h5py is
loaded, on first read or write), :mod:`~hybridsolve.datagen.run` (the job),
:mod:`~hybridsolve.datagen.progress` (the global count), :mod:`~hybridsolve.datagen.verify`
(checking a finished file), :mod:`~hybridsolve.datagen.torchdata` (the torch Dataset).
"""

from hybridsolve.datagen.config import DatagenConfig, solver_names, solver_options
from hybridsolve.datagen.dataset import Dataset, load
from hybridsolve.datagen.run import run
from hybridsolve.datagen.store import Parts
from hybridsolve.datagen.verify import verify

__all__ = ["DatagenConfig", "run", "load", "Dataset", "TorchDataset", "verify", "solver_names",
           "solver_options", "Parts"]


def __getattr__(name: str):
    """``TorchDataset`` imports torch: only when asked for."""
    if name == "TorchDataset":
        from hybridsolve.datagen.torchdata import TorchDataset

        return TorchDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
