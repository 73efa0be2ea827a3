"""A torch ``Dataset`` over a datagen file (imported on first use of
:class:`hybridsolve.datagen.TorchDataset`: datagen itself needs no torch)."""

from __future__ import annotations

import os

import numpy as np
import torch

from hybridsolve.datagen.dataset import load


class TorchDataset(torch.utils.data.Dataset):
    """``(input, solution)`` tensors of a datagen dataset, read from the file on demand.

    ``input`` is ``inputs[i]`` (the family's parameter array: on grid families the field on the
    solution's grid, e.g. Darcy's coefficient ``(n + 1, n + 1)`` with the solution ``(n + 1,
    n + 1)``), ``solution`` is ``solutions[i]`` (see the file's ``layout`` attribute), both as
    ``dtype`` (default float32). The file is opened in each process on first use, so a
    ``DataLoader`` with worker processes works (h5py handles do not survive a fork).

        loader = torch.utils.data.DataLoader(TorchDataset("darcy.h5"), batch_size=32,
                                             shuffle=True, num_workers=2)
    """

    def __init__(self, path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> None:
        self.path, self.dtype = path, dtype
        with load(path) as ds:
            self._len = len(ds)
            self.input_shape = tuple(ds["inputs"].shape[1:])
            self.solution_shape = tuple(ds["solutions"].shape[1:])
            self.provenance, self.layout = ds.provenance, ds.layout
        self._ds, self._pid = None, None

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._ds is None or self._pid != os.getpid():
            self._ds, self._pid = load(self.path), os.getpid()
        x, y = self._ds[int(i)]
        return (torch.from_numpy(np.ascontiguousarray(x)).to(self.dtype),
                torch.from_numpy(np.ascontiguousarray(y)).to(self.dtype))

    def close(self) -> None:
        if self._ds is not None and self._pid == os.getpid():
            self._ds.close()
        self._ds = None

    def __getstate__(self) -> dict:   # pickled to a worker: without the open file
        return {**self.__dict__, "_ds": None, "_pid": None}
