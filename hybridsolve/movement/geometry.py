"""What every mover needs from a DOLFINx mesh: P1 vertex data, boundary slip, tangling, copies.

Vertices are addressed through a P1 Lagrange space on the mesh (owned dofs first, then ghosts),
so vertex data is an ordinary DOLFINx array and ghost values follow with ``scatter_forward``.

Boundary handling (no motion normal to the boundary, slip along straight segments):

* exterior facets are grouped into straight segments (2-D: lines, 3-D: planes) by their unit
  normal and offset, the same on every rank (the grouping is done on rank 0 and broadcast);
* a boundary vertex may move only in the orthogonal complement of the normals of the segments it
  touches: one segment -> slides along it, two non-parallel segments in 2-D (three in 3-D) ->
  a corner, fixed; pinned facets fix their vertices;
* a boundary made of many short segments meeting at shallow angles (a polygonal approximation of
  a curve) is refused: sliding along it would leave the curve. Pin it instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hybridsolve.errors import InputError
from hybridsolve.stack import MPI, PETSc  # noqa: F401  (import order: MPI, dolfinx_solver, PETSc)

import dolfinx  # noqa: E402
import dolfinx.fem  # noqa: E402
import dolfinx.la  # noqa: E402
import dolfinx.mesh  # noqa: E402

__all__ = ["VertexSpace", "signed_volumes", "count_inverted", "mesh_copy", "Snapshot"]

_SIMPLEX = {dolfinx.mesh.CellType.triangle: 2, dolfinx.mesh.CellType.tetrahedron: 3}


def _check_mesh(mesh: Any) -> int:
    if not isinstance(mesh, dolfinx.mesh.Mesh):
        raise InputError(f"expected a dolfinx.mesh.Mesh, got {type(mesh).__name__}")
    ct = mesh.topology.cell_type
    if ct not in _SIMPLEX:
        raise InputError(f"mesh movement needs a triangle or tetrahedron mesh, not {ct.name}")
    tdim = mesh.topology.dim
    if mesh.geometry.dim != tdim:
        raise InputError(f"mesh movement needs a flat mesh (geometry dim {mesh.geometry.dim} "
                         f"!= topology dim {tdim})")
    if mesh.geometry.cmaps[0].degree != 1:
        raise InputError("mesh movement supports affine (degree-1) meshes only; this mesh has "
                         f"degree-{mesh.geometry.cmaps[0].degree} geometry")
    return tdim


def signed_volumes(mesh: Any, coords: np.ndarray | None = None) -> np.ndarray:
    """Signed volume of each local cell (owned first, then ghosts) of a simplex mesh.

    ``coords`` (geometry nodes x gdim) replaces the mesh's own coordinates when given.
    """
    d = mesh.topology.dim
    x = mesh.geometry.x[:, :d] if coords is None else coords
    cells = mesh.geometry.dofmaps[0]
    p = x[cells]  # (ncells, d+1, d)
    J = p[:, 1:, :] - p[:, :1, :]
    fact = 2.0 if d == 2 else 6.0
    return np.linalg.det(J) / fact


def count_inverted(mesh: Any, reference_sign: np.ndarray, coords: np.ndarray | None = None) -> int:
    """Global number of owned cells whose signed volume is <= 0 relative to ``reference_sign``."""
    n_owned = mesh.topology.index_map(mesh.topology.dim).size_local
    vol = signed_volumes(mesh, coords)[:n_owned] * reference_sign[:n_owned]
    scale = np.abs(reference_sign[:n_owned]).max(initial=1.0)
    bad = int(np.count_nonzero(~(vol > 1e-14 * scale)))
    return mesh.comm.allreduce(bad, op=MPI.SUM)


def mesh_copy(mesh: Any) -> tuple[Any, np.ndarray]:
    """A separate mesh with the same cells and current coordinates (same partition).

    Returns the copy and, for each of its geometry nodes, the parent's geometry node.
    """
    tdim = mesh.topology.dim
    n = mesh.topology.index_map(tdim).size_local
    sub, _, _, gmap = dolfinx.mesh.create_submesh(mesh, tdim, np.arange(n, dtype=np.int32))
    return sub, np.asarray(gmap)


class Snapshot:
    """Frozen copies of Functions on a frozen copy of their mesh, to interpolate from later.

    Used to carry fields (and monitor data) across a move: the copy keeps the old coordinates
    while the original mesh moves; :meth:`transfer` interpolates (non-matching, parallel) onto the
    moved mesh.
    """

    def __init__(self, functions: list) -> None:
        if not functions:
            self.functions: list = []
            return
        mesh = functions[0].function_space.mesh
        for f in functions:
            if f.function_space.mesh is not mesh:
                raise InputError("all transferred fields must live on the same mesh")
        self.mesh, _ = mesh_copy(mesh)
        self.functions = []
        for f in functions:
            V0 = dolfinx.fem.functionspace(self.mesh, f.function_space.ufl_element())
            g = dolfinx.fem.Function(V0, name=f.name)
            data = dolfinx.fem.create_interpolation_data(V0, f.function_space, _all_cells(self.mesh),
                                                         padding=1e-10)
            g.interpolate_nonmatching(f, _all_cells(self.mesh), data)
            g.x.scatter_forward()
            self.functions.append(g)

    def _locate(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, values of frozen function 0) for points (n, d) in this rank's part."""
        import dolfinx.geometry

        g = self.functions[self._k]
        mesh = self.mesh
        d = mesh.topology.dim
        if not hasattr(self, "_tree"):
            ncells = mesh.topology.index_map(d).size_local
            self._tree = dolfinx.geometry.bb_tree(mesh, d, padding=1e-12,
                                                  entities=np.arange(ncells, dtype=np.int32))
        vals = np.zeros(points.shape[0])
        if points.shape[0] == 0:
            return np.zeros(0, dtype=bool), vals
        pts = np.zeros((points.shape[0], 3))
        pts[:, :d] = points
        cand = dolfinx.geometry.compute_collisions_points(self._tree, pts)
        coll = dolfinx.geometry.compute_colliding_cells(mesh, cand, pts)
        off = coll.offsets
        found = np.diff(off) > 0
        cells = coll.array[off[:-1][found]]
        P = mesh.geometry.x[mesh.geometry.dofmaps[0][cells], :d]  # (n, d+1, d)
        J = np.transpose(P[:, 1:, :] - P[:, :1, :], (0, 2, 1))
        lam = np.linalg.solve(J, (points[found] - P[:, 0, :])[..., None])[..., 0]
        w = np.concatenate([1.0 - lam.sum(axis=1, keepdims=True), lam], axis=1)
        vals[found] = (w * g.x.array[g.function_space.dofmap.list[cells]]).sum(axis=1)
        return found, vals

    def evaluate_p1(self, k: int, points: np.ndarray, V: Any) -> np.ndarray | None:
        """Values of frozen scalar P1 function ``k`` at the dofs of ``V`` (coordinates
        ``points``, owned then ghost), exactly (barycentric interpolation in the frozen mesh).

        Owned points are located in this rank's part (a bounding-box tree built once); the few
        that moved into another rank's part are shared with all ranks (one allgather) and
        evaluated where they are found (one allreduce); ghosts follow by a forward scatter.
        ``None`` (on every rank) if some point lies in no part (then use :meth:`transfer`)."""
        self._k = k
        comm = self.mesh.comm
        n = V.dofmap.index_map.size_local
        found, vals = self._locate(points[:n])
        if comm.size > 1:
            missing = points[:n][~found]
            allmiss = comm.allgather(missing)
            counts = [len(m) for m in allmiss]
            if sum(counts):
                pts = np.concatenate(allmiss)
                f2, v2 = self._locate(pts)
                tot = np.zeros((2, len(pts)))
                comm.Allreduce(np.stack([f2 * v2, f2.astype(float)]), tot, op=MPI.SUM)
                start = sum(counts[: comm.rank])
                mine = slice(start, start + counts[comm.rank])
                hit = tot[1, mine] > 0
                idx = np.flatnonzero(~found)
                vals[idx[hit]] = tot[0, mine][hit] / tot[1, mine][hit]
                found[idx[hit]] = True
        if not comm.allreduce(bool(found.all()), op=MPI.LAND):
            return None
        out = dolfinx.fem.Function(V)
        out.x.array[:n] = vals
        out.x.scatter_forward()
        return out.x.array.copy()

    def transfer(self, targets: list) -> None:
        """Interpolate each frozen function onto the corresponding target (on the moved mesh)."""
        for g, f in zip(self.functions, targets):
            V = f.function_space
            cells = _all_cells(V.mesh)
            data = dolfinx.fem.create_interpolation_data(V, g.function_space, cells, padding=1e-10)
            f.interpolate_nonmatching(g, cells, data)
            f.x.scatter_forward()


