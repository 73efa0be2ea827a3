"""DOLFINx side of the problem families: meshes and a P1 scalar elliptic model.

The weak form is ``(kappa grad u, grad v) + (c u, v) = (f, v) + sum_i (q_i, v)_{Gamma_i}`` with
``u = g`` on the Dirichlet facets. Coefficients are DOLFINx ``Function``/``Constant`` objects, so
the forms compile once per family and only their values change along a sequence.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from hybridsolve.stack import MPI, PETSc  # noqa: F401  (import order: MPI, dolfinx_solver, PETSc)
from hybridsolve.la.petsc import assemble_ghosts

import dolfinx  # noqa: E402
import dolfinx.fem.petsc  # noqa: E402
import ufl  # noqa: E402

__all__ = ["unit_square", "gmsh_domain", "P1Problem", "P1DiffusionMatrix", "GMSH_DOMAINS"]


def unit_square(comm: MPI.Comm, n: int) -> dolfinx.mesh.Mesh:
    """An ``n x n`` right-diagonal triangle mesh of the unit square."""
    return dolfinx.mesh.create_unit_square(comm, n, n, dolfinx.mesh.CellType.triangle)


def _lshape_hole(gmsh, h: float) -> None:
    occ = gmsh.model.occ
    sq = occ.addRectangle(0, 0, 0, 1, 1)
    corner = occ.addRectangle(0.5, 0.5, 0, 0.5, 0.5)
    hole = occ.addDisk(0.3, 0.3, 0, 0.12, 0.12)
    occ.cut([(2, sq)], [(2, corner), (2, hole)])


def _slot(gmsh, h: float) -> None:
    occ = gmsh.model.occ
    rect = occ.addRectangle(0, 0, 0, 2, 1)
    slot = occ.addRectangle(0.95, 0.4, 0, 0.1, 0.6)
    occ.cut([(2, rect)], [(2, slot)])


def _lshape(gmsh, h: float) -> None:
    occ = gmsh.model.occ
    sq = occ.addRectangle(0, 0, 0, 1, 1)
    corner = occ.addRectangle(0.5, 0.5, 0, 0.5, 0.5)
    occ.cut([(2, sq)], [(2, corner)])


def _square_hole(gmsh, h: float) -> None:
    occ = gmsh.model.occ
    sq = occ.addRectangle(0, 0, 0, 1, 1)
    hole = occ.addRectangle(0.35, 0.35, 0, 0.3, 0.3)
    occ.cut([(2, sq)], [(2, hole)])


def _square(gmsh, h: float) -> None:
    gmsh.model.occ.addRectangle(0, 0, 0, 1, 1)


def _rectangle(gmsh, h: float) -> None:
    gmsh.model.occ.addRectangle(0, 0, 0, 1.5, 1)


GMSH_DOMAINS: dict[str, Callable] = {"lshape_hole": _lshape_hole, "slot": _slot,
                                     "lshape": _lshape, "square_hole": _square_hole,
                                     "square": _square, "rectangle": _rectangle}


def gmsh_domain(comm: MPI.Comm, kind: str | Callable, n: int, dim: int = 2) -> dolfinx.mesh.Mesh:
    """A triangle mesh of a named 2-D gmsh domain with mesh size ``1 / n`` (``dim = 3``: a
    tetrahedral mesh of the volume a callable ``kind`` adds, e.g. :mod:`~hybridsolve.problems.cutbox`).

    Built on rank 0 only (single-threaded, so the same mesh whatever the number of ranks) and
    distributed by DOLFINx. Domains: ``lshape_hole`` (unit-square L-shape with a circular hole),
    ``slot`` (a 2 x 1 rectangle with a slot cut from the top edge), ``lshape`` (the unit square
    without its upper right quarter), ``square_hole`` (the unit square with a 0.3 x 0.3 square
    hole in the middle), ``square`` (the unit square, unstructured) and ``rectangle`` (1.5 x 1). ``kind`` may also be a callable ``build(gmsh, h)`` that adds the
    geometry to the current gmsh model (e.g. :mod:`~hybridsolve.problems.cutsquare`).
    """
    build = kind if callable(kind) else GMSH_DOMAINS[kind]
    kind = getattr(build, "__name__", "custom") if callable(kind) else kind
    try:
        import gmsh
    except (ImportError, OSError) as err:  # the wheel needs libGLU/libXrender etc. from the OS
        from hybridsolve.errors import InputError

        raise InputError(f"domain {kind!r} needs gmsh, which failed to load: {err}") from None
    from dolfinx.io import gmsh as dgmsh

    if comm.rank == 0:
        if not gmsh.isInitialized():
            gmsh.initialize(interruptible=False)
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.option.setNumber("General.NumThreads", 1)
        gmsh.model.add(f"hybridsolve_{kind}")
        build(gmsh, 1.0 / n)
        gmsh.model.occ.synchronize()
        cells = [tag for _, tag in gmsh.model.getEntities(dim)]
        gmsh.model.addPhysicalGroup(dim, cells, 1)
        facets = [tag for _, tag in gmsh.model.getEntities(dim - 1)]
        gmsh.model.addPhysicalGroup(dim - 1, facets, 1)
        gmsh.option.setNumber("Mesh.CharacteristicLengthMax", 1.0 / n)
        gmsh.option.setNumber("Mesh.CharacteristicLengthMin", 0.5 / n)
        gmsh.option.setNumber("Mesh.Algorithm", 6)
        gmsh.model.mesh.generate(dim)
    try:
        data = dgmsh.model_to_mesh(gmsh.model, comm, 0, gdim=dim)
    finally:
        if comm.rank == 0:
            gmsh.model.remove()
    return data.mesh


class P1Problem:
    """Continuous P1 on ``mesh`` for ``(kappa grad u, grad v) + (c u, v) = (f, v) + Neumann``.

    Args:
        mesh: a DOLFINx mesh (degree-1 geometry).
        V: the P1 space on ``mesh`` the coefficients were created in (created when ``None``).
        kappa, reaction, source: UFL expressions (``Function``, ``Constant``, expressions in
            ``ufl.SpatialCoordinate``); ``None`` means 1, 0 and 0.
        dirichlet: locally owned-or-ghost facet indices with ``u = g``; default every
            boundary facet.
        g: the Dirichlet value as a ``Function`` in :attr:`V` (or ``None`` for zero).
        neumann: ``{tag: flux}`` fluxes on facets of ``facet_tags``.
        facet_tags: ``MeshTags`` of the boundary facets used by ``neumann``.
    """

    def __init__(self, mesh, *, V=None, kappa: Any = None, reaction: Any = None, source: Any = None,
                 dirichlet: np.ndarray | None = None, g: Any = None,
                 neumann: dict[int, Any] | None = None, facet_tags=None) -> None:
        self.mesh = mesh
        self.V = V if V is not None else dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
        V = self.V
        u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
        k = 1.0 if kappa is None else kappa
        a = k * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
        if reaction is not None:
            a += reaction * u * v * ufl.dx
        zero = dolfinx.fem.Constant(mesh, PETSc.ScalarType(0.0))
        L = (zero if source is None else source) * v * ufl.dx
        if neumann:
            ds = ufl.Measure("ds", domain=mesh, subdomain_data=facet_tags)
            for tag, q in neumann.items():
                L += q * v * ds(tag)
        tdim = mesh.topology.dim
        mesh.topology.create_connectivity(tdim - 1, tdim)
        if dirichlet is None:
            dirichlet = dolfinx.mesh.exterior_facet_indices(mesh.topology)
        dofs = dolfinx.fem.locate_dofs_topological(V, tdim - 1, dirichlet)
        if g is None:
            g = dolfinx.fem.Function(V)
        self.g = g
        self.bcs = [dolfinx.fem.dirichletbc(g, dofs)]
        self.a = dolfinx.fem.form(a)
        self.L = dolfinx.fem.form(L)
        self._ordering()

    def _ordering(self) -> None:
        """Canonical numbering of the owned dofs: the mesh's original (input) vertex indices."""
        V, mesh = self.V, self.mesh
        imap = V.dofmap.index_map
        nloc = imap.size_local + imap.num_ghosts
        dof_to_node = np.empty(nloc, dtype=np.int64)
        dof_to_node[V.dofmap.list.reshape(-1)] = mesh.geometry.dofmaps[0].reshape(-1)
        inputs = np.asarray(mesh.geometry.input_global_indices, dtype=np.int64)
        self.canonical = inputs[dof_to_node[: imap.size_local]]
        self.dof_coordinates = V.tabulate_dof_coordinates()  # owned + ghost
        self.local_coordinates = self.dof_coordinates[: imap.size_local, : mesh.geometry.dim].copy()
        self.size = imap.size_global

    def function(self, values: Callable[[np.ndarray], np.ndarray] | None = None):
        """A P1 ``Function`` set pointwise at the dof coordinates (owned and ghost) by ``values``."""
        f = dolfinx.fem.Function(self.V)
        if values is not None:
            self.set_values(f, values)
        return f

    def set_values(self, f, values: Callable[[np.ndarray], np.ndarray]) -> None:
        x = self.dof_coordinates
        f.x.array[:] = values(x[:, 0], x[:, 1])

    def assemble(self, into=None):
        """Assemble ``(A, b)`` with the current coefficient values (new PETSc objects); with
        ``into`` (a matrix this problem assembled before) the matrix values are written into it
        (same sparsity pattern: values only) and ``A`` is ``into``."""
        from dolfinx.fem import petsc as fp

        if into is not None and into.getDict().get("hybridsolve.form") is self.a:
            A = into
            A.zeroEntries()
            fp.assemble_matrix(A, self.a, bcs=self.bcs)
        else:
            A = fp.assemble_matrix(self.a, bcs=self.bcs)
            A.getDict()["hybridsolve.form"] = self.a
        # a mesh-aware PC (NPSolverPC with -pc_npsolver_mesh auto) finds the space here
        A.getDict()["hybridsolve.p1problem"] = self
        A.assemble()
        return A, self.assemble_rhs()

    def assemble_rhs(self):
        """Assemble ``b`` (with the Dirichlet lifting) for the current coefficient values."""
        from dolfinx.fem import petsc as fp

        b = fp.assemble_vector(self.L)
        fp.apply_lifting(b, [self.a], bcs=[self.bcs])
        assemble_ghosts(b)
        fp.set_bc(b, self.bcs)
        return b

    def error_L2(self, uh_vec, exact, degree: int = 6) -> float:
        """``||u_h - exact||_{L2}`` for a solution vector in this space and a UFL ``exact``."""
        uh = dolfinx.fem.Function(self.V)
        r0, r1 = uh_vec.getOwnershipRange()
        uh.x.array[: r1 - r0] = uh_vec.getArray(readonly=True)
        uh.x.scatter_forward()
        e = dolfinx.fem.form((uh - exact) ** 2 * ufl.dx(metadata={"quadrature_degree": degree}))
        local = dolfinx.fem.assemble_scalar(e)
        return float(np.sqrt(self.mesh.comm.allreduce(local, op=MPI.SUM)))


