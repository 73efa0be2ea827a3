"""NPSolver inside PETSc (issue 15 item 4): the network as an initial guess, as a preconditioner
of a flexible Krylov method, and as a stand-alone solver followed by k CG steps.

The network needs the mesh (it is the model's input, not a grid): :class:`MeshInputs` gathers,
once per function space and Dirichlet set, the vertex coordinates, the boundary facets (outward
normals, Dirichlet or Neumann) and the lumped mass on rank 0, in PETSc's global dof order; the
network runs there on the whole mesh and its output is scattered back, so the result is the same
on any number of ranks (up to float32 round-off in the attention sums).

A load vector ``r`` (a right-hand side or a residual) becomes the network's source as
``f = r / m_lumped`` on the free dofs, scaled to unit RMS (the training sources' scale); the
output is scaled back (Poisson is linear), zero on Dirichlet dofs.

By options, after ``opts = register_mesh("mine", V, dirichlet_dofs)``::

    -ksp_type fcg -ksp_fcg_mmax 30
    -pc_type python -pc_python_type hybridsolve.learned.npsolver_petsc.NPSolverPC
    -pc_npsolver_model auto|npsolver2d|npsolver3d|file  -pc_npsolver_mesh memory:mine|auto
    -pc_npsolver_fallback jacobi   -pc_npsolver_descent_tol 1e-4
    -pc_npsolver_smoother sor      -pc_npsolver_smooth_its 1   # "none": the network alone

``-pc_npsolver_model auto`` (the default) is the shipped network of the mesh's dimension
(npsolver2d on triangles, npsolver3d on tetrahedra). ``-pc_npsolver_mesh auto`` (the default) takes the mesh from a system of our DOLFINx families
(``hybridsolve solve --family cutsquare --method npsolver``): their matrices carry their P1
problem.

By default one application is the two-level cycle of :mod:`~hybridsolve.learned.cycle` (an SSOR
sweep, the network on the remaining residual with its A-norm step, an SSOR sweep): the network
alone is trained on smooth sources, and a Krylov residual is not smooth.

Safeguards as TorchPC's: a non-finite output or one (nearly) orthogonal to the residual is
replaced by the fallback PC (counted), an ascent direction is flipped (counted); the counts are
in ``-ksp_view`` and ``SolveResult.info["npsolver"]``.
"""

from __future__ import annotations

import numpy as np

from hybridsolve.errors import CollectiveError, InputError
from hybridsolve.learned.cycle import LearnedPC
from hybridsolve.parallel import collective_call
from hybridsolve.stack import MPI, PETSc

__all__ = ["MeshInputs", "register_mesh", "NPSolverPC", "initial_guess", "check_dim"]

_MESHES: dict[str, "MeshInputs"] = {}


