"""Contract tests: every KSP we ship, through the same cases (SciPy's ``_isolve`` style).

Adding a KSP adds a line to ``KSPS``. PETSc's own CG/GMRES are the references.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from conftest import BIN, ROOT, assert_all, relative
from hybridsolve.la.petsc import mat_from_local_csr, ownership_range, vec_from_local
from hybridsolve.solvers.base import context_info
from hybridsolve.stack import MPI, PETSc

_PY = "hybridsolve.recycling.petsc."
#: name -> (options, works on nonsymmetric systems, carries a recycle space)
KSPS = {
    "cg": ({"ksp_type": "cg"}, False, False),
    "gmres": ({"ksp_type": "gmres", "ksp_gmres_restart": 40, "ksp_pc_side": "right"}, True, False),
    "gcrodr": ({"ksp_type": "python", "ksp_python_type": _PY + "GCRODR", "ksp_gcrodr_m": 30,
                "ksp_gcrodr_k": 10}, True, True),
    "rcg": ({"ksp_type": "python", "ksp_python_type": _PY + "RecyclingCG", "ksp_rcg_k": 10},
            False, True),
    "dcdm": ({"ksp_type": "python", "ksp_python_type": "hybridsolve.learned.petsc.DCDM",
              "ksp_dcdm_window": 2}, False, False),
}


def _matrix(kind: str, m: int = 16, shift: float = 0.0) -> sp.csr_matrix:
    h = 1.0 / (m + 1)
    I = sp.identity(m)
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m)) / h**2
    A = sp.kron(T, I) + sp.kron(I, T)
    if kind == "nonsymmetric":
        Dx = sp.diags([-1.0, 0.0, 1.0], [-1, 0, 1], shape=(m, m)) / (2 * h)
        A = A + 20.0 * sp.kron(Dx, I)
    return (A + shift * sp.identity(m * m)).tocsr()


def _system(comm, As, bs):
    n = As.shape[0]
    r0, r1 = ownership_range(comm, n)
    return mat_from_local_csr(comm, n, As[r0:r1]), vec_from_local(comm, n, bs[r0:r1])


def _ksp(comm, name, prefix, pc="jacobi"):
    opts = PETSc.Options()
    for k, v in {**KSPS[name][0], "pc_type": pc, "ksp_rtol": 1e-9, "ksp_max_it": 4000,
                 "ksp_norm_type": "unpreconditioned"}.items():
        opts[prefix + k] = v
    ksp = PETSc.KSP().create(comm)
    ksp.setOptionsPrefix(prefix)
    return ksp


def _clear(prefix):
    opts = PETSc.Options()
    for key in list(opts.getAll()):
        if key.startswith(prefix):
            opts.delValue(key)


def _cases():
    for name, (_, nonsym, _) in KSPS.items():
        yield name, "spd"
        if nonsym:
            yield name, "nonsymmetric"


@pytest.mark.parametrize("name,kind", list(_cases()))
def test_solves_to_the_true_tolerance_with_history_and_x0(name, kind, comm):
    As = _matrix(kind)
    n = As.shape[0]
    bs = np.sin(np.arange(n) * 0.37) + 1.0
    A, b = _system(comm, As, bs)
    prefix = f"c_{name}_{kind[:3]}_"
    ksp = _ksp(comm, name, prefix)
    ksp.setOperators(A)
    ksp.setFromOptions()
    ksp.setConvergenceHistory(length=5000, reset=True)
    x = b.duplicate()
    ksp.solve(b, x)
    its = ksp.getIterationNumber()
    xs = np.concatenate(comm.allgather(x.getArray()))
    exact = spla.spsolve(As.tocsc(), bs)
    assert_all(comm, ksp.getConvergedReason() > 0, f"{name}: {ksp.getConvergedReason()}")
    assert_all(comm, relative(As @ xs, bs) <= 2e-9, f"{name}: true residual {relative(As @ xs, bs)}")
    assert_all(comm, relative(xs, exact) <= 1e-6, name)
    hist = ksp.getConvergenceHistory()
    assert_all(comm, len(hist) == its + 1 and hist[-1] <= 1e-9 * hist[0] * 1.01, f"{name}: history")
    # x0: started from the solution, nothing to do; a nonzero guess is not discarded
    ksp.setInitialGuessNonzero(True)
    ksp.solve(b, x)
    assert_all(comm, ksp.getIterationNumber() <= 1 and ksp.getConvergedReason() > 0,
               f"{name}: restart from the solution took {ksp.getIterationNumber()} its")
    ksp.destroy()
    A.destroy()
    _clear(prefix)


@pytest.mark.parametrize("name", [k for k, v in KSPS.items() if v[0]["ksp_type"] == "python"])
def test_nan_in_the_matrix_is_diverged_nanorinf_not_an_error(name, comm):
    As = _matrix("spd", m=8).tolil()
    As[3, 3] = np.nan
    As = As.tocsr()
    bs = np.ones(As.shape[0])
    A, b = _system(comm, As, bs)
    prefix = f"nan_{name}_"
    ksp = _ksp(comm, name, prefix, pc="none")
    ksp.setOperators(A)
    ksp.setFromOptions()
    x = b.duplicate()
    ksp.solve(b, x)   # must not raise PETSc error 101
    reason = ksp.getConvergedReason()
    assert_all(comm, reason == PETSc.KSP.ConvergedReason.DIVERGED_NANORINF, f"{name}: {reason}")
    ksp.destroy()
    _clear(prefix)


def _darcy_sequence(comm, count=4):
    from hybridsolve import get_family

    return get_family("darcy", 24, count=count, seed=5, discretization="grid")


@pytest.mark.parametrize("name", [k for k, v in KSPS.items() if v[2]])
def test_setfromoptions_before_each_solve_keeps_the_recycle_space(name, comm):
    fam = _darcy_sequence(comm)
    counts = {}
    for every in (False, True):
        prefix = f"sfo_{name}_{int(every)}_"
        ksp = _ksp(comm, name, prefix, pc="none")
        its, infos = [], []
        for i in range(len(fam)):
            s = fam.system(i, comm)
            ksp.setOperators(s.A)
            if every or i == 0:
                ksp.setFromOptions()   # a new python context each time: the state must carry over
            x = s.b.duplicate()
            ksp.solve(s.b, x)
            assert_all(comm, ksp.getConvergedReason() > 0, f"{name} system {i}")
            its.append(ksp.getIterationNumber())
            infos.append(context_info(ksp))
            s.destroy()
        counts[every] = its
        info = infos[-1][name]
        assert_all(comm, info["recycled_solves"] == 1 and info["total"]["recycled_solves"] == 3,
                   f"{name}: {info}")
        ksp.destroy()
        _clear(prefix)
    assert_all(comm, counts[True] == counts[False], f"{name}: {counts}")
    assert_all(comm, counts[True][-1] < counts[True][0], f"{name}: no recycling {counts[True]}")


@pytest.mark.skipif(MPI.COMM_WORLD.size == 1, reason="compares the 2-rank solve with a 1-rank one")
@pytest.mark.parametrize("name", list(KSPS))
def test_same_result_on_one_rank_and_on_all(name, comm):
    As = _matrix("spd", m=12)
    bs = np.cos(np.arange(As.shape[0]) * 0.21)
    out = []
    for c in (MPI.COMM_SELF, comm):
        A, b = _system(c, As, bs)
        prefix = f"np_{name}_{c.size}_"
        ksp = _ksp(c, name, prefix)
        ksp.setOperators(A)
        ksp.setFromOptions()
        x = b.duplicate()
        ksp.solve(b, x)
        out.append((ksp.getIterationNumber(), np.concatenate(c.allgather(x.getArray()))))
        ksp.destroy()
        _clear(prefix)
    (i1, x1), (i2, x2) = out
    assert_all(comm, abs(i1 - i2) <= 1 and relative(x2, x1) <= 1e-7, f"{name}: {i1} vs {i2} its")


# --- FEniCSx, as its users write it: DOLFINx first, our types only by petsc_options -----------
_FENICSX = r'''
import json, sys
from mpi4py import MPI
import dolfinx, dolfinx.fem.petsc, ufl
import numpy as np
opts = json.loads(sys.argv[1])
msh = dolfinx.mesh.create_unit_square(MPI.COMM_WORLD, 32, 32)
V = dolfinx.fem.functionspace(msh, ("Lagrange", 1))
u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
x = ufl.SpatialCoordinate(msh)
f = dolfinx.fem.Constant(msh, 1.0)
a = ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
L = f * (1 + x[0]) * v * ufl.dx
facets = dolfinx.mesh.locate_entities_boundary(msh, 1, lambda p: np.full(p.shape[1], True))
bc = dolfinx.fem.dirichletbc(0.0, dolfinx.fem.locate_dofs_topological(V, 1, facets), V)
if opts.pop("grid_layout", False):   # a grid network: the one helper call it needs
    from hybridsolve.learned import save_grid_layout
    opts.update(save_grid_layout(V, "layout.npy"))
problem = dolfinx.fem.petsc.LinearProblem(a, L, bcs=[bc], petsc_options_prefix="user_",
                                          petsc_options=opts)
out = []
for value in (1.0, 2.0):
    f.value = value
    uh = problem.solve()
    ksp = problem.solver
    A = ksp.getOperators()[0]
    r = A.createVecLeft(); A.mult(uh.x.petsc_vec, r); b = problem.b
    r.aypx(-1.0, b)
    out.append({"reason": int(ksp.getConvergedReason()), "its": int(ksp.getIterationNumber()),
                "true": float(r.norm() / b.norm()), "type": ksp.getType()})
ctx = ksp.getPythonContext() if ksp.getType() == "python" else None
stats = {k: float(v) for k, v in getattr(ctx, "stats", {}).items()}
if MPI.COMM_WORLD.rank == 0:
    print("RESULT", json.dumps({"solves": out, "stats": stats,
                                "h5py_loaded": "h5py" in sys.modules}))
'''

_EMBED = {
    "gcrodr": {"ksp_type": "python", "ksp_python_type": _PY + "GCRODR", "ksp_gcrodr_k": 10,
               "pc_type": "jacobi"},
    "rcg": {"ksp_type": "python", "ksp_python_type": _PY + "RecyclingCG", "pc_type": "jacobi"},
    "dcdm": {"ksp_type": "python", "ksp_python_type": "hybridsolve.learned.petsc.DCDM",
             "pc_type": "jacobi"},
    "twolevel": {"ksp_type": "cg", "pc_type": "python",
                 "pc_python_type": "hybridsolve.solvers.twolevel.TwoLevelPC"},
    "torchpc": {"ksp_type": "fcg", "ksp_fcg_mmax": 2, "pc_type": "python",
                "pc_python_type": "hybridsolve.learned.petsc.TorchPC", "pc_torch_model": "dcdm2d",
                "grid_layout": True},   # save_grid_layout(V): permutation, shape, gathered mode
}


@pytest.mark.serial
@pytest.mark.parametrize("np_", [1, 2])
@pytest.mark.parametrize("name", list(_EMBED))
def test_fenicsx_linear_problem_selects_our_types_by_options(name, np_, tmp_path):
    opts = {**_EMBED[name], "ksp_rtol": 1e-8, "ksp_norm_type": "unpreconditioned",
            "ksp_max_it": 3000}
    script = tmp_path / "user.py"
    script.write_text(_FENICSX)
    cmd = [str(BIN / "python"), str(script), json.dumps(opts)]
    if np_ > 1:
        cmd = [str(BIN / "mpiexec"), "-n", str(np_), *cmd]
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    res = json.loads(line.split(" ", 1)[1])
    for s in res["solves"]:
        assert s["reason"] > 0 and s["true"] <= 1.01e-8, res
    assert not res["h5py_loaded"]
    if name in ("gcrodr", "rcg"):   # the second solve started from the recycled space
        assert res["stats"]["recycled_solves"] == 1, res
