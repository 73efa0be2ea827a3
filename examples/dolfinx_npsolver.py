"""NPSolver in FEniCSx code: the shipped mesh network as an initial guess and as a preconditioner.

    mpiexec -n 2 python examples/dolfinx_npsolver.py -np_ksp_converged_reason
    mpiexec -n 2 python examples/dolfinx_npsolver.py --3d      # a cube with a cylindrical hole

A Poisson problem on a square with a corner and a hole cut out (gmsh), u = 0 on two sides,
zero flux elsewhere (``--3d``: a cube with a hole along z, u = 0 on the faces x = 0 and y = 0,
the shipped npsolver3d). (1) CG+GAMG from zero and from the network's prediction
(``initial_guess``); (2) a ``LinearProblem`` whose ``petsc_options`` select ``NPSolverPC`` after
``register_mesh``. Both check the true residual.
"""

from __future__ import annotations

import sys

from hybridsolve import stack

THREE_D = "--3d" in sys.argv
PETSc = stack.init([a for a in sys.argv[1:] if a != "--3d"])

import dolfinx  # noqa: E402
import dolfinx.fem.petsc  # noqa: E402
import numpy as np  # noqa: E402
import ufl  # noqa: E402

from hybridsolve.learned.models import load_model  # noqa: E402
from hybridsolve.learned.npsolver_petsc import MeshInputs, initial_guess, register_mesh  # noqa: E402
from hybridsolve.parallel import print0  # noqa: E402
from hybridsolve.problems.cutbox import cutbox_mesh  # noqa: E402
from hybridsolve.problems.cutsquare import cutsquare_mesh  # noqa: E402

comm = stack.MPI.COMM_WORLD
if THREE_D:   # one hole along z through (0.45, 0.55) of radius 0.14; mesh size 1/10
    mesh = cutbox_mesh(comm, np.array([2, 0.45, 0.55, 0.14, 0, 0, 0]), 10)
else:         # corners cut (0,0) 0.15 and (1,1) 0.12; a hole at (0.5, 0.45), radius 0.08; 1/20
    mesh = cutsquare_mesh(comm, np.array([0.15, 0, 0, 0.12, 0.5, 0.45, 0.08, 0, 0, 0]), 20)
tdim = mesh.topology.dim
V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
x = ufl.SpatialCoordinate(mesh)
f = ufl.cos(3 * x[0]) * ufl.sin(2 * x[1]) + x[0]
facets = dolfinx.mesh.locate_entities_boundary(
    mesh, tdim - 1, lambda p: np.isclose(p[0], 0.0) | np.isclose(p[1], 0.0))
dofs = dolfinx.fem.locate_dofs_topological(V, tdim - 1, facets)
bc = dolfinx.fem.dirichletbc(0.0, dofs, V)
a = dolfinx.fem.form(ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx)
L = dolfinx.fem.form(f * v * ufl.dx)

# (1) the network's prediction as the initial guess of a KSP
A = dolfinx.fem.petsc.assemble_matrix(a, bcs=[bc])
A.assemble()
b = dolfinx.fem.petsc.assemble_vector(L)
dolfinx.fem.petsc.apply_lifting(b, [a], bcs=[[bc]])
b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
dolfinx.fem.petsc.set_bc(b, [bc])
model = load_model(f"npsolver{tdim}d")
inputs = MeshInputs(V, dofs)            # once per mesh: what the network sees of it
for start in ("zero", "network"):
    ksp = PETSc.KSP().create(comm)
    ksp.setOperators(A)
    ksp.setOptionsPrefix("np_")
    ksp.setType("cg")
    ksp.getPC().setType("gamg")
    ksp.setNormType(PETSc.KSP.NormType.UNPRECONDITIONED)
    ksp.setTolerances(rtol=1e-8)
    ksp.setFromOptions()
    xv = b.duplicate()
    if start == "network":
        initial_guess(model, inputs, b, xv)
        ksp.setInitialGuessNonzero(True)
    ksp.solve(b, xv)
    r = b.duplicate()
    A.mult(xv, r)
    r.aypx(-1.0, b)
    print0(f"CG+GAMG from {start}: {ksp.getIterationNumber()} iterations, "
           f"{ksp.getConvergedReason()!r}, true relative residual {r.norm() / b.norm():.2e}",
           comm=comm)
    assert ksp.getConvergedReason() > 0 and r.norm() <= 1.01e-8 * b.norm()
    for o in (ksp, xv, r):
        o.destroy()

# (2) NPSolver as the preconditioner of a LinearProblem, by options (the model: -pc_npsolver_model
# auto, the shipped network of the mesh's dimension)
opts = {**register_mesh("example", V, dofs), "ksp_type": "fcg", "ksp_fcg_mmax": 30,
        "ksp_rtol": 1e-8, "ksp_norm_type": "unpreconditioned"}
problem = dolfinx.fem.petsc.LinearProblem(ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx,
                                          f * v * ufl.dx, bcs=[bc], petsc_options_prefix="np_",
                                          petsc_options=opts)
uh = problem.solve()
ksp = problem.solver
r = problem.b.duplicate()
problem.A.mult(uh.x.petsc_vec, r)
r.aypx(-1.0, problem.b)
stats = ksp.getPC().getPythonContext().stats
print0(f"FCG + NPSolver cycle: {ksp.getIterationNumber()} iterations, "
       f"{ksp.getConvergedReason()!r}, true relative residual {r.norm() / problem.b.norm():.2e}, "
       f"fallbacks {stats['fallback_nonfinite'] + stats['fallback_not_descent']}", comm=comm)
assert ksp.getConvergedReason() > 0 and r.norm() <= 1.01e-8 * problem.b.norm()
