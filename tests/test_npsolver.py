"""NPSolver's physics supervision (issue 15): the batched Jacobi-PCG against PETSc's, the
stop-gradient loss, the residual baseline, bad input refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dolfinx  # a FEniCSx user imports DOLFINx first
import dolfinx.fem.petsc
import ufl

from conftest import assert_all
from hybridsolve.errors import InputError
from hybridsolve.la.petsc import gather_canonical, gather_csr_canonical
from hybridsolve.learned.physics import (SystemBatch, batched_jacobi_pcg, residual_loss,
                                         supervision_loss)
from hybridsolve.stack import MPI, PETSc


def _poisson(comm, n, seed):
    """P1 Poisson on the unit square (DOLFINx assembly, Dirichlet x = 0 side, a random
    piecewise source): the PETSc matrix and right-hand side."""
    mesh = dolfinx.mesh.create_unit_square(comm, n, n + 3)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    x = ufl.SpatialCoordinate(mesh)
    rng = np.random.default_rng(seed)
    c = rng.normal(size=4)
    f = c[0] + c[1] * ufl.sin(3 * x[0]) + c[2] * ufl.cos(5 * x[1]) + c[3] * x[0] * x[1]
    facets = dolfinx.mesh.locate_entities_boundary(mesh, 1, lambda X: np.isclose(X[0], 0.0))
    bc = dolfinx.fem.dirichletbc(0.0, dolfinx.fem.locate_dofs_topological(V, 1, facets), V)
    a = dolfinx.fem.form(ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx)
    L = dolfinx.fem.form(f * v * ufl.dx)
    A = dolfinx.fem.petsc.assemble_matrix(a, bcs=[bc])
    A.assemble()
    b = dolfinx.fem.petsc.assemble_vector(L)
    dolfinx.fem.petsc.apply_lifting(b, [a], bcs=[[bc]])
    b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
    dolfinx.fem.petsc.set_bc(b, [bc])
    _KEEP.append(mesh)   # the PETSc objects live on the mesh's communicator: keep it alive
    return A, b


_KEEP: list = []


def _global(A, b):
    """The system on every rank, in PETSc's global numbering (SciPy CSR, NumPy)."""
    r0, r1 = A.getOwnershipRange()
    canon = np.arange(r0, r1)
    return gather_csr_canonical(A, canon), gather_canonical(b, canon, A.getSize()[0])


def test_batched_jacobi_pcg_gives_petscs_iterates_on_two_meshes(comm):
    """Two DOLFINx systems of different sizes in one batch; K = 7 steps of Jacobi-PCG from a
    random start equal PETSc's CG+Jacobi iterates (1 and 2 ranks: the PETSc solve is
    distributed, the batch holds the gathered systems)."""
    steps = 7
    systems = [_poisson(comm, 12, 1), _poisson(comm, 17, 2)]
    mats, rhs, starts, ref = [], [], [], []
    for k, (A, b) in enumerate(systems):
        M, bb = _global(A, b)
        x0 = np.random.default_rng(10 + k).normal(size=M.shape[0])
        ksp = PETSc.KSP().create(comm)
        ksp.setOperators(A)
        ksp.setType("cg")
        ksp.getPC().setType("jacobi")
        ksp.setInitialGuessNonzero(True)
        ksp.setTolerances(rtol=1e-300, atol=0.0, max_it=steps)
        ksp.setConvergenceTest(lambda ksp, it, rnorm: 0)   # never stop early
        x = A.createVecRight()
        r0, r1 = x.getOwnershipRange()
        x.getArray()[:] = x0[r0:r1]
        ksp.solve(b, x)
        assert ksp.getIterationNumber() == steps
        ref.append(gather_canonical(x, np.arange(r0, r1), M.shape[0]))
        mats.append(M), rhs.append(bb), starts.append(x0)
        for o in (ksp, x, A, b):
            o.destroy()
    batch = SystemBatch.from_scipy(mats, rhs)
    out = batched_jacobi_pcg(batch, torch.from_numpy(np.concatenate(starts)), steps)
    for k, xk in enumerate(batch.split(out)):
        err = np.linalg.norm(xk.numpy() - ref[k]) / np.linalg.norm(ref[k])
        assert_all(comm, err < 1e-10, f"sample {k}: relative difference {err:.2e} from PETSc")
    # and the iterates move: 7 steps from the start are not the start
    assert_all(comm, np.linalg.norm(out.numpy() - np.concatenate(starts)) > 1e-3)