class MeshInputs:
    """What the network sees of a DOLFINx P1 space with Dirichlet dofs, gathered on rank 0.

    Args:
        V: a scalar P1 ``functionspace`` on a triangle (2-D) or tetrahedral (3-D) mesh.
        dirichlet_dofs: local dof indices (owned and ghost, as ``locate_dofs_topological``
            returns them) where ``u`` is prescribed.
    """

    def __init__(self, V, dirichlet_dofs) -> None:
        import dolfinx

        mesh = V.mesh
        self.comm = comm = mesh.comm
        self.dim = tdim = mesh.topology.dim
        if tdim not in (2, 3) or mesh.geometry.dim != tdim or V.dofmap.index_map_bs != 1:
            raise InputError("NPSolver: a scalar P1 space on a 2-D triangle or 3-D tetrahedral "
                             f"mesh is needed (got topology {tdim}-D in {mesh.geometry.dim}-D, "
                             f"block size {V.dofmap.index_map_bs})")
        imap = V.dofmap.index_map
        nown, nloc = imap.size_local, imap.size_local + imap.num_ghosts
        self.n = imap.size_global
        self.range = imap.local_range
        l2g = imap.local_to_global(np.arange(nloc, dtype=np.int32)).astype(np.int64)
        coords = V.tabulate_dof_coordinates()[:, :tdim]
        dmask = np.zeros(nloc, dtype=bool)
        dmask[np.asarray(dirichlet_dofs, dtype=np.int64)] = True
        from hybridsolve.movement.monitors import lumped_mass

        ml = lumped_mass(V)   # row sums of the P1 mass matrix, owned and ghost dofs
        # boundary facets owned here
        from hybridsolve.learned.npsolver import boundary_facets

        mesh.topology.create_connectivity(tdim - 1, tdim)
        facets = dolfinx.mesh.exterior_facet_indices(mesh.topology)
        facets = facets[facets < mesh.topology.index_map(tdim - 1).size_local]
        fd, mid, nrm = boundary_facets(V, facets)
        fdir = dmask[fd].all(axis=1)
        own = slice(0, nown)
        gat = lambda arr: comm.gather(np.ascontiguousarray(arr), root=0)  # noqa: E731
        parts = [gat(l2g[own]), gat(coords[own]), gat(dmask[own]), gat(ml[:nown]),
                 gat(l2g[fd]), gat(mid), gat(nrm), gat(fdir)]
        self.owned_dmask = dmask[own].copy()
        self.owned_ml = ml[:nown].copy()
        if comm.rank == 0:
            idx = np.concatenate(parts[0])
            self.coords = np.empty((self.n, tdim))
            self.coords[idx] = np.concatenate(parts[1])
            self.dmask = np.empty(self.n, dtype=bool)
            self.dmask[idx] = np.concatenate(parts[2])
            self.bfacets = np.concatenate(parts[4])
            self.bmid, self.bnormal = np.concatenate(parts[5]), np.concatenate(parts[6])
            self.bdir = np.concatenate(parts[7])
            bnd = np.zeros(self.n, dtype=bool)
            bnd[self.bfacets.reshape(-1)] = True
            self.neumann = bnd & ~self.dmask
        counts = comm.allgather(nown)
        self.counts = np.array(counts)
        self.displs = np.concatenate([[0], np.cumsum(counts)[:-1]])
        if not comm.allreduce(bool(dmask[own].any()), op=MPI.LOR):
            raise InputError("NPSolver: no Dirichlet dof: a pure Neumann problem is singular "
                             "(this network was trained with at least one Dirichlet patch)")

    def features(self, f: np.ndarray):
        """Rank 0: the network's inputs for the nodal source ``f`` (global order)."""
        from hybridsolve.learned.meshnets import mesh_features

        return mesh_features(self.coords, f, self.dmask, self.neumann, self.bmid, self.bnormal,
                             self.bdir)

    def apply(self, model, r_owned: np.ndarray) -> np.ndarray:
        """The network's correction for the owned part of a load vector (collective)."""
        import torch

        f = np.where(self.owned_dmask, 0.0, r_owned / np.maximum(self.owned_ml, 1e-300))
        comm = self.comm
        full = np.empty(self.n) if comm.rank == 0 else None
        comm.Gatherv(np.ascontiguousarray(f), (full, (self.counts, self.displs)) if comm.rank == 0
                     else None, root=0)
        out = None
        if comm.rank == 0:
            scale = float(np.sqrt(np.mean(full[~self.dmask] ** 2))) if (~self.dmask).any() else 0.0
            if scale > 0:
                pts, btok = self.features(full / scale)
                p0 = next(model.parameters())     # the model's device and dtype (a GPU: there)
                with torch.no_grad():
                    y = model(pts.to(p0.device, p0.dtype), btok.to(p0.device, p0.dtype))
                    out = y.double().cpu().numpy() * scale
            else:
                out = np.zeros(self.n)
            out = np.ascontiguousarray(out)
        z = np.empty(len(r_owned))
        comm.Scatterv((out, (self.counts, self.displs)) if comm.rank == 0 else None, z, root=0)
        z[self.owned_dmask] = r_owned[self.owned_dmask]   # identity rows of a DOLFINx system
        return z


def register_mesh(name: str, V, dirichlet_dofs) -> dict:
    """Register a space's mesh inputs under ``name``; returns the PC options that use it
    (add ``pc_npsolver_model``)."""
    _MESHES[name] = MeshInputs(V, dirichlet_dofs)
    return {"pc_type": "python", "pc_python_type": "hybridsolve.learned.npsolver_petsc.NPSolverPC",
            "pc_npsolver_mesh": f"memory:{name}"}


def _load(source: str):
    from hybridsolve.learned.models import load_model

    m = load_model(source)
    if type(m).__name__ != "NPSolverNet":
        raise InputError(f"{source} holds a {type(m).__name__}, not an NPSolver network")
    return m.eval()


