"""NPSolver (issue 15): a neural Poisson solver on unstructured DOLFINx meshes, trained label-free
by Jacobi-PCG steps from its own prediction (:mod:`~hybridsolve.learned.physics`).

* :class:`Geometry`: one mesh of the ``cutsquare`` family as NumPy/SciPy data (P1 stiffness and
  mass without boundary conditions, vertex coordinates, boundary facets with outward normals and
  patch numbers), from a DOLFINx assembly on one process;
* :func:`sample_system`: a sample (Dirichlet flags per patch, Fourier source) on a geometry as
  ``(A, b)`` exactly as DOLFINx assembles it (identity rows and columns on Dirichlet dofs, u = 0
  there; tested against the family's own assembly) and the network's inputs;
* :class:`~hybridsolve.learned.meshnets.NPSolverNet`: the boundary-aware slice transformer (Transolver-style physics attention:
  vertices and boundary facets embedded separately, softly assigned to interior and boundary
  slices, the slice tokens attend to each other, only the interior slices are mapped back to
  the vertices); the output is zero on Dirichlet vertices by construction;
* :func:`train_npsolver`: the training harness for the three losses the paper compares
  (``physics``: the stop-gradient PCG target; ``supervised``: stored solutions from a direct
  solve, the same samples; ``residual``: ||b - A p|| / ||b||), with checkpoint and resume, and
  the relative L2 error on held-out geometries (another seed of the family).

Everything here is serial torch (a training run is one process); the PETSc side is
:mod:`~hybridsolve.learned.npsolver_petsc`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from hybridsolve.errors import InputError
from hybridsolve.learned.meshnets import NPSolverNet, mesh_features
from hybridsolve.learned.physics import SystemBatch, residual_loss, supervision_loss

__all__ = ["Geometry", "boundary_facets", "sample_system", "NPSolverNet", "NPTrainConfig", "train_npsolver",
           "evaluate", "point_features"]

@dataclass
class Geometry:
    """One mesh as arrays (P1 dof numbering): ``coords`` (n, d); ``K``, ``M`` stiffness and mass
    (CSR, no boundary conditions); ``facets`` (nb, d) dofs of each boundary facet; ``mid``,
    ``normal`` (nb, d); ``patch`` (nb,) its boundary patch (d = 2: cutsquare, 3: cutbox)."""

    coords: np.ndarray
    K: sp.csr_matrix
    M: sp.csr_matrix
    facets: np.ndarray
    mid: np.ndarray
    normal: np.ndarray
    patch: np.ndarray
    params: np.ndarray

    @property
    def size(self) -> int:
        return self.coords.shape[0]

    @classmethod
    def from_mesh(cls, mesh, geom_params: np.ndarray, facets_patch=None) -> "Geometry":
        """From a serial DOLFINx mesh of a cut square (or, with ``facets_patch`` from
        :meth:`CutBox.facet_patches <hybridsolve.problems.cutbox.CutBox.facet_patches>`, a cut
        box) with geometry ``geom_params``."""
        import dolfinx
        import dolfinx.fem.petsc
        import ufl

        from hybridsolve.la.petsc import gather_csr_canonical
        from hybridsolve.problems.cutsquare import facet_patches

        if mesh.comm.size != 1:
            raise InputError("Geometry.from_mesh: a serial mesh (COMM_SELF) is needed")
        V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
        u, v = ufl.TrialFunction(V), ufl.TestFunction(V)

        def csr(form):
            A = dolfinx.fem.petsc.assemble_matrix(dolfinx.fem.form(form))
            A.assemble()
            out = gather_csr_canonical(A, np.arange(A.getSize()[0]))
            A.destroy()
            return out

        K = csr(ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx)
        M = csr(u * v * ufl.dx)
        coords = V.tabulate_dof_coordinates()[:, :mesh.topology.dim].copy()
        facets, patch = facet_patches(mesh, np.asarray(geom_params)) if facets_patch is None \
            else facets_patch
        fd, mid, nrm = boundary_facets(V, facets)
        return cls(coords=coords, K=K, M=M, facets=fd, mid=mid, normal=nrm,
                   patch=np.asarray(patch, dtype=np.int64), params=np.asarray(geom_params))


    @classmethod
    def from_family(cls, family, mesh, params: np.ndarray) -> "Geometry":
        """From a serial mesh of a cutsquare or cutbox ``family`` and a parameter array of it."""
        geom = np.asarray(params)[:family.ngeom]
        return cls.from_mesh(mesh, geom, family.facet_patches(mesh, geom))


def boundary_facets(V, facets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For local boundary facets of a P1 space's triangle (tetrahedral) mesh: the local dofs of
    each facet's d vertices (nb, d), its midpoint (centroid) and its outward unit normal
    (nb, d) (away from its cell)."""
    mesh = V.mesh
    tdim = mesh.topology.dim
    for a, b in ((tdim - 1, 0), (tdim, 0), (tdim - 1, tdim)):
        mesh.topology.create_connectivity(a, b)
    coords = V.tabulate_dof_coordinates()[:, :tdim]
    c2v = mesh.topology.connectivity(tdim, 0).array.reshape(-1, tdim + 1)
    v2dof = np.empty(c2v.max() + 1, dtype=np.int64)
    v2dof[c2v.reshape(-1)] = V.dofmap.list.reshape(-1)
    f2v = mesh.topology.connectivity(tdim - 1, 0).array.reshape(-1, tdim)
    fd = v2dof[f2v[facets]]
    pts = coords[fd]                                   # (nb, d vertices, d)
    mid = pts.mean(axis=1)
    if tdim == 2:
        t = pts[:, 1] - pts[:, 0]
        nrm = np.stack([t[:, 1], -t[:, 0]], axis=1)
    else:
        nrm = np.cross(pts[:, 1] - pts[:, 0], pts[:, 2] - pts[:, 0])
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-300)
    f2c = mesh.topology.connectivity(tdim - 1, tdim)
    cells = np.array([f2c.links(f)[0] for f in facets], dtype=np.int64)
    cen = coords[v2dof[c2v[cells]]].mean(axis=1) if len(cells) else np.zeros((0, tdim))
    nrm[np.einsum("ij,ij->i", nrm, mid - cen) < 0] *= -1
    return fd, mid, nrm