def _small_batch():
    mats, rhs = [], []
    for n, seed in ((10, 3), (14, 4)):
        A, b = _poisson(MPI.COMM_SELF, n, seed)
        M, bb = _global(A, b)
        mats.append(M), rhs.append(bb)
        A.destroy(), b.destroy()
    return SystemBatch.from_scipy(mats, rhs), mats, rhs


@pytest.mark.serial
def test_supervision_loss_has_a_detached_target():
    """Tiny model p = w * f: the loss gradient is that of RMSE(c - w f) with c = p_ref held fixed
    (the stop-gradient), not the gradient through the PCG steps."""
    batch, _, _ = _small_batch()
    f = torch.from_numpy(np.random.default_rng(0).normal(size=batch.b.shape[0]))
    w = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    loss, p_ref = supervision_loss(batch, w * f, steps=5)
    loss.backward()
    with torch.no_grad():
        grad = 0.0
        for k, (ck, fk) in enumerate(zip(batch.split(p_ref), batch.split(f))):
            e = ck - 0.3 * fk
            L = torch.sqrt((e * e).mean())
            grad += -(e * fk).mean() / L
        grad /= batch.count
    assert abs(w.grad.item() - grad.item()) < 1e-10 * max(1.0, abs(grad.item()))
    # the gradient through the steps (no detach) is another number: the test can tell
    w2 = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    p = w2 * f
    full = batched_jacobi_pcg(batch, p, 5)
    e = full - p
    torch.stack([torch.sqrt((x * x).mean()) for x in batch.split(e)]).mean().backward()
    assert abs(w2.grad.item() - grad.item()) > 1e-6 * abs(grad.item())


@pytest.mark.serial
def test_losses_vanish_at_the_solution_and_not_at_zero_or_noise():
    batch, mats, rhs = _small_batch()
    import scipy.sparse.linalg as spla

    exact = torch.from_numpy(np.concatenate([spla.spsolve(M.tocsc(), b) for M, b in zip(mats, rhs)]))
    sol_loss, _ = supervision_loss(batch, exact, steps=40)
    assert sol_loss.item() < 1e-10 * exact.abs().max().item()
    assert residual_loss(batch, exact).item() < 1e-10
    scale = torch.sqrt((exact * exact).mean()).item()
    for bad in (torch.zeros_like(exact), torch.randn_like(exact) * scale):
        assert supervision_loss(batch, bad, steps=40)[0].item() > 0.05 * scale
        assert residual_loss(batch, bad).item() > 0.05
    # float32 predictions are accepted (the PCG stays float64)
    l32, ref = supervision_loss(batch, exact.float(), steps=3)
    assert ref.dtype == torch.float64 and l32.dtype == torch.float32


