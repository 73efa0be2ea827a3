"""The restartable parts store: one atomic file per verified sample under ``<out>.parts/``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from hybridsolve.errors import InputError
from hybridsolve.datagen.config import DatagenConfig, identity_difference
from hybridsolve.datagen.dataset import _h5py


# --- parts: one atomic file per verified sample --------------------------------------------------
class Parts:
    """The ``<out>.parts/`` folder: ``config.json`` and one ``s<index>.npy`` per sample.

    A part is one float64 array: the fields of :data:`PART_FIELDS` followed by the solution
    (a plain .npy reads several times faster than an .npz archive, which matters when the final
    assembly reads tens of thousands of them). A sample the chain's solver did not finish (the
    fallback solver did) also has an empty ``s<index>.fallback`` marker, written before its part
    (so parts written before markers existed still read, as chain-solved).
    """

    PART_FIELDS = ("iterations", "time", "true_residual", "reason", "chain_position", "rank")

    def __init__(self, out: Path) -> None:
        self.dir = Path(str(out) + ".parts")

    def path(self, index: int) -> Path:
        return self.dir / f"s{index:07d}.npy"

    def marker(self, index: int) -> Path:
        return self.dir / f"s{index:07d}.fallback"

    def has(self, index: int) -> bool:
        return self.path(index).exists()

    def write(self, index: int, x: np.ndarray, *, fallback: bool = False, **fields) -> None:
        head = np.array([float(fields[k]) for k in self.PART_FIELDS])
        if fallback:
            self.marker(index).touch()
        else:
            self.marker(index).unlink(missing_ok=True)
        tmp = self.dir / f".tmp-{os.getpid()}-{index}.npy"
        # written whole under a temporary name, then renamed: a reader (or a resumed run) sees
        # the complete file or none. No fsync: a killed process loses nothing the kernel has;
        # only a machine crash could, and the final verification catches what it would.
        with open(tmp, "wb") as fh:
            np.save(fh, np.concatenate([head, np.asarray(x, dtype=float)]))
        os.replace(tmp, self.path(index))

    def read(self, index: int) -> dict | None:
        try:
            arr = np.load(self.path(index), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        k = len(self.PART_FIELDS)
        if arr.ndim != 1 or arr.size <= k or not np.all(np.isfinite(arr)):
            return None
        out = {name: arr[i] for i, name in enumerate(self.PART_FIELDS)}
        out["x"] = arr[k:]
        out["fallback"] = self.marker(index).exists()
        return out

    def remove(self, index: int) -> None:
        self.path(index).unlink(missing_ok=True)
        self.marker(index).unlink(missing_ok=True)


def _prepare(cfg: DatagenConfig, comm) -> str | None:
    """Rank 0 checks/creates the parts folder and any existing dataset; returns 'done' when the
    dataset already exists for this configuration. Raises the same InputError on every rank.

    Temporaries a killed run left (the dataset's ``.<name>.tmp-<pid>`` being written at the
    end, the parts' ``.tmp-*`` files) are removed first: one run per output at a time."""
    out, parts = Path(cfg.out), Parts(Path(cfg.out))
    msg, state = None, None
    if comm.rank == 0:
        try:
            _h5py()  # before any work: the dataset is written with it at the end
            _remove_temporaries(out, parts)
            if out.exists():
                prov = _read_provenance(out)
                if prov is None or prov.get("config_digest") not in cfg.digests():
                    why = identity_difference((prov or {}).get("identity"), cfg.identity())
                    msg = (f"datagen: {out} exists and was made with another configuration "
                           f"({why}); choose another --out or delete it")
                else:
                    state = "done"
            if msg is None and state is None:
                parts.dir.mkdir(parents=True, exist_ok=True)
                cfg_file = parts.dir / "config.json"
                if cfg_file.exists():
                    old = json.loads(cfg_file.read_text())
                    if old.get("digest") not in cfg.digests():
                        why = identity_difference(old.get("identity"), cfg.identity())
                        msg = (f"datagen: {parts.dir} holds samples of another configuration "
                               f"({why}); delete it or choose another --out")
                else:
                    tmp = parts.dir / ".config.json.tmp"
                    tmp.write_text(json.dumps({"digest": cfg.digest(), "identity": cfg.identity()}))
                    os.replace(tmp, cfg_file)
        except InputError as err:
            msg = str(err)
        except (OSError, ValueError) as err:
            msg = f"datagen: cannot prepare {out}: {err}"
    msg, state = comm.bcast((msg, state), root=0)
    if msg:
        raise InputError(msg)
    return state


def _remove_temporaries(out: Path, parts: Parts) -> None:
    """The temporaries of a killed run: the dataset's and the parts' (written, then renamed)."""
    folders = [(out.parent, (f".{out.name}.tmp-",)), (parts.dir, (".tmp-", ".config.json.tmp"))]
    for folder, prefixes in folders:
        if folder.is_dir():
            for entry in os.scandir(folder):
                if entry.name.startswith(prefixes) and entry.is_file(follow_symlinks=False):
                    Path(entry.path).unlink(missing_ok=True)


def _read_provenance(path: Path) -> dict | None:
    h5py = _h5py()

    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs["provenance"])
    except (OSError, KeyError, ValueError):
        return None
