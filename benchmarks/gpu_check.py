"""The prepared GPU check: every GPU measurement in one run, under 5 minutes, JSON out.

    python benchmarks/gpu_check.py [--out results/gpu_check.json] [--quick]

1. **CPU check** (always, any machine): the torch stencil equals the assembled grid matrix, and
   the torch-only DCDM (:mod:`hybridsolve.learned.torch_dcdm`) takes the same iterations as the
   PETSc DCDM with the same network on a 3-D obstacle grid (32^3; 16^3 with ``--quick``).
2. **Device** (when torch sees a CUDA device): forward-pass times of the shipped 3-D network
   and of a 3-D VCycleNet at 64^3 and 128^3 in fp32, TF32 and bf16; full torch-DCDM solves to
   1e-4 and 1e-6 at 64^3 and 128^3 (shipped dcdm3d); and, on this machine's CPU, PETSc CG+GAMG
   and ICC-PCG on the same systems, the baselines a GPU DCDM has to beat.

   The same CPU check for the learned multigrid network mg3d (torch-DCDM with the operator's
   levels against the PETSc DCDM through TorchPC).
3. **MGNet on the device** (issue 14): mg3d's levels (set-up time), one cycle in fp32/TF32 and
   torch-DCDM solves to 1e-4 and 1e-6 at 64^3 and 128^3 (32^3/64^3 with ``--quick``); CPU
   CG+GAMG on the same systems is part 2's baseline.
4. **NPSolver on the device** (issue 15): on held-out cutsquare meshes (mesh size 1/16 to 1/96,
   up to about 1.5e4 dofs; npsolver2d) and cutbox meshes (1/8 to 1/24, up to about 1.5e4 dofs;
   npsolver3d) the network's prediction time in fp32 and bf16 with its relative L2
   error, the CPU time of CG+ICC and CG+GAMG from zero to the same accuracy (the GPU goal: 10x
   faster at matched accuracy), and the time of one label-free training step (batch 8, 40
   batched Jacobi-PCG steps in float64 on the device).
5. **Learned movers on the device** (issue 16): DMM's (potential and its autograd gradient) and
   UM2N's network evaluation on 64^2 and 128^2 squares, CPU against device, fp32.

Without a GPU it writes the CPU part and ``"device": null``. The JSON names the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine  # noqa: E402


def _system(n, dim=3, seed=101, obstacles=3):
    from hybridsolve.problems import get_family
    from hybridsolve.stack import MPI

    fam = get_family("grid", n, count=2, seed=seed, dim=dim, obstacles=obstacles)
    return fam.system(1, MPI.COMM_SELF)


def _torch_problem(system, device, dtype):
    import torch

    from hybridsolve.learned.torch_dcdm import StencilTorch
    from hybridsolve.problems.grid import face_coefficients

    mask = system.params[1].astype(bool)
    op = StencilTorch(face_coefficients(mask.shape, mask=mask), mask, device=device, dtype=dtype)
    b = torch.as_tensor(system.gather(system.b).reshape(mask.shape), device=device, dtype=dtype)
    return op, b


def cpu_check(n: int, model_name: str = "dcdm3d") -> dict:
    import torch

    from hybridsolve.learned.models import load_model
    from hybridsolve.learned.torch_dcdm import torch_dcdm
    from hybridsolve.solvers.petsc import KrylovSolver
    from hybridsolve.stack import MPI

    s = _system(n)
    A, b = s.to_scipy()
    op, bt = _torch_problem(s, "cpu", torch.float64)
    u = np.random.default_rng(0).standard_normal(A.shape[0])
    y = op(torch.from_numpy(u.reshape(op.shape))).numpy().ravel()
    stencil_err = float(np.abs(y - A @ u).max() / np.abs(A @ u).max())
    model = load_model(model_name)
    out = {"n": n, "stencil_max_rel_error": stencil_err}
    for tol in (1e-4, 1e-6):
        t = torch_dcdm(op, bt, model, rtol=tol, max_it=2000)
        sv = KrylovSolver(MPI.COMM_SELF, options={
            "ksp_type": "python", "ksp_python_type": "hybridsolve.learned.petsc.DCDM",
            "pc_type": "python", "pc_python_type": "hybridsolve.learned.petsc.TorchPC",
            "pc_torch_model": model_name, "pc_torch_mode": "gathered"}, rtol=tol, max_it=2000)
        r = sv.solve(s.A, s.b)
        sv.destroy()
        out[f"tol {tol:g}"] = {"torch_dcdm_iterations": t["iterations"],
                               "torch_dcdm_residual": t["relative_residual"],
                               "petsc_dcdm_iterations": r.iterations,
                               "petsc_dcdm_residual": r.true_residual,
                               "petsc_classical_iterations": r.info["dcdm"]["classical_iterations"]}
    # the learned multigrid network (levels from the assembled operator)
    mg = load_model("mg3d").eval()
    hier = mg.prepare(A, op.shape)
    for tol in (1e-4, 1e-6):
        t = torch_dcdm(op, bt, mg, rtol=tol, max_it=2000, levels=hier)
        sv = KrylovSolver(MPI.COMM_SELF, options={
            "ksp_type": "python", "ksp_python_type": "hybridsolve.learned.petsc.DCDM",
            "pc_type": "python", "pc_python_type": "hybridsolve.learned.petsc.TorchPC",
            "pc_torch_model": "mg3d", "pc_torch_mode": "gathered"}, rtol=tol, max_it=2000)
        r = sv.solve(s.A, s.b)
        sv.destroy()
        out[f"mg3d tol {tol:g}"] = {"torch_dcdm_iterations": t["iterations"],
                                    "torch_dcdm_residual": t["relative_residual"],
                                    "petsc_dcdm_iterations": r.iterations,
                                    "petsc_dcdm_residual": r.true_residual}
    s.destroy()
    return out


def mgnet_part(quick: bool, dev: str = "cuda") -> dict | None:
    """The learned multigrid network mg3d on the device (issue 14's GPU goal: below CPU CG+GAMG
    at 128^3): levels (SciPy Galerkin products on the CPU, then the spectral-cap estimate on
    the device), one cycle in fp32 and TF32, torch-DCDM solves to 1e-4 and 1e-6. The CPU
    CG+GAMG baseline of the same systems (same sizes and seed) is in the device part's
    ``solves``: not solved twice."""
    import torch

    from hybridsolve.learned.models import load_model
    from hybridsolve.learned.torch_dcdm import torch_dcdm

    if dev == "cuda" and not torch.cuda.is_available():
        return None
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    out: dict = {}
    model = load_model("mg3d").to(dev).eval()
    for n in ((32, 64) if quick else (64, 128)):
        s = _system(n)
        A, _ = s.to_scipy()
        op, b = _torch_problem(s, dev, torch.float64)
        sync()
        t0 = time.perf_counter()
        hier = model.prepare(A, op.shape, device=dev)
        sync()
        row = {"levels": [list(sh) for sh in hier.shapes], "levels_s": time.perf_counter() - t0,
               "coarse_lambda": [lv.lam for lv in hier.levels[1:-1]],
               "scaled_levels": hier.scaled}
        x = torch.randn(1, 1, *op.shape, device=dev)
        for prec in ("fp32", "tf32"):
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = prec == "tf32"
            with torch.no_grad():
                for _ in range(3):
                    model(x, hier)
                sync()
                t0 = time.perf_counter()
                for _ in range(10):
                    model(x, hier)
                sync()
            row[f"cycle_s {prec}"] = (time.perf_counter() - t0) / 10
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        for tol in (1e-4, 1e-6):
            t = torch_dcdm(op, b, model, rtol=tol, max_it=500, levels=hier)
            row[f"tol {tol:g}"] = {
                "gpu_dcdm_iterations": t["iterations"], "gpu_dcdm_s": t["time"],
                "gpu_dcdm_with_levels_s": t["time"] + row["levels_s"],
                "gpu_dcdm_residual": t["relative_residual"], "reason": t["reason"]}
        out[f"{n}^3"] = row
        print("mgnet", n, row, flush=True)
        s.destroy()
    return out


def device_part(quick: bool) -> dict | None:
    import torch

    from hybridsolve.learned.models import VCycleNet, load_model
    from hybridsolve.learned.torch_dcdm import torch_dcdm
    from hybridsolve.solvers.petsc import KrylovSolver
    from hybridsolve.stack import MPI

    if not torch.cuda.is_available():
        return None
    dev = "cuda"
    res: dict = {"name": torch.cuda.get_device_name(0), "torch": torch.__version__}
    sizes = (32, 64) if quick else (64, 128)
    nets = {"dcdm3d": load_model("dcdm3d"), "vcycle3d (untrained, timing only)": VCycleNet(3, 16, 2)}
    fwd = {}
    for label, net in nets.items():
        for n in sizes:
            for prec in ("fp32", "tf32", "bf16"):
                torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = prec == "tf32"
                dtype = torch.bfloat16 if prec == "bf16" else torch.float32
                m = net.to(dev, dtype).eval()
                x = torch.randn(1, 1, n, n, n, device=dev, dtype=dtype)
                with torch.no_grad():
                    for _ in range(3):
                        m(x)
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    reps = 10
                    for _ in range(reps):
                        m(x)
                    torch.cuda.synchronize()
                fwd[f"{label} {n}^3 {prec}"] = (time.perf_counter() - t0) / reps
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    res["forward_s"] = fwd
    model = load_model("dcdm3d").to(dev, torch.float32).eval()
    solves = {}
    for n in sizes:
        s = _system(n)
        op, b = _torch_problem(s, dev, torch.float64)
        for tol in (1e-4, 1e-6):
            t = torch_dcdm(op, b, model, rtol=tol, max_it=3000)
            row = {"gpu_dcdm_iterations": t["iterations"], "gpu_dcdm_s": t["time"],
                   "gpu_dcdm_residual": t["relative_residual"], "reason": t["reason"]}
            for name, opts in (("cpu_cg_gamg", {"ksp_type": "cg", "pc_type": "gamg"}),
                               ("cpu_icc_pcg", {"ksp_type": "cg", "pc_type": "icc"})):
                sv = KrylovSolver(MPI.COMM_SELF, options={**opts, "ksp_norm_type": "unpreconditioned"},
                                  rtol=tol, max_it=5000)
                r = sv.solve(s.A, s.b)
                row[f"{name}_iterations"], row[f"{name}_s"] = r.iterations, r.time
                sv.destroy()
            solves[f"{n}^3 tol {tol:g}"] = row
            print(n, tol, row, flush=True)
        s.destroy()
    res["solves"] = solves
    return res


def npsolver_part(quick: bool) -> dict | None:
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla
    import torch

    from bench_npsolver import matched_accuracy
    from hybridsolve.learned.models import load_model
    from hybridsolve.learned.npsolver import Geometry, draw_samples
    from hybridsolve.learned.npsolver_petsc import MeshInputs, initial_guess
    from hybridsolve.learned.physics import SystemBatch, supervision_loss
    from hybridsolve.problems import get_family
    from hybridsolve.stack import MPI

    if not torch.cuda.is_available():
        return None
    dev = "cuda"
    out: dict = {}
    cases = [("cutsquare", "npsolver2d", n) for n in ((16, 32) if quick else (16, 48, 96))]
    cases += [("cutbox", "npsolver3d", n) for n in ((8,) if quick else (8, 16, 24))]
    for family, name, n in cases:
        base = load_model(name)
        fam = get_family(family, n, count=1, seed=777)
        s = fam.system(0, MPI.COMM_SELF)
        prob = s.extra["problem"]
        ip, ix, v = s.A.getValuesCSR()
        A = sp.csr_matrix((v, ix, ip), shape=s.A.getSize())
        exact = spla.spsolve(A.tocsc(), s.b.getArray(readonly=True).copy())
        geo = Geometry.from_family(fam, prob.mesh, s.params)
        inputs = MeshInputs(prob.V, prob.bcs[0].dof_indices()[0])
        row = {"dofs": s.size}
        x = s.b.duplicate()
        for prec, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            model = base.to(dev, dtype).eval()
            initial_guess(model, inputs, s.b, x)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(10):
                initial_guess(model, inputs, s.b, x)
            torch.cuda.synchronize()
            e = x.getArray(readonly=True) - exact
            err = float(np.sqrt(e @ (geo.M @ e) / (exact @ (geo.M @ exact))))
            row[f"gpu_{prec}_s"], row[f"gpu_{prec}_rel_l2"] = (time.perf_counter() - t0) / 10, err
        for name, opts in (("cpu_cg_icc", {"ksp_type": "cg", "pc_type": "icc"}),
                           ("cpu_cg_gamg", {"ksp_type": "cg", "pc_type": "gamg"})):
            k, t = matched_accuracy(s.A, s.b, geo.M, exact, row["gpu_fp32_rel_l2"], opts)
            row[f"{name}_matched_its"], row[f"{name}_matched_s"] = k, t
            row[f"{name}_over_gpu_fp32"] = t / row["gpu_fp32_s"]
        # one label-free training step on the device
        smp = draw_samples([geo], 8, np.random.default_rng(0), "random", labels=False)
        model = base.to(dev, torch.float32).train()
        batch = SystemBatch.from_scipy([q.A for q in smp], [q.b for q in smp], device=dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        for rep in range(4):
            if rep == 1:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
            p = torch.cat([model(q.pts.to(dev), q.btok.to(dev)) for q in smp])
            loss, _ = supervision_loss(batch, p, 40)
            opt.zero_grad()
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        row["gpu_train_step_s"] = (time.perf_counter() - t0) / 3
        out[f"{family} 1/{n}"] = row
        print("npsolver", family, n, row, flush=True)
        x.destroy()
        s.destroy()
    return out


def movers_part(quick: bool) -> dict | None:
    """Issue 16: DMM's and UM2N's model evaluation on the device (fp32) against the same on the
    CPU, on structured squares of growing size (the network only: monitor, gather and guarantee
    are on the CPU in either case)."""
    import torch

    from hybridsolve.learned.dmm import sensor_matrix
    from hybridsolve.learned.models import load_model
    from hybridsolve.learned.um2n import mesh_graph, vertex_features

    if not torch.cuda.is_available():
        return None
    out: dict = {}
    for n in ((32,) if quick else (64, 128)):
        g = np.linspace(0, 1, n + 1)
        xi = np.array([(a, b) for b in g for a in g])
        cells = []
        for j in range(n):
            for i in range(n):
                v = j * (n + 1) + i
                cells += [(v, v + 1, v + n + 2), (v, v + n + 2, v + n + 1)]
        cells = np.array(cells)
        proj = np.broadcast_to(np.eye(2), (len(xi), 2, 2)).copy()
        m = 1 + 5 * np.exp(-((xi[:, 0] - 0.5) ** 2 + (xi[:, 1] - 0.6) ** 2) / 0.01)
        row = {"vertices": len(xi)}
        dmm = load_model("dmm2d")
        S = sensor_matrix(xi, dmm.sensors, cells)
        s = torch.as_tensor(S @ m, dtype=torch.float32)[None]
        s = s / s.mean() - 1
        um = load_model("um2n2d")
        f, _, _ = vertex_features(xi, proj, m)
        e = mesh_graph(cells, len(xi))
        for dev in ("cpu", "cuda"):
            d_net, u_net = dmm.to(dev), um.to(dev)
            pts = torch.as_tensor(xi, dtype=torch.float32, device=dev)[None]
            ft, et = torch.as_tensor(f, dtype=torch.float32, device=dev), torch.as_tensor(e, device=dev)
            pt = torch.as_tensor(proj, dtype=torch.float32, device=dev)
            for name, fn in (("dmm", lambda: d_net.displacement(s.to(dev), pts.clone())),
                             ("um2n", lambda: u_net(ft, et, pt))):
                with torch.enable_grad():
                    fn()
                    if dev == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    for _ in range(5):
                        fn()
                    if dev == "cuda":
                        torch.cuda.synchronize()
                row[f"{name}_{dev}_s"] = (time.perf_counter() - t0) / 5
        out[f"{n}x{n}"] = row
        print("movers", n, row, flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=RESULTS / "gpu_check.json")
    p.add_argument("--quick", action="store_true", help="small sizes (a test of the script)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    report = {"machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "cpu_check": cpu_check(16 if args.quick else 32)}
    print("cpu check:", report["cpu_check"], flush=True)
    report["device"] = device_part(args.quick)
    report["mgnet_device"] = mgnet_part(args.quick)
    report["npsolver_device"] = npsolver_part(args.quick)
    report["movers_device"] = movers_part(args.quick)
    report["wall_s"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out} in {report['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