def check_dim(model, inputs: MeshInputs, source: str = "the model") -> None:
    """A network trained on 2-D meshes cannot read a 3-D mesh (and back): a clear error on every
    rank (the model and the mesh are the same everywhere)."""
    dim = getattr(model, "dim", 2)
    if dim != inputs.dim:
        raise InputError(f"NPSolver: {source} was trained on {dim}-D meshes, this space is "
                         f"{inputs.dim}-D (shipped: npsolver2d for triangles, npsolver3d for "
                         "tetrahedra)")


def initial_guess(model, inputs: MeshInputs, b: PETSc.Vec, x: PETSc.Vec) -> None:
    """Write the network's prediction for the load vector ``b`` into ``x`` (collective); a
    non-finite prediction is an error (use a zero guess instead)."""
    check_dim(model, inputs)
    r0, r1 = b.getOwnershipRange()
    z = inputs.apply(model, b.getArray(readonly=True))
    bad = inputs.comm.allreduce(not np.isfinite(z).all(), op=MPI.LOR)
    if bad:
        raise CollectiveError("NPSolver initial guess: the network returned NaN/Inf")
    x.getArray()[:] = z      # the Dirichlet rows hold b there (MeshInputs.apply): u = g exact


class NPSolverPC(LearnedPC):
    """NPSolver as a preconditioner: ``z = net(r)`` on the mesh, inside the SSOR cycle by
    default, with the safeguards of every learned PC (:class:`~hybridsolve.learned.cycle.LearnedPC`)."""

    name = "NPSolverPC"
    options_key = "npsolver"
    info_key = "npsolver"
    default_smoother = "sor"

    def __init__(self) -> None:
        super().__init__()
        self.source: str | None = "auto"
        self.mesh_name: str | None = "auto"
        self.model = None

    def configure(self) -> None:
        src = self.option("model", self.source or "", str) or None
        if src != self.source:
            self.source, self.model = src, None
            self._initialized = False
        mesh = self.option("mesh", self.mesh_name or "", str) or None
        if mesh != self.mesh_name:
            self.mesh_name = mesh
            self._initialized = False
        self.configure_safeguards()

    def initialize(self, pc) -> None:
        A, P = pc.getOperators()
        comm = A.getComm().tompi4py()
        mesh = self.mesh_name or "auto"
        if mesh == "auto":
            # a system of one of our DOLFINx families carries its P1 problem on the Mat
            prob = A.getDict().get("hybridsolve.p1problem") if A.getType() != "python" else None
            if prob is None:
                raise InputError(f"-{self.prefix}pc_npsolver_mesh auto: this operator does not "
                                 "come from a hybridsolve P1 family; give memory:<name> after "
                                 "hybridsolve.learned.npsolver_petsc.register_mesh(name, V, "
                                 "dofs)")
            key = ("auto", id(prob))
            if self.__dict__.get("_auto_key") != key:
                self._auto = MeshInputs(prob.V, prob.bcs[0].dof_indices()[0])
                self._auto_key = key
            self.inputs = self._auto
        elif mesh.startswith("memory:") and mesh[7:] in _MESHES:
            self.inputs = _MESHES[mesh[7:]]
        else:
            raise InputError(f"-{self.prefix}pc_npsolver_mesh: auto or memory:<name> after "
                             "hybridsolve.learned.npsolver_petsc.register_mesh(name, V, dofs) "
                             f"(got {self.mesh_name!r}; registered: {sorted(_MESHES)})")
        if self.inputs.n != A.getSize()[0] or tuple(self.inputs.range) != A.getOwnershipRange():
            raise InputError(f"NPSolverPC: the registered mesh has {self.inputs.n} dofs "
                             f"(rows {self.inputs.range} here), the operator {A.getSize()[0]} "
                             f"(rows {A.getOwnershipRange()}): another space or layout")
        if self.source is None:
            raise InputError(f"no model: give -{self.prefix}pc_npsolver_model <file>")
        name = f"npsolver{self.inputs.dim}d" if self.source == "auto" else self.source
        if self.model is None or self.__dict__.get("_loaded") != name:
            self.model = collective_call(comm, lambda: _load(name), "NPSolverPC")
            self._loaded = name
        check_dim(self.model, self.inputs, name)
        self.build_safeguards(A, P)

    def network_block(self, R: np.ndarray) -> np.ndarray:
        return self.inputs.apply(self.model, R[:, 0])[:, None]

    def describe(self) -> str:
        return (f"NPSolverPC: model {self.__dict__.get('_loaded', self.source)}, mesh "
                f"{self.mesh_name}; applications {self.stats['applications']}; "
                f"{self.safeguard_text()}")