class P1DiffusionMatrix:
    """Values-only assembly of ``(kappa grad u, grad v)`` on P1 triangles with ``kappa`` in the
    same P1 space: the matrix is linear in kappa's values, so it is precomputed per cell.

    On a triangle the basis gradients are constant, so the element matrix is
    ``mean(kappa at the 3 vertices) * |T| grad(phi_i) . grad(phi_j)``, exactly what DOLFINx's
    quadrature gives for this form. The cell matrices, the COO positions (PETSc's
    ``MatSetPreallocationCOO``, which sums the cell contributions and sends the off-process
    ones) and the Dirichlet rows and columns (dropped; 1 on the owned diagonal, as DOLFINx does)
    are computed once; an assembly is then a gather, a product and ``MatSetValuesCOO``.

    :meth:`check` compares it with DOLFINx's own assembly (callers use it before trusting it).
    """

    def __init__(self, problem: "P1Problem") -> None:
        mesh, V = problem.mesh, problem.V
        if mesh.topology.cell_type != dolfinx.mesh.CellType.triangle or mesh.geometry.dim < 2:
            raise ValueError("P1DiffusionMatrix needs a triangle mesh")
        tdim = mesh.topology.dim
        ncell = mesh.topology.index_map(tdim).size_local
        dofs = V.dofmap.list[:ncell].astype(np.int64)             # local (owned + ghost)
        xg = mesh.geometry.x[mesh.geometry.dofmaps[0][:ncell]][:, :, :2]  # (cells, 3, 2)
        B = np.stack([xg[:, 1] - xg[:, 0], xg[:, 2] - xg[:, 0]], axis=2)  # columns: edges
        det = B[:, 0, 0] * B[:, 1, 1] - B[:, 0, 1] * B[:, 1, 0]
        inv_t = np.stack([np.stack([B[:, 1, 1], -B[:, 1, 0]], 1),
                          np.stack([-B[:, 0, 1], B[:, 0, 0]], 1)], 1) / det[:, None, None]
        ref = np.array([[-1.0, -1.0], [1.0, 0.0], [0.0, 1.0]])
        grads = np.einsum("cij,kj->cki", inv_t, ref)              # (cells, 3 basis, 2)
        K = 0.5 * np.abs(det)[:, None, None] * np.einsum("cki,cli->ckl", grads, grads)
        imap = V.dofmap.index_map
        l2g = imap.local_to_global(np.arange(imap.size_local + imap.num_ghosts, dtype=np.int32))
        bc = np.zeros(imap.size_local + imap.num_ghosts, dtype=bool)
        for b in problem.bcs:
            bc[b.dof_indices()[0]] = True
        rows = np.repeat(dofs, 3, axis=1).reshape(-1)
        cols = np.tile(dofs, (1, 3)).reshape(-1)
        self._keep = ~(bc[rows] | bc[cols])
        owned_bc = np.flatnonzero(bc[: imap.size_local])
        self._K = K.reshape(-1)[self._keep]
        self._cell = np.repeat(np.arange(ncell), 9)[self._keep]
        self._dofs = dofs
        self._ones = np.ones(owned_bc.size)
        self.coo = (np.concatenate([l2g[rows[self._keep]], l2g[owned_bc]]).astype(PETSc.IntType),
                    np.concatenate([l2g[cols[self._keep]], l2g[owned_bc]]).astype(PETSc.IntType))
        self.sizes = ((imap.size_local, imap.size_global),) * 2
        self.comm = mesh.comm

    def values(self, kappa: np.ndarray) -> np.ndarray:
        """The COO values for the P1 coefficient values ``kappa`` (owned + ghost)."""
        kbar = kappa[self._dofs].mean(axis=1)
        return np.concatenate([self._K * kbar[self._cell], self._ones])

    def assemble(self, kappa: np.ndarray, into: PETSc.Mat | None = None) -> PETSc.Mat:
        """The matrix for ``kappa``: written into ``into`` when it is one of ours, else new."""
        A = into
        if A is None or A.getDict().get("hybridsolve.p1diffusion") is not self:
            A = PETSc.Mat().createAIJ(self.sizes, comm=self.comm)
            A.setPreallocationCOO(*(c.copy() for c in self.coo))   # PETSc may reorder them
            A.getDict()["hybridsolve.p1diffusion"] = self
        A.setValuesCOO(self.values(kappa).astype(PETSc.ScalarType))
        A.assemble()
        return A

    def check(self, problem: "P1Problem", kappa: np.ndarray, rtol: float = 1e-12) -> float:
        """The relative Frobenius difference to DOLFINx's assembly with the same kappa."""
        from dolfinx.fem import petsc as fp

        ref = fp.assemble_matrix(problem.a, bcs=problem.bcs)
        ref.assemble()
        A = self.assemble(kappa)
        nref = ref.norm(PETSc.NormType.FROBENIUS)
        ref.axpy(-1.0, A, structure=PETSc.Mat.Structure.DIFFERENT_NONZERO_PATTERN)
        diff = ref.norm(PETSc.NormType.FROBENIUS) / nref
        ref.destroy()
        A.destroy()
        return diff