@pytest.mark.serial
def test_bad_systems_and_predictions_are_refused():
    batch, mats, rhs = _small_batch()
    with pytest.raises(InputError, match="do not match"):
        SystemBatch.from_scipy([mats[0]], [rhs[1]])
    nan = rhs[0].copy()
    nan[3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        SystemBatch.from_scipy([mats[0]], [nan])
    with pytest.raises(InputError, match="not an SPD matrix"):
        SystemBatch.from_scipy([-mats[0]], [rhs[0]])
    with pytest.raises(InputError, match="2 matrices and 1"):
        SystemBatch.from_scipy(mats, rhs[:1])
    p = torch.zeros(batch.b.shape[0], dtype=torch.float64)
    p[0] = float("inf")
    with pytest.raises(InputError, match="NaN/Inf"):
        supervision_loss(batch, p)


# -- the cutsquare family and the NPSolver network ------------------------------------------------
from hybridsolve.problems import get_family  # noqa: E402


def test_cutsquare_family_builds_a_mesh_per_system_on_any_rank_count(comm):
    fam = get_family("cutsquare", 16, count=4, seed=3)
    sizes = []
    for i in range(4):
        s = fam.system(i, comm)
        m = s.extra["model"]
        assert_all(comm, s.params.shape == (120,))
        # random boundary conditions: at least one Dirichlet patch; present patches only
        flags = s.params[10:20] > 0.5
        assert_all(comm, flags.any())
        sizes.append(s.size)
        x = s.to_scipy()[0]
        assert_all(comm, abs(x - x.T).max() < 1e-12, "the matrix is symmetric")
        s.destroy()
    serial = []
    for i in range(4):
        s = fam.system(i, MPI.COMM_SELF)
        serial.append(s.size)
        s.destroy()
    assert_all(comm, sizes == serial and len(set(sizes)) > 1, f"{sizes} vs {serial}")


@pytest.mark.serial
def test_cutsquare_refuses_a_pure_neumann_problem_and_bad_options():
    fam = get_family("cutsquare", 12, count=1, seed=0)
    p = fam.params(0).copy()
    p[10:20] = 0.0
    with pytest.raises(InputError, match="pure Neumann"):
        fam.system_from_params(p, MPI.COMM_SELF)
    with pytest.raises(InputError, match="not one of"):
        get_family("cutsquare", 12, bc="robin")
    from conftest import run_cli

    p = run_cli(["datagen", "--family", "cutsquare", "--n", "12", "--count", "2", "--out",
                 "/nonexistent/x.h5", "--quiet"])
    assert p.returncode == 2 and "a new mesh (and size) per system" in p.stderr, p.stderr
    fixed = get_family("cutsquare", 12, count=3, seed=0, bc="fixed")
    for i in range(3):
        q = fixed.params(i)
        from hybridsolve.problems.cutsquare import _patch_present

        assert np.array_equal(q[10:20] > 0.5, _patch_present(q[:10]))


def test_cutbox_family_builds_a_mesh_per_system_on_any_rank_count(comm):
    """The 3-D family: cubes with cylindrical holes along a drawn axis, every boundary facet on
    a patch (the build checks it), the same system on 1 and 2 ranks."""
    fam = get_family("cutbox", 8, count=3, seed=3)
    sizes, axes = [], []
    for i in range(3):
        s = fam.system(i, comm)
        assert_all(comm, s.params.shape == (7 + 8 + 216,))
        assert_all(comm, (s.params[7:15] > 0.5).any(), "a Dirichlet patch")
        sizes.append(s.size)
        axes.append(int(s.params[0]))
        x = s.to_scipy()[0]
        assert_all(comm, abs(x - x.T).max() < 1e-12, "the matrix is symmetric")
        assert_all(comm, s.extra["problem"].mesh.topology.dim == 3)
        s.destroy()
    serial = []
    for i in range(3):
        s = fam.system(i, MPI.COMM_SELF)
        serial.append(s.size)
        s.destroy()
    assert_all(comm, sizes == serial and len(set(sizes)) > 1, f"{sizes} vs {serial}")
    with pytest.raises(InputError, match="radii"):
        p = fam.params(0).copy()
        p[3] = 0.0                       # the first hole's radius
        fam.system_from_params(p, MPI.COMM_SELF)


@pytest.mark.serial
@pytest.mark.parametrize("family,n", [("cutsquare", 16), ("cutbox", 8)])
def test_npsolver_sample_system_is_the_dolfinx_assembly(family, n):
    """Geometry + sample_system (SciPy, what training uses) equals the family's DOLFINx
    assembly of the same parameters, on meshes with Neumann and Dirichlet patches; the facet
    normals point out of the domain (away from the centre on the outer sides, into the holes
    of the cutbox)."""
    from hybridsolve.learned.npsolver import Geometry, sample_system

    fam = get_family(family, n, count=3, seed=5)
    g, k = fam.ngeom, fam.ngeom + fam.patches
    for i in range(3):
        p = fam.params(i)
        s = fam.system_from_params(p, MPI.COMM_SELF)
        A_ref, b_ref = s.A, s.b
        ip, ix, v = A_ref.getValuesCSR()
        import scipy.sparse as sp

        Aref = sp.csr_matrix((v, ix, ip), shape=A_ref.getSize())
        geo = Geometry.from_family(fam, s.extra["problem"].mesh, p)
        A, b, dmask, f = sample_system(geo, p[g:k], p[k:])
        assert abs(A - Aref).max() < 1e-12 * abs(Aref).max()
        assert np.abs(b - b_ref.getArray()).max() < 1e-12 * np.abs(b).max()
        assert 0 < dmask.sum() < len(dmask)
        out = geo.patch < 2 * fam.dim            # the square's sides, the cube's faces
        assert (np.einsum("ij,ij->i", geo.normal[out], geo.mid[out] - 0.5) > 0).all()
        if family == "cutbox":
            axis = int(p[0])
            cross = [j for j in range(3) if j != axis]
            for j, (c1, c2, r) in enumerate(p[1:7].reshape(2, 3)):
                on = geo.patch == 6 + j
                assert on.any() == (r > 0)
                radial = geo.mid[on][:, cross] - [c1, c2]
                assert (np.einsum("ij,ij->i", geo.normal[on][:, cross], radial) < 0).all()
        s.destroy()


@pytest.mark.serial
@pytest.mark.parametrize("family,n", [("cutsquare", 12), ("cutbox", 6)])
def test_npsolver_net_is_zero_on_dirichlet_vertices_and_permutation_equivariant(family, n):
    from hybridsolve.learned.npsolver import NPSolverNet, geometries, draw_samples

    torch.manual_seed(0)
    geos = geometries(n, 2, 0, "random", family)
    smp = draw_samples(geos, 2, np.random.default_rng(0), "random", labels=False)[0]
    dim = 2 if family == "cutsquare" else 3
    net = NPSolverNet(width=32, blocks=2, heads=4, slices=8, bslices=4, dim=dim).eval()
    with torch.no_grad():
        out = net(smp.pts, smp.btok)
        d = smp.pts[:, -2] > 0.5
        assert d.any() and (out[d] == 0).all() and (out[~d] != 0).any()
        perm = torch.randperm(smp.pts.shape[0])
        bperm = torch.randperm(smp.btok.shape[0])
        out2 = net(smp.pts[perm], smp.btok[bperm])
    assert torch.allclose(out2, out[perm], atol=1e-6)
    with pytest.raises(InputError, match="features"):
        net(smp.pts[:, :5], smp.btok)
    other = NPSolverNet(width=32, blocks=2, heads=4, slices=8, bslices=4, dim=5 - dim)
    with pytest.raises(InputError, match=f"expected .* \\(a {5 - dim}-D mesh\\)"):
        other(smp.pts, smp.btok)                 # a mesh of the other dimension


@pytest.mark.serial
def test_train_npsolver_learns_resumes_and_refuses_another_configuration(tmp_path):
    """A short label-free run lowers the held-out error well below the zero prediction's (1.0);
    the same command resumes; another configuration is refused; the model file loads."""
    from conftest import run_cli
    from hybridsolve.learned.models import load_model, model_info

    out = tmp_path / "np.safetensors"
    args = ["train", "npsolver", "--n", "12", "--geometries", "8", "--samples", "128",
            "--epochs", "6", "--batch", "8", "--width", "32", "--blocks", "2", "--heldout", "8",
            "--threads", "1", "--out", str(out), "--quiet"]
    p = run_cli(args)
    assert p.returncode == 0, p.stderr
    info = model_info(out)
    assert len(info["history"]) == 6 and info["train"]["loss"] == "physics"
    assert info["heldout"]["rel_l2_mean"] < 0.8, info["heldout"]   # measured 0.67
    assert "held-out relative L2 error" in p.stdout
    again = run_cli(args)
    assert again.returncode == 0 and "resuming after epoch 6" in again.stdout + again.stderr
    other = run_cli([a if a != "physics" else "x" for a in args] + ["--loss", "residual"])
    assert other.returncode == 2 and "another training configuration" in other.stderr
    m = load_model(out)
    assert type(m).__name__ == "NPSolverNet"


@pytest.mark.serial
def test_train_npsolver_mixes_mesh_sizes_and_starts_from_weights(tmp_path):
    """--mesh-sizes meshes the same geometries round robin at several sizes; --init starts from
    a model's weights (the same configuration; another one is refused by name)."""
    from hybridsolve.learned.npsolver import NPTrainConfig, geometries, train_npsolver

    mixed = geometries(8, 4, 0, "random", "cutsquare", sizes=(12,))
    fine = geometries(12, 4, 0, "random", "cutsquare")
    coarse = geometries(8, 4, 0, "random", "cutsquare")
    assert [g.size for g in mixed] == [coarse[0].size, fine[1].size, coarse[2].size, fine[3].size]
    small = dict(n=8, geometries=2, samples=8, epochs=1, width=32, blocks=2, heldout=2, threads=1)
    first = tmp_path / "a.safetensors"
    train_npsolver(NPTrainConfig(**small, out=str(first)), progress=False, epoch_lines=False)
    lines = []
    train_npsolver(NPTrainConfig(**small, sizes="10", init=str(first), out=str(tmp_path / "b.safetensors")),
                   progress=False, epoch_lines=False, log=lines.append)
    assert any("starting from the weights" in m for m in lines), lines
    with pytest.raises(InputError, match="does not match NPSolverNet"):
        train_npsolver(NPTrainConfig(**small, init="npsolver2d", out=str(tmp_path / "c.safetensors")),
                       progress=False, epoch_lines=False)
    with pytest.raises(InputError, match="sizes"):
        NPTrainConfig(sizes="12,x").extra_sizes


# -- NPSolver inside PETSc --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def np_model(tmp_path_factory):
    """A small label-free NPSolver (every rank trains the same one: deterministic, 1 thread)."""
    from hybridsolve.learned.npsolver import NPTrainConfig, train_npsolver

    out = tmp_path_factory.mktemp(f"np{MPI.COMM_WORLD.rank}") / "np.safetensors"
    train_npsolver(NPTrainConfig(n=12, geometries=8, samples=128, epochs=6, width=32, blocks=2,
                                 heldout=4, threads=1, out=str(out)), progress=False,
                   epoch_lines=False)
    return str(out)


def _heldout_system(comm, index=0):
    fam = get_family("cutsquare", 14, count=index + 1, seed=777)   # geometries never trained on
    s = fam.system(index, comm)
    prob = s.extra["problem"]
    return s, prob.V, prob.bcs[0].dof_indices()[0]


def _cg(comm, s, x0=None, pc="jacobi", extra=None):
    from hybridsolve.solvers.petsc import KrylovSolver

    opts = {"ksp_type": "cg", "pc_type": pc, "ksp_norm_type": "unpreconditioned", **(extra or {})}
    solver = KrylovSolver(comm, options=opts, rtol=1e-8, max_it=2000)
    res = solver.solve(s.A, s.b, x0=x0)
    return solver, res


def test_npsolver_initial_guess_is_close_and_rank_independent(comm, np_model):
    from hybridsolve.learned.models import load_model
    from hybridsolve.learned.npsolver_petsc import MeshInputs, initial_guess

    model = load_model(np_model)
    s, V, dofs = _heldout_system(comm)
    inputs = MeshInputs(V, dofs)
    x0 = s.b.duplicate()
    initial_guess(model, inputs, s.b, x0)
    guess = s.gather(x0)
    a, r0 = _cg(comm, s)
    b, r1 = _cg(comm, s, x0=x0)
    assert_all(comm, r1.converged and r1.true_residual <= 1.01e-8, r1.summary())
    # a small test model's guess is closer to the solution than zero (relative error 1); the
    # iterations it saves at 1e-8 are the benchmark's business (modest: results/npsolver.md)
    exact = s.gather(r0.x)
    err = np.linalg.norm(guess - exact) / np.linalg.norm(exact)
    assert_all(comm, err < 0.8, f"the guess's relative error {err:.3f}")
    # the same prediction on one rank (canonical order: the input vertex numbering)
    s1, V1, d1 = _heldout_system(MPI.COMM_SELF)
    x1 = s1.b.duplicate()
    initial_guess(model, MeshInputs(V1, d1), s1.b, x1)
    serial = s1.gather(x1)
    assert_all(comm, np.abs(serial - guess).max() <= 1e-5 * np.abs(serial).max(),
               f"{np.abs(serial - guess).max():.2e}")
    for o in (a, b, r0.x, r1.x, x0, x1, s, s1):
        o.destroy()


def test_npsolver_pc_in_fcg_by_options_with_its_safeguards(comm, tmp_path):
    """The shipped network in FCG's cycle on a held-out mesh: the true residual met, no
    fallback, the view says what ran; it needs far fewer iterations than the same cycle with an
    untrained network (the cycle's two SSOR sweeps alone already beat one: the network must
    earn the rest) and, where ICC runs (1 rank), fewer than ICC-PCG."""
    from hybridsolve.learned.meshnets import NPSolverNet
    from hybridsolve.learned.models import save_model
    from hybridsolve.learned.npsolver_petsc import register_mesh

    s, V, dofs = _heldout_system(comm)
    opts = {**register_mesh("heldout", V, dofs), "pc_npsolver_model": "npsolver2d",
            "ksp_fcg_mmax": 30}
    a, r = _cg(comm, s, pc="python", extra={**opts, "ksp_type": "fcg"})
    assert_all(comm, r.converged and r.true_residual <= 1.01e-8, r.summary())
    info = r.info["npsolver"]
    assert_all(comm, info["applications"] == r.iterations + 1 or info["applications"] >= r.iterations,
               str(info))
    assert_all(comm, info["fallback_nonfinite"] + info["fallback_not_descent"] == 0, str(info))
    path = comm.bcast(str(tmp_path / "view.txt"), root=0)
    viewer = PETSc.Viewer().createASCII(path, comm=comm)
    a.ksp.view(viewer)
    viewer.destroy()
    comm.Barrier()
    assert "NPSolverPC: model" in open(path).read()
    assert "two-level cycle: smoother sor x1" in open(path).read()
    torch.manual_seed(0)
    untrained = comm.bcast(str(tmp_path / "untrained.safetensors"), root=0)
    if comm.rank == 0:
        save_model(NPSolverNet(), untrained)
    comm.Barrier()
    b, ru = _cg(comm, s, pc="python", extra={**opts, "ksp_type": "fcg",
                                              "pc_npsolver_model": untrained})
    assert_all(comm, ru.converged and r.iterations < 0.6 * ru.iterations,
               f"shipped network {r.iterations} vs untrained {ru.iterations}")   # measured 9 vs 21
    if comm.size == 1:
        c, ri = _cg(comm, s, pc="icc")
        assert r.iterations < ri.iterations, (r.iterations, ri.iterations)  # measured 9 vs 23
        c.destroy()
        ri.x.destroy()
    for o in (a, b, r.x, ru.x, s):
        o.destroy()


def test_npsolver_pc_refuses_a_missing_mesh_or_a_grid_model(comm, np_model):
    from hybridsolve.errors import CollectiveError
    from hybridsolve.learned.npsolver_petsc import register_mesh

    s, V, dofs = _heldout_system(comm)
    base = {"pc_type": "python", "pc_python_type": "hybridsolve.learned.npsolver_petsc.NPSolverPC",
            "pc_npsolver_model": np_model, "ksp_type": "fcg"}
    # an operator that does not carry its P1 problem (a copy: what a user's own code has)
    copy = s.A.duplicate(copy=True)
    plain = type(s)(A=copy, b=s.b, params=s.params, meta=s.meta, canonical=s.canonical,
                    local_coordinates=s.local_coordinates)
    with pytest.raises((InputError, CollectiveError), match="register_mesh"):
        _cg(comm, plain, pc="python", extra=base)
    copy.destroy()
    opts = register_mesh("m2", V, dofs)
    with pytest.raises((InputError, CollectiveError), match="not an NPSolver network"):
        _cg(comm, s, pc="python", extra={**base, **opts, "pc_npsolver_model": "dcdm2d"})
    other, V2, d2 = _heldout_system(comm, index=1)
    opts = register_mesh("other", V2, d2)
    with pytest.raises((InputError, CollectiveError), match="another space"):
        _cg(comm, s, pc="python", extra={**base, **opts})
    s.destroy()
    other.destroy()
    # a network of triangles on a tetrahedral mesh: refused on every rank, before any solve
    box = get_family("cutbox", 6, count=1, seed=777).system(0, comm)
    with pytest.raises((InputError, CollectiveError), match="trained on 2-D meshes, this space is 3-D"):
        _cg(comm, box, pc="python", extra={**base, "pc_npsolver_mesh": "auto"})
    box.destroy()


def test_npsolver_pc_in_a_dolfinx_linear_problem_by_options(comm, np_model):
    """A FEniCSx user's code: a mesh, a LinearProblem, our PC chosen by petsc_options after
    register_mesh; the answer meets the true residual, on 1 and 2 ranks."""
    from hybridsolve.learned.npsolver_petsc import register_mesh
    from hybridsolve.problems.cutsquare import cutsquare_mesh

    mesh = cutsquare_mesh(comm, np.array([0.15, 0, 0, 0.12, 0.5, 0.45, 0.08, 0, 0, 0]), 14)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    x = ufl.SpatialCoordinate(mesh)
    facets = dolfinx.mesh.locate_entities_boundary(
        mesh, 1, lambda X: np.isclose(X[0], 0.0) | np.isclose(X[1], 0.0))
    dofs = dolfinx.fem.locate_dofs_topological(V, 1, facets)
    bc = dolfinx.fem.dirichletbc(0.0, dofs, V)
    opts = {**register_mesh("user", V, dofs), "pc_npsolver_model": np_model,
            "ksp_type": "fcg", "ksp_fcg_mmax": 30, "ksp_rtol": 1e-8,
            "ksp_norm_type": "unpreconditioned"}
    problem = dolfinx.fem.petsc.LinearProblem(
        ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx,
        ufl.cos(3 * x[0]) * ufl.sin(2 * x[1]) * v * ufl.dx, bcs=[bc],
        petsc_options_prefix="np_user_", petsc_options=opts)
    uh = problem.solve()
    ksp = problem.solver
    assert_all(comm, ksp.getConvergedReason() > 0, str(ksp.getConvergedReason()))
    A, b = problem.A, problem.b
    r = b.duplicate()
    A.mult(uh.x.petsc_vec, r)
    r.aypx(-1.0, b)
    assert_all(comm, r.norm() <= 1.01e-8 * b.norm(), f"{r.norm() / b.norm():.2e}")
    stats = ksp.getPC().getPythonContext().stats
    assert_all(comm, stats["applications"] > 0 and stats["fallback_nonfinite"] == 0, str(stats))
    r.destroy()


@pytest.mark.serial
def test_shipped_npsolver_is_small_loads_and_solves_by_method_name(tmp_path):
    """The shipped npsolver2d: under 1 MB, its training facts travel with it, its held-out
    error is what the benchmark reports; 'solve --method npsolver' on cutsquare systems (the
    mesh found on the matrix) converges on 2 ranks with no fallback."""
    import json

    from conftest import run_cli
    from hybridsolve.learned.models import SHIPPED, model_info, shipped_model_path

    p = shipped_model_path("npsolver2d")
    assert "npsolver2d" in SHIPPED and p.exists() and p.stat().st_size < 1_000_000
    info = model_info("npsolver2d")
    assert info["train"]["loss"] == "physics" and info["heldout"]["rel_l2_mean"] < 0.5
    out = tmp_path / "np.json"
    r = run_cli(["solve", "--family", "cutsquare", "--n", "14", "--count", "2", "--seed", "5",
                 "--method", "npsolver", "--rtol", "1e-8", "--json", str(out), "-ksp_view"], np_=2)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())["results"]
    assert all(x["true_residual"] <= 1.01e-8 and x["reason"] > 0 for x in res), res
    assert "NPSolverPC: model npsolver2d" in r.stdout and "0 times for NaN/Inf" in r.stdout