def sample_system(geo: Geometry, flags: np.ndarray, coeffs: np.ndarray):
    """``(A, b, dirichlet_mask, f)`` for Dirichlet flags per patch and Fourier coefficients:
    DOLFINx's assembly with ``u = 0`` on the Dirichlet patches (rows and columns of those dofs
    replaced by the identity) and the P1 source ``f`` (``b = M f``)."""
    from hybridsolve.problems.cutsquare import source_values

    flags = np.asarray(flags) > 0.5
    on = flags[geo.patch]
    if not on.any():
        raise InputError("NPSolver sample: no Dirichlet facet (a pure Neumann problem is singular)")
    dmask = np.zeros(geo.size, dtype=bool)
    dmask[geo.facets[on].reshape(-1)] = True
    f = source_values(coeffs, *geo.coords.T)
    keep = sp.diags((~dmask).astype(float))
    A = (keep @ geo.K @ keep + sp.diags(dmask.astype(float))).tocsr()
    A.sort_indices()
    b = geo.M @ f
    b[dmask] = 0.0
    return A, b, dmask, f


def point_features(geo: Geometry, dmask: np.ndarray, f: np.ndarray, flags) -> tuple:
    """The network's inputs for a sample on ``geo`` (:func:`~hybridsolve.learned.meshnets.mesh_features`)."""
    bnd = np.zeros(geo.size, dtype=bool)
    bnd[geo.facets.reshape(-1)] = True
    return mesh_features(geo.coords, f, dmask, bnd & ~dmask, geo.mid, geo.normal,
                         (np.asarray(flags) > 0.5)[geo.patch])


# -- data -------------------------------------------------------------------------------------
#: the families NPSolver trains on: a mesh per system, Dirichlet/Neumann patches, Fourier source
FAMILIES = {2: "cutsquare", 3: "cutbox"}


def geometries(n: int, count: int, seed: int, bc: str, family: str = "cutsquare",
               sizes: tuple = ()) -> list:
    """``count`` geometries of ``family`` (cutsquare or cutbox; mesh size 1/n, seed ``seed``),
    serial; with ``sizes``, geometry ``i`` is meshed at size ``1/([n, *sizes][i % k])`` (a mix
    of mesh sizes: the geometries are those of ``seed`` whatever the size)."""
    from hybridsolve.problems import get_family
    from hybridsolve.stack import MPI

    if family not in FAMILIES.values():
        raise InputError(f"NPSolver: family {family!r}: one of {sorted(FAMILIES.values())}")
    fams = [get_family(family, m, count=count, seed=seed, bc=bc) for m in (n, *sizes)]
    out = []
    for i in range(count):
        fam = fams[i % len(fams)]
        p = fam.params(i)
        out.append(Geometry.from_family(fam, fam.mesh(MPI.COMM_SELF, p), p))
        fam._cache.clear()
    return out


