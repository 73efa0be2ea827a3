"""Which grid point each unknown is: the layout :class:`~hybridsolve.learned.petsc.TorchPC` needs
to run a grid network on an operator whose unknowns are not numbered in grid order.

A DOLFINx P1 space on a rectangle or box numbers its dofs for locality, not as a grid::

    opts = hybridsolve.learned.save_grid_layout(V, "layout.npy")   # collective
    # {"pc_torch_permutation": "layout.npy", "pc_torch_shape": "41,41", "pc_torch_mode": "gathered"}
    problem = LinearProblem(a, L, bcs=bcs, petsc_options={**opts, "ksp_type": "fcg", ...})

Without it, TorchPC checks the operator's sparsity against the grid it assumes and refuses an
operator that couples points more than one grid step apart (``-pc_torch_layout_check``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hybridsolve.errors import InputError

__all__ = ["grid_permutation", "save_grid_layout"]


def grid_permutation(V) -> tuple[tuple[int, ...], np.ndarray]:
    """``(shape, perm)`` for a scalar DOLFINx space whose dofs form a tensor grid (P1/Q1 on a
    mesh of a rectangle or box with a uniform vertex grid, ``create_unit_square``,
    ``create_rectangle``, ``create_box``): ``perm[g]`` is the global PETSc index of grid point
    ``g`` (C order, x slowest), the same on every rank. Collective on the mesh's communicator.

    Raises:
        InputError: the space is not scalar or its dofs do not form a tensor grid (every rank).
    """
    from hybridsolve.problems.grid import tensor_grid

    comm = V.mesh.comm
    imap = V.dofmap.index_map
    bs = V.dofmap.index_map_bs
    nown = imap.size_local
    tdim = V.mesh.topology.dim
    coords = V.tabulate_dof_coordinates()[:nown, :tdim]
    glob = imap.local_to_global(np.arange(nown, dtype=np.int32)).astype(np.int64)
    allc = np.concatenate(comm.allgather(coords))
    allg = np.concatenate(comm.allgather(glob))
    if bs != 1:
        raise InputError(f"grid_permutation: a scalar space is needed (block size {bs})")
    found = tensor_grid(allc)
    if found is None:
        raise InputError(f"grid_permutation: the {len(allc)} dofs of this space do not form a "
                         "tensor grid (a P1/Q1 space on a rectangle or box mesh with a uniform "
                         "vertex grid); a grid network cannot run on it")
    shape, index, _ = found
    perm = np.empty(len(index), dtype=np.int64)
    perm[index] = allg
    return shape, perm


def save_grid_layout(V, path: str | Path) -> dict[str, str]:
    """Write :func:`grid_permutation`'s permutation to ``path`` (``.npy``, rank 0) and return
    the TorchPC options that use it (``pc_torch_permutation``, ``pc_torch_shape``,
    ``pc_torch_mode gathered``), to merge into ``petsc_options``. Collective."""
    comm = V.mesh.comm
    shape, perm = grid_permutation(V)
    path = str(comm.bcast(str(path), root=0))
    if not path.endswith(".npy"):
        path += ".npy"     # what np.save writes
    err = None
    if comm.rank == 0:
        try:
            np.save(path, perm)
        except OSError as exc:
            err = f"save_grid_layout: cannot write {path}: {exc}"
    err = comm.bcast(err, root=0)
    if err:
        raise InputError(err)
    return {"pc_torch_permutation": path, "pc_torch_shape": ",".join(str(s) for s in shape),
            "pc_torch_mode": "gathered"}