def test_shipped_npsolver3d_preconditions_held_out_boxes_on_any_rank_count(comm, tmp_path):
    """The shipped 3-D network, chosen by '-pc_npsolver_model auto' on a tetrahedral mesh, in
    FCG's cycle on a held-out cutbox mesh (seed 777, finer than its training meshes): the true
    residual met, no fallback; on one rank fewer iterations than an untrained network in the
    same cycle and than ICC-PCG; its prediction is within 50% of the solution (a noise
    network is far off) and the same on 1 and 2 ranks."""
    from hybridsolve.learned.meshnets import NPSolverNet
    from hybridsolve.learned.models import load_model, model_info, save_model
    from hybridsolve.learned.npsolver_petsc import MeshInputs, initial_guess

    info = model_info("npsolver3d")
    assert_all(comm, info["train"]["family"] == "cutbox" and info["heldout"]["rel_l2_mean"] < 0.5)
    fam = get_family("cutbox", 14, count=1, seed=777)
    s = fam.system(0, comm)
    opts = {"pc_npsolver_model": "auto", "ksp_fcg_mmax": 30,
            "pc_python_type": "hybridsolve.learned.npsolver_petsc.NPSolverPC"}
    a, r = _cg(comm, s, pc="python", extra={**opts, "ksp_type": "fcg"})
    assert_all(comm, r.converged and r.true_residual <= 1.01e-8, r.summary())
    st = r.info["npsolver"]
    assert_all(comm, st["fallback_nonfinite"] + st["fallback_not_descent"] == 0, str(st))
    assert_all(comm, "model npsolver3d" in a.ksp.getPC().getPythonContext().describe())
    torch.manual_seed(0)
    untrained = comm.bcast(str(tmp_path / "untrained3d.safetensors"), root=0)
    if comm.rank == 0:
        save_model(NPSolverNet(dim=3), untrained)
    comm.Barrier()
    b, ru = _cg(comm, s, pc="python", extra={**opts, "ksp_type": "fcg",
                                              "pc_npsolver_model": untrained})
    assert_all(comm, ru.converged, ru.summary())
    if comm.size == 1:
        # in 3-D the cycle's SSOR sweeps do more of the work than in 2-D (measured 13 vs 16,
        # ICC 17; on 2 ranks, where SSOR is per rank, 15 vs 16: results/npsolver_3d.md)
        assert r.iterations < 0.85 * ru.iterations, (r.iterations, ru.iterations)
        c, ri = _cg(comm, s, pc="icc")
        assert r.iterations < ri.iterations, (r.iterations, ri.iterations)
        c.destroy()
        ri.x.destroy()
    # the prediction: rank-independent, closer than zero
    model = load_model("npsolver3d")
    prob = s.extra["problem"]
    x0 = s.b.duplicate()
    initial_guess(model, MeshInputs(prob.V, prob.bcs[0].dof_indices()[0]), s.b, x0)
    guess, exact = s.gather(x0), s.gather(r.x)
    err = np.linalg.norm(guess - exact) / np.linalg.norm(exact)
    assert_all(comm, err < 0.5, f"the guess's relative error {err:.3f}")
    s1 = fam.system(0, MPI.COMM_SELF)
    p1 = s1.extra["problem"]
    x1 = s1.b.duplicate()
    initial_guess(model, MeshInputs(p1.V, p1.bcs[0].dof_indices()[0]), s1.b, x1)
    serial = s1.gather(x1)
    assert_all(comm, np.abs(serial - guess).max() <= 1e-5 * np.abs(serial).max(),
               f"{np.abs(serial - guess).max():.2e}")
    for o in (a, b, r.x, ru.x, x0, x1, s, s1):
        o.destroy()

