"""Torch models that act on grid fields, and safe loading of their weights (no PETSc here).

:class:`DCDMNet` is the network of the deep conjugate direction method (Kaneda et al., ICML 2023):
resolution-agnostic convolutions in 2-D or 3-D, 16 channels, a linear first convolution, residual
convolution blocks at full resolution, one 2x coarser level (average pooling), upsampling with a
skip connection, more full-resolution blocks and a final 1x1 linear convolution. It maps a
(normalised) residual on the grid to a search direction on the same grid.

Weights are read from ``.safetensors`` or from a ``torch.save``'d state dict with
``weights_only=True`` (never pickle); a file that does not match the model is an error naming the
file and the expected shapes. A weights file carries the model's configuration in its metadata
(``hybridsolve.config``), so :func:`load_model` rebuilds the model it belongs to.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hybridsolve.errors import InputError

__all__ = ["DCDMNet", "VCycleNet", "save_model", "load_model", "load_weights", "SHIPPED", "shipped_model_path"]

#: models shipped inside the package (``-pc_torch_model dcdm2d``)
SHIPPED = {"dcdm2d": "dcdm2d.safetensors", "dcdm3d": "dcdm3d.safetensors",
           # experimental: the V-cycle U-Net trained at 64^2 (8 min on this CPU); it does not
           # beat dcdm2d yet (results/dcdm.md), shipped to measure it and to train on from
           "vcycle2d": "vcycle2d.safetensors",
           # the learned multigrid network (hybridsolve.learned.mgnet: a V-cycle over the
           # operator's Galerkin levels, one learned smoother shared by every level):
           # train dcdm --arch mg --rhs smooth --channels 8 --lr 3e-3 --n 64 --samples 2000
           # --epochs 10 (2 minutes on one core); 3-D: --dim 3 --n 16 --samples 1000 --epochs 8
           "mg2d": "mg2d.safetensors", "mg3d": "mg3d.safetensors",
           # NPSolver's boundary-aware slice transformer, label-free on cutsquare meshes
           # (hybridsolve.learned.npsolver): train npsolver --n 16 --geometries 64 --samples 2048
           # --epochs 30 --steps 3 --loss physics --bc random (24 minutes on one core)
           "npsolver2d": "npsolver2d.safetensors",
           # the same on cutbox meshes (cubes with cylindrical holes), in two steps (67 minutes
           # on one core): train npsolver --dim 3 --n 8 --geometries 64 --samples 2048 --epochs
           # 40 --steps 3 --loss physics --bc random, then from it (--init) on three mesh sizes:
           # --n 8 --mesh-sizes 12,16 --geometries 48 --samples 1024 --epochs 12 --lr 3e-4
           # --heldout 30 (the same other options)
           "npsolver3d": "npsolver3d.safetensors",
           # DMM's data-free mesh mover (hybridsolve.learned.dmm): train dmm --iterations 4000
           # (seed 0, 8 monitors per step; 10 minutes on one core)
           "dmm2d": "dmm2d.safetensors",
           # UM2N-style graph mover on meshes moved by our Monge-Ampere mover
           # (hybridsolve.learned.um2n): train um2n --data <dir> --samples 240 --epochs 20
           # (8 deformation layers; 2 minutes of data on 2 ranks, 5 minutes of training)
           "um2n2d": "um2n2d.safetensors"}


def shipped_model_path(name: str) -> Path:
    return Path(__file__).resolve().parent / "weights" / SHIPPED[name]


class DCDMNet(nn.Module):
    """DCDM's convolutional network for ``dim``-D grids (any size, even or odd).

    Args:
        dim: 2 or 3.
        channels: feature channels (the paper: 16).
        pre, coarse, post: residual conv layers before pooling, on the coarse level, and after
            upsampling (the paper's 64^3 model: 4, 6, 4).
    """

    def __init__(self, dim: int = 2, channels: int = 16, pre: int = 3, coarse: int = 4,
                 post: int = 3) -> None:
        super().__init__()
        if dim not in (2, 3):
            raise InputError(f"DCDMNet: dim must be 2 or 3, got {dim}")
        self.config = {"kind": "DCDMNet", "dim": dim, "channels": channels, "pre": pre,
                       "coarse": coarse, "post": post}
        self.dim = dim
        Conv = nn.Conv2d if dim == 2 else nn.Conv3d
        c = channels
        self.first = Conv(1, c, 3, padding=1)
        self.pre = nn.ModuleList(Conv(c, c, 3, padding=1) for _ in range(pre))
        self.coarse = nn.ModuleList(Conv(c, c, 3, padding=1) for _ in range(coarse))
        self.post = nn.ModuleList(Conv(c, c, 3, padding=1) for _ in range(post))
        self.last = Conv(c, 1, 1)

    @staticmethod
    def _blocks(h: torch.Tensor, layers: nn.ModuleList) -> torch.Tensor:
        for conv in layers:
            h = h + F.relu(conv(h))
        return h

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """``r``: (batch, 1, *grid) -> direction of the same shape."""
        if r.dim() != self.dim + 2:
            raise InputError(f"DCDMNet({self.dim}-D) expects (batch, 1, *grid), got {tuple(r.shape)}")
        h = self.first(r)
        h = self._blocks(h, self.pre)
        pool = F.avg_pool2d if self.dim == 2 else F.avg_pool3d
        g = pool(h, 2, ceil_mode=True)
        g = self._blocks(g, self.coarse)
        mode = "bilinear" if self.dim == 2 else "trilinear"
        h = h + F.interpolate(g, size=h.shape[2:], mode=mode, align_corners=False)
        h = self._blocks(h, self.post)
        return self.last(h)


class VCycleNet(nn.Module):
    """A multigrid-shaped U-Net for DCDM whose view grows with the grid (issue: DCDM that scales).

    ``levels = floor(log2(min(grid) / coarsest))`` 2x coarsenings (average pooling), chosen from
    the input's size at every call, down to a coarsest level of 2 to 3 points per side (the
    default) where the bottom block's convolutions span it: each output point sees the whole
    grid at every size (a coarsest level of 8 points, as first tried, does not: its 3x3
    convolutions reach only a few coarse points). The
    smoothing blocks are the same on every level (weights shared across levels, like one
    multigrid smoother), so the parameter count is fixed and one model serves every size.

    Scale-equivariant: no biases anywhere, ReLU (positively homogeneous) and odd by construction,
    so ``f(a r) = a f(r)`` for every real ``a``: the input-driven share of the output is 100% at
    any grid size, where a network with biases lets them swamp an input that shrinks like 1/N.

    With ``mask`` (1 on coupled unknowns, 0 on decoupled ones: solid cells, Dirichlet rows;
    TorchPC passes it), every feature map is multiplied by the mask of its level (a coarse cell
    is kept where any of its fine cells is), which tells the network the geometry without
    breaking the scale equivariance. A learned gain on the coarse correction, the same on every
    level (so 4^L on the coarsest: see ``log_gain``), lets the shared weights scale smooth
    components as the inverse operator does; without it the trained network captured 1.5% of the
    error energy of smooth residuals (against 63% for DCDMNet).

    Args:
        dim: 2 or 3.
        channels: feature channels.
        smooth: residual conv layers per smoothing block (pre, post and twice that on the
            coarsest level).
        coarsest: the coarsest level has at least this many points per side (default 2).
    """

    uses_mask = True

    def __init__(self, dim: int = 2, channels: int = 16, smooth: int = 2, coarsest: int = 2) -> None:
        super().__init__()
        if dim not in (2, 3):
            raise InputError(f"VCycleNet: dim must be 2 or 3, got {dim}")
        if channels < 1 or smooth < 1 or coarsest < 2:
            raise InputError(f"VCycleNet: need channels >= 1, smooth >= 1, coarsest >= 2")
        self.config = {"kind": "VCycleNet", "dim": dim, "channels": channels, "smooth": smooth,
                       "coarsest": coarsest}
        self.dim, self.coarsest = dim, coarsest
        Conv = nn.Conv2d if dim == 2 else nn.Conv3d
        c = channels

        def block(k):
            return nn.ModuleList(Conv(c, c, 3, padding=1, bias=False) for _ in range(k))

        self.first = Conv(1, c, 3, padding=1, bias=False)
        self.pre, self.post, self.bottom = block(smooth), block(smooth), block(2 * smooth)
        self.merge = Conv(2 * c, c, 1, bias=False)   # upsampled coarse features + the skip
        self.last = Conv(c, 1, 1, bias=False)
        # the coarse correction's gain per level: a grid twice as coarse has an operator about
        # 4x smaller (second order: 1/h^2), so its inverse is 4x larger; with weights shared
        # across levels only a gain applied once per level (compounding to 4^L on the coarsest)
        # lets the network scale smooth components as A^-1 does. Learned from 1 (starting at 4
        # the coarse path swamped the rest: the training loss stayed at 1.0)
        self.log_gain = nn.Parameter(torch.tensor(0.0))

    def levels(self, shape) -> int:
        side = min(int(s) for s in shape)
        return max(0, int(np.floor(np.log2(max(side, 1) / self.coarsest))))

    @staticmethod
    def _blocks(h, layers, m):
        for conv in layers:
            h = h + F.relu(conv(h))
            if m is not None:
                h = h * m
        return h

    def forward(self, r: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``r``: (batch, 1, *grid), ``mask`` None or broadcastable to it -> same shape as r.
        Odd by construction, ``(g(r) - g(-r)) / 2`` (one batched call): with the positive
        homogeneity, ``f(a r) = a f(r)`` for every real ``a``, as for the linear map it stands in
        for (``A^-1``); the plain ReLU net, not odd, captured 0 to 15% of the error energy of
        smooth residuals where the odd one reaches 4 to 45% after the same 500 steps."""
        if r.dim() != self.dim + 2:
            raise InputError(f"VCycleNet({self.dim}-D) expects (batch, 1, *grid), got {tuple(r.shape)}")
        k = r.shape[0]
        out = self._half(torch.cat([r, -r]), mask)
        return 0.5 * (out[:k] - out[k:])

    def _half(self, r: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        pool = F.avg_pool2d if self.dim == 2 else F.avg_pool3d
        maxpool = F.max_pool2d if self.dim == 2 else F.max_pool3d
        mode = "bilinear" if self.dim == 2 else "trilinear"
        m = None if mask is None else mask.to(r.dtype).expand(r.shape[0], 1, *r.shape[2:])
        h = self.first(r)
        if m is not None:
            h = h * m
        skips, masks = [], []
        for _ in range(self.levels(r.shape[2:])):
            h = self._blocks(h, self.pre, m)
            skips.append(h)
            masks.append(m)
            h = pool(h, 2, ceil_mode=True)
            m = None if m is None else maxpool(m, 2, ceil_mode=True)
        h = self._blocks(h, self.bottom, m)
        for skip, m in zip(reversed(skips), reversed(masks)):
            up = self.log_gain.exp() * F.interpolate(h, size=skip.shape[2:], mode=mode,
                                                     align_corners=False)
            h = self.merge(torch.cat([up, skip], dim=1))
            if m is not None:
                h = h * m
            h = self._blocks(h, self.post, m)
        out = self.last(h)
        return out if m is None else out * m


_KINDS = {"DCDMNet": DCDMNet, "VCycleNet": VCycleNet}
#: model kinds defined in other modules (imported when a file of that kind is loaded)
_ELSEWHERE = {"NPSolverNet": "hybridsolve.learned.meshnets", "DMMNet": "hybridsolve.learned.dmm",
              "UM2NNet": "hybridsolve.learned.um2n", "MGNet": "hybridsolve.learned.mgnet"}


def save_model(model: nn.Module, path: str | os.PathLike, **meta: Any) -> Path:
    """Write the weights as ``.safetensors`` with the model's configuration in the metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"hybridsolve.config": json.dumps(getattr(model, "config", {}))}
    info.update({f"hybridsolve.{k}": json.dumps(v) for k, v in meta.items()})
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=info)
    os.replace(tmp, path)
    return path


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.exists():
        raise InputError(f"model file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as err:
            raise InputError(f"model file {path} is not a readable safetensors file ({err})") from None
        return tensors, meta
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds here (UnpicklingError, RuntimeError, ...)
        raise InputError(f"model file {path} is not a readable torch state dict "
                         f"(weights_only=True): {type(err).__name__}: {str(err)[:200]}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        meta = {k: json.dumps(v) for k, v in obj.items() if k != "state_dict"}
        obj = obj["state_dict"]
    else:
        meta = {}
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"model file {path} does not hold a state dict of tensors")
    return obj, meta


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a weights file into ``model``; any mismatch is an error naming the file and the
    expected and found shapes."""
    path = Path(path)
    tensors, _ = _read(path)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if missing or extra or wrong:
        lines = [f"model file {path} does not match {type(model).__name__}:"]
        lines += [f"  {k}: expected {expected[k]}, file has {found[k]}" for k in wrong[:8]]
        lines += [f"  missing {k} (expected {expected[k]})" for k in missing[:8]]
        lines += [f"  unexpected {k} {found[k]}" for k in extra[:8]]
        raise InputError("\n".join(lines))
    for k, v in tensors.items():
        if not torch.isfinite(v).all():
            raise InputError(f"model file {path}: tensor {k} holds NaN or Inf")
    model.load_state_dict(tensors)
    return model


def load_model(path_or_name: str | os.PathLike, **overrides: Any) -> nn.Module:
    """Build the model a weights file belongs to (from its metadata) and load the weights.

    ``path_or_name``: a file, or the name of a shipped model (``dcdm2d``). ``overrides``
    complete a configuration the file does not carry (a plain state dict).
    """
    name = str(path_or_name)
    path = shipped_model_path(name) if name in SHIPPED else Path(name)
    _, meta = _read(path)
    config: dict[str, Any] = {}
    if "hybridsolve.config" in meta:
        try:
            config = json.loads(meta["hybridsolve.config"])
        except json.JSONDecodeError:
            raise InputError(f"model file {path}: corrupt configuration metadata") from None
    config.update(overrides)
    kind = config.pop("kind", "DCDMNet")
    if kind in _ELSEWHERE and kind not in _KINDS:   # models with their own module
        import importlib

        _KINDS[kind] = getattr(importlib.import_module(_ELSEWHERE[kind]), kind)
    if kind not in _KINDS:
        raise InputError(f"model file {path}: unknown model kind {kind!r}")
    try:
        model = _KINDS[kind](**config)
    except TypeError as err:
        raise InputError(f"model file {path}: configuration {config} does not build a {kind} "
                         f"({err})") from None
    load_weights(model, path)
    model.eval()
    return model


def model_info(path_or_name: str | os.PathLike) -> dict[str, Any]:
    """The metadata stored with a weights file (configuration, training facts)."""
    name = str(path_or_name)
    path = shipped_model_path(name) if name in SHIPPED else Path(name)
    _, meta = _read(path)
    out = {}
    for k, v in meta.items():
        try:
            out[k.removeprefix("hybridsolve.")] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def count_parameters(model: nn.Module) -> int:
    return int(sum(int(np.prod(p.shape)) for p in model.parameters()))