def _all_cells(mesh: Any) -> np.ndarray:
    tdim = mesh.topology.dim
    im = mesh.topology.index_map(tdim)
    return np.arange(im.size_local + im.num_ghosts, dtype=np.int32)


class VertexSpace:
    """P1 vertex addressing of a mesh, and its boundary projector.

    Attributes:
        V: scalar P1 space; ``V.dofmap`` numbers the vertices (owned, then ghosts).
        node_of_dof: geometry node of each P1 dof.
        n_owned: number of owned dofs.
        projector: (ndofs, d, d) matrices that remove the forbidden components of a vertex
            displacement (identity inside, tangential projector on a segment, zero at corners
            and pinned vertices).
        segments: (nseg, d + 1) rows ``(normal, offset)`` of the straight boundary segments.
    """

    def __init__(self, mesh: Any, pinned: Any = None, curved_tol_deg: float = 20.0) -> None:
        self.d = d = _check_mesh(mesh)
        self.mesh = mesh
        self.comm = mesh.comm
        self.V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
        im = self.V.dofmap.index_map
        self.n_owned = im.size_local
        self.n_dofs = im.size_local + im.num_ghosts
        node_of_dof = np.full(self.n_dofs, -1, dtype=np.int64)
        node_of_dof[self.V.dofmap.list.ravel()] = mesh.geometry.dofmaps[0].ravel()
        if np.any(node_of_dof < 0):
            raise InputError("mesh has vertices that belong to no local cell")
        self.node_of_dof = node_of_dof
        self.curved_tol_deg = float(curved_tol_deg)
        self._build_boundary(pinned)

    # -- vertex data -------------------------------------------------------------------------
    def coords(self) -> np.ndarray:
        """Current vertex coordinates in dof order, (ndofs, d) (a copy)."""
        return self.mesh.geometry.x[self.node_of_dof, : self.d].copy()

    def set_coords(self, x: np.ndarray) -> None:
        """Write vertex coordinates (dof order, owned and ghost) into the mesh geometry."""
        self.mesh.geometry.x[self.node_of_dof, : self.d] = x

    def vector(self, bs: int = 1) -> Any:
        return dolfinx.la.vector(self.V.dofmap.index_map, bs)

    def forward(self, arr: np.ndarray) -> np.ndarray:
        """Make ghost entries of a (ndofs, k) or (ndofs,) vertex array equal to their owners'."""
        a = np.asarray(arr, dtype=np.float64)
        bs = 1 if a.ndim == 1 else a.shape[1]
        v = self.vector(bs)
        v.array[:] = a.ravel()
        v.scatter_forward()
        return v.array.reshape(a.shape).copy()

    def reverse_add(self, arr: np.ndarray) -> np.ndarray:
        """Sum ghost contributions into owners, then send the sums back to the ghosts."""
        a = np.asarray(arr, dtype=np.float64)
        bs = 1 if a.ndim == 1 else a.shape[1]
        v = self.vector(bs)
        v.array[:] = a.ravel()
        v.scatter_reverse(dolfinx.la.InsertMode.add)
        v.scatter_forward()
        return v.array.reshape(a.shape).copy()

    def constrain(self, disp: np.ndarray) -> np.ndarray:
        """Apply the boundary projector to a (ndofs, d) displacement."""
        return np.einsum("nij,nj->ni", self.projector, disp)

    # -- boundary ----------------------------------------------------------------------------
    def _facet_normals(self, facets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mesh, d = self.mesh, self.d
        x = mesh.geometry.x[:, :d]
        fnodes = dolfinx.mesh.entities_to_geometry(mesh, d - 1, facets)
        p = x[fnodes]
        if d == 2:
            t = p[:, 1] - p[:, 0]
            n = np.stack([t[:, 1], -t[:, 0]], axis=1)
        else:
            n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
        n /= np.linalg.norm(n, axis=1)[:, None]
        # outward: away from the centroid of the facet's cell
        f2c = mesh.topology.connectivity(d - 1, d)
        cells = np.array([f2c.links(f)[0] for f in facets], dtype=np.int32)
        cnodes = mesh.geometry.dofmaps[0][cells]
        cent = x[cnodes].mean(axis=1)
        sgn = np.sign(np.einsum("ij,ij->i", n, p.mean(axis=1) - cent))
        n *= sgn[:, None]
        return n, fnodes

    def _build_boundary(self, pinned: Any) -> None:
        mesh, d, comm = self.mesh, self.d, self.comm
        mesh.topology.create_connectivity(d - 1, d)
        facets = dolfinx.mesh.exterior_facet_indices(mesh.topology)
        x = mesh.geometry.x[:, :d]
        normals, fnodes = self._facet_normals(facets)
        dof_of_node = np.full(mesh.geometry.x.shape[0], -1, dtype=np.int64)
        dof_of_node[self.node_of_dof] = np.arange(self.n_dofs)
        fdofs = dof_of_node[fnodes]

        pin = np.zeros(len(facets), dtype=bool)
        if pinned is True or (isinstance(pinned, str) and pinned in ("all", "on_boundary")):
            pin[:] = True
        elif callable(pinned):
            mids = x[fnodes]  # (nf, d, d): all facet vertices must satisfy the marker
            ok = np.ones(len(facets), dtype=bool)
            for k in range(fnodes.shape[1]):
                pts = np.zeros((3, len(facets)))
                pts[:d] = mids[:, k, :].T
                ok &= np.asarray(pinned(pts), dtype=bool)
            pin = ok
        elif pinned is not None:
            idx = np.asarray(pinned, dtype=np.int64).ravel()
            pin = np.isin(facets, idx)

        # segments: cluster (normal, offset) of the free facets globally on rank 0
        free = ~pin
        rows = np.hstack([normals, np.einsum("ij,ij->i", normals, x[fnodes[:, 0]])[:, None]])[free]
        diam = float(comm.allreduce(np.ptp(x, axis=0).max(initial=0.0), op=MPI.MAX)) or 1.0
        allrows = comm.gather(np.round(rows, 12), root=0)
        segs = None
        if comm.rank == 0:
            cand = np.unique(np.vstack(allrows), axis=0) if allrows else np.zeros((0, d + 1))
            reps: list[np.ndarray] = []
            for r in cand:
                if not any(np.abs(r[:d] - q[:d]).max() < 1e-6 and abs(r[d] - q[d]) < 1e-6 * diam
                           for q in reps):
                    reps.append(r)
                if len(reps) > 512:
                    break
            segs = np.array(reps).reshape(-1, d + 1)
        segs = comm.bcast(segs, root=0)
        if len(segs) > 512:
            raise InputError("the boundary has more than 512 straight pieces: a curved boundary "
                             "cannot slip; pin it (pinned=...) or use a polygonal domain")
        self.segments = segs
        seg_of = np.full(len(facets), -1, dtype=np.int64)
        if len(segs) and free.any():
            dist = (np.abs(rows[:, None, :d] - segs[None, :, :d]).max(axis=2)
                    + np.abs(rows[:, None, d] - segs[None, :, d]) / diam)
            seg_of[free] = dist.argmin(axis=1)

        # per-vertex incidence (segments + pinned), summed across ranks
        nseg = len(segs)
        inc = np.zeros((self.n_dofs, nseg + 1))
        for k in range(fdofs.shape[1]):
            np.add.at(inc, (fdofs[free, k], seg_of[free]), 1.0)
            np.add.at(inc, (fdofs[pin, k], np.full(pin.sum(), nseg)), 1.0)
        inc = self.reverse_add(inc) > 0

        P = np.broadcast_to(np.eye(d), (self.n_dofs, d, d)).copy()
        worst = 180.0
        worst_at = None
        for i in np.flatnonzero(inc.any(axis=1)):
            if inc[i, nseg]:
                P[i] = 0.0
                continue
            N = segs[inc[i, :nseg], :d]
            if len(N) >= 2:
                cosang = np.clip(np.abs(N @ N.T), 0, 1)
                np.fill_diagonal(cosang, 0.0)
                ang = np.degrees(np.arccos(cosang.max()))
                if ang < worst:
                    worst, worst_at = ang, i
            u, s, _ = np.linalg.svd(N.T)
            Q = u[:, : len(s)][:, s > 1e-8]
            P[i] = np.eye(d) - Q @ Q.T
            if Q.shape[1] >= d:
                P[i] = 0.0
        where = None if worst_at is None else self.coords()[worst_at]
        found = comm.allgather((worst, where))
        worst, where = min(found, key=lambda t: t[0])
        if worst < self.curved_tol_deg:
            raise InputError(
                f"boundary segments meet at {worst:.1f} degrees near {np.round(where, 4).tolist()}: "
                f"the boundary looks curved (a polygon approximating a curve), and vertices cannot "
                f"slip along a curve. Pin those facets (pinned=marker) or lower curved_tol_deg "
                f"(now {self.curved_tol_deg:g}) if the corners are real")
        self.projector = P
        self.boundary_facets = facets
        self.pinned_facets = facets[pin]