@dataclass
class _Sample:
    geo: int
    A: sp.csr_matrix
    b: np.ndarray
    pts: torch.Tensor
    btok: torch.Tensor
    u: np.ndarray | None


def draw_samples(geos: list, count: int, rng: np.random.Generator, bc: str,
                 labels: bool) -> list:
    """``count`` samples over ``geos`` (round robin; all of one family): Dirichlet flags per the
    ``bc`` setting, a fresh Fourier source; ``labels``: with the direct solution."""
    import scipy.sparse.linalg as spla

    from hybridsolve.problems import get_family

    fam = get_family(FAMILIES[geos[0].coords.shape[1]], 8, bc=bc)
    out = []
    for k in range(count):
        g = k % len(geos)
        geo = geos[g]
        flags = fam.draw_bc(rng, geo.params)
        coeffs = fam.draw_source(rng)
        A, b, dmask, f = sample_system(geo, flags, coeffs)
        pts, btok = point_features(geo, dmask, f, flags)
        u = spla.spsolve(A.tocsc(), b) if labels else None
        out.append(_Sample(g, A, b, pts, btok, u))
    return out


# -- training -----------------------------------------------------------------------------------
@dataclass
class NPTrainConfig:
    n: int = 16
    family: str = "cutsquare"
    geometries: int = 32
    samples: int = 512
    epochs: int = 20
    batch: int = 8
    lr: float = 1e-3
    steps: int = 40
    loss: str = "physics"
    bc: str = "random"
    seed: int = 0
    width: int = 64
    blocks: int = 4
    heads: int = 4
    slices: int = 32
    bslices: int = 8
    heldout: int = 32
    threads: int = 0
    #: more mesh sizes, comma-separated ("12,16"): the geometries are meshed round robin at
    #: 1/n and these (training and held-out alike)
    sizes: str = ""
    #: start from this model's weights (same configuration): a warm start, e.g. a curriculum
    #: from one mesh size to several
    init: str = ""
    out: str = "npsolver.safetensors"

    @property
    def extra_sizes(self) -> tuple:
        try:
            return tuple(int(v) for v in self.sizes.split(",") if v.strip())
        except ValueError:
            raise InputError(f"train npsolver: sizes must be comma-separated integers, got "
                             f"{self.sizes!r}") from None

    def __post_init__(self) -> None:
        if self.loss not in ("physics", "supervised", "residual"):
            raise InputError(f"train npsolver: loss must be physics, supervised or residual, "
                             f"got {self.loss!r}")
        if self.family not in FAMILIES.values():
            raise InputError(f"train npsolver: family must be one of {sorted(FAMILIES.values())}, "
                             f"got {self.family!r}")
        if self.bc not in ("fixed", "random"):
            raise InputError(f"train npsolver: bc must be fixed or random, got {self.bc!r}")
        for k in ("n", "geometries", "samples", "epochs", "batch", "width", "blocks", "heads",
                  "slices", "bslices"):
            if getattr(self, k) < 1:
                raise InputError(f"train npsolver: {k} must be >= 1, got {getattr(self, k)}")
        if self.steps < 1:
            raise InputError(f"train npsolver: steps must be >= 1, got {self.steps}")
        if any(m < 6 for m in self.extra_sizes):
            raise InputError(f"train npsolver: mesh sizes must be >= 6, got {self.sizes!r}")


#: held-out geometries come from this seed offset (training geometries: the config's seed)
HELDOUT_SEED = 100_000


def _predict(model: NPSolverNet, samples: list):
    return torch.cat([model(s.pts, s.btok) for s in samples])


def evaluate(model: NPSolverNet, geos: list, samples: list) -> dict:
    """Relative L2 error (mass-matrix norm) of the prediction against the direct solution, mean
    and max over the samples."""
    errs = []
    model.eval()
    with torch.no_grad():
        for s in samples:
            p = model(s.pts, s.btok).double().numpy()
            M = geos[s.geo].M
            e = p - s.u
            errs.append(np.sqrt(e @ (M @ e)) / np.sqrt(s.u @ (M @ s.u)))
    return {"rel_l2_mean": float(np.mean(errs)), "rel_l2_max": float(np.max(errs)),
            "samples": len(errs)}


