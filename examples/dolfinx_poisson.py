"""Using hybridsolve from DOLFINx code: assemble with DOLFINx, solve with hybridsolve.solve().

    mpiexec -n 2 python examples/dolfinx_poisson.py -pois_ksp_monitor -pois_pc_type gamg

The matrix and vector are DOLFINx's own PETSc objects; hybridsolve adds the options convention
(defaults in code, the command line wins, under a prefix) and the result type (iterations,
reason, residual history and its norm, true residual, time).
"""

from __future__ import annotations

import sys

from hybridsolve import stack

PETSc = stack.init(sys.argv[1:])  # hybridsolve first: it owns the MPI/PETSc import order

import dolfinx  # noqa: E402
import dolfinx.fem.petsc  # noqa: E402
import numpy as np  # noqa: E402
import ufl  # noqa: E402

from hybridsolve import solve  # noqa: E402
from hybridsolve.parallel import print0  # noqa: E402

comm = stack.MPI.COMM_WORLD
mesh = dolfinx.mesh.create_unit_square(comm, 64, 64)
V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
x = ufl.SpatialCoordinate(mesh)
f = 2 * np.pi**2 * ufl.sin(np.pi * x[0]) * ufl.sin(np.pi * x[1])
a = dolfinx.fem.form(ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx)
L = dolfinx.fem.form(f * v * ufl.dx)
facets = dolfinx.mesh.locate_entities_boundary(mesh, 1, lambda p: np.full(p.shape[1], True))
bc = dolfinx.fem.dirichletbc(0.0, dolfinx.fem.locate_dofs_topological(V, 1, facets), V)

A = dolfinx.fem.petsc.assemble_matrix(a, bcs=[bc])
A.assemble()
b = dolfinx.fem.petsc.assemble_vector(L)
dolfinx.fem.petsc.apply_lifting(b, [a], bcs=[[bc]])
b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
dolfinx.fem.petsc.set_bc(b, [bc])

result = solve(A, b, prefix="pois_", options={"ksp_type": "cg", "pc_type": "gamg"}, rtol=1e-10,
               error_if_not_converged=True)
uh = dolfinx.fem.Function(V)
uh.x.petsc_vec.array[:] = result.x.array
uh.x.scatter_forward()
err = dolfinx.fem.assemble_scalar(dolfinx.fem.form((uh - ufl.sin(np.pi * x[0]) * ufl.sin(np.pi * x[1])) ** 2 * ufl.dx))
err = np.sqrt(comm.allreduce(err))
print0(result.summary(), f"({result.residual_norm} norm); L2 error {err:.3e}")