def train_npsolver(cfg: NPTrainConfig, *, progress: bool = True, epoch_lines: bool = True,
                   log: Callable[[str], None] = print) -> dict:
    """Train (or resume) an NPSolverNet; returns a summary (loss history, held-out error,
    times). The model file carries its configuration, the training facts and the held-out
    error; ``<out>.state.pt`` the optimizer state for a resume. ``progress``: a tqdm bar;
    otherwise (``epoch_lines``) one plain line per epoch (batch logs)."""
    from hybridsolve.learned.models import save_model
    from hybridsolve.learned.training import config_key, cosine_lr, resume, save_state

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    out = Path(cfg.out)
    state_path = Path(str(out) + ".state.pt")
    rng = np.random.default_rng(cfg.seed)
    geos = geometries(cfg.n, cfg.geometries, cfg.seed, cfg.bc, cfg.family, cfg.extra_sizes)
    train = draw_samples(geos, cfg.samples, rng, cfg.bc, labels=cfg.loss == "supervised")
    held_geos = geometries(cfg.n, max(1, min(cfg.heldout, cfg.geometries)),
                           cfg.seed + HELDOUT_SEED, cfg.bc, cfg.family, cfg.extra_sizes)
    held = draw_samples(held_geos, cfg.heldout, np.random.default_rng(cfg.seed + HELDOUT_SEED),
                        cfg.bc, labels=True)
    t_data = time.perf_counter() - t0
    model = NPSolverNet(cfg.width, cfg.blocks, cfg.heads, cfg.slices, cfg.bslices,
                        dim=geos[0].coords.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    cfg_json = config_key(cfg)
    start, history = 0, []
    st = resume(state_path, out, cfg_json, model, opt)
    if st is not None:
        start, history = int(st["epoch"]), [float(h) for h in st["history"]]
        rng = np.random.default_rng(cfg.seed + 7919 * start)
        log(f"train npsolver: resuming after epoch {start}")
    elif cfg.init:
        from hybridsolve.learned.models import load_weights, shipped_model_path, SHIPPED

        load_weights(model, shipped_model_path(cfg.init) if cfg.init in SHIPPED else cfg.init)
        log(f"train npsolver: starting from the weights of {cfg.init}")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.epochs, initial=start, desc="train npsolver", unit="epoch")
    for epoch in range(start, cfg.epochs):
        cosine_lr(opt, cfg.lr, epoch, cfg.epochs)
        model.train()
        order = rng.permutation(len(train))
        tot, cnt = 0.0, 0
        for i in range(0, len(order), cfg.batch):
            chunk = [train[j] for j in order[i:i + cfg.batch]]
            p = _predict(model, chunk)
            if cfg.loss == "supervised":
                u = torch.from_numpy(np.concatenate([s.u for s in chunk])).float()
                sizes = [s.b.shape[0] for s in chunk]
                loss = torch.stack([torch.sqrt(((a - b) ** 2).mean()) for a, b in
                                    zip(torch.split(u, sizes), torch.split(p, sizes))]).mean()
            else:
                batch = SystemBatch.from_scipy([s.A for s in chunk], [s.b for s in chunk])
                if cfg.loss == "physics":
                    loss, _ = supervision_loss(batch, p, cfg.steps)
                else:
                    loss = residual_loss(batch, p)
            if not torch.isfinite(loss):
                raise InputError(f"train npsolver: the loss became {loss.item()} at epoch "
                                 f"{epoch} (try a smaller --lr)")
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            tot += float(loss.item()) * len(chunk)
            cnt += len(chunk)
        history.append(float(tot / cnt))
        ev = evaluate(model, held_geos, held)
        save_model(model, out, train=json.loads(cfg_json), history=history, heldout=ev)
        save_state(state_path, cfg_json, opt, epoch + 1, history)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{history[-1]:.3g}", heldout=f"{ev['rel_l2_mean']:.3f}")
        elif epoch_lines:
            log(f"train npsolver: epoch {epoch + 1}/{cfg.epochs} loss {history[-1]:.4g} "
                f"held-out rel. L2 {ev['rel_l2_mean']:.4f}")
    if bar is not None:
        bar.close()
    ev = evaluate(model, held_geos, held)
    return {"out": str(out), "epochs": cfg.epochs, "loss_history": history, "heldout": ev,
            "data_time": t_data, "time": time.perf_counter() - t0, "samples": len(train),
            "parameters": sum(p.numel() for p in model.parameters())}
