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
    """The ``<out>.parts/`` folder: ``config.json`` and one ``s<index>.part`` per sample.

    A part holds the fields of :data:`PART_FIELDS` and the sample's two dataset chunks (solution
    and input), already compressed as the final HDF5 file stores them (:class:`SampleLayout`), so
    the final write copies them without compressing anything: the compression is done by the rank
    that solved the sample, as soon as it is solved (on several ranks in parallel, where the final
    write on rank 0 would do it serially). A background thread for it was measured and dropped:
    no faster on this machine's two cores (the solve slowed by what the thread saved). A sample
    the chain's solver did not finish (the fallback solver did) also has an empty
    ``s<index>.fallback`` marker, written before its part.

    File: ``MAGIC``, the fields (float64), the two chunk lengths (int64), the chunks; a part of
    another length, a corrupt chunk (zlib's checksum) or a non-finite value reads as missing.
    """

    PART_FIELDS = ("iterations", "time", "true_residual", "reason", "chain_position", "rank")
    MAGIC = b"HSPART2\n"

    def __init__(self, out: Path, layout=None) -> None:
        self.dir = Path(str(out) + ".parts")
        self.layout = layout     # a dataset.SampleLayout, set before writing or reading

    def path(self, index: int) -> Path:
        return self.dir / f"s{index:07d}.part"

    def marker(self, index: int) -> Path:
        return self.dir / f"s{index:07d}.fallback"

    def has(self, index: int) -> bool:
        return self.path(index).exists()

    def write(self, index: int, x: np.ndarray, inp: np.ndarray, *, fallback: bool = False,
              **fields) -> None:
        """Compress and write sample ``index`` (solution ``x`` in canonical order, input ``inp``)."""
        head = np.array([float(fields[k]) for k in self.PART_FIELDS])
        sol_chunk, inp_chunk = self.layout.encode(x, inp)
        if fallback:
            self.marker(index).touch()
        else:
            self.marker(index).unlink(missing_ok=True)
        tmp = self.dir / f".tmp-{os.getpid()}-{index}.part"
        # written whole under a temporary name, then renamed: a reader (or a resumed run) sees
        # the complete file or none. No fsync: a killed process loses nothing the kernel has;
        # only a machine crash could, and the final verification catches what it would.
        with open(tmp, "wb") as fh:
            fh.write(self.MAGIC)
            fh.write(head.tobytes())
            fh.write(np.array([len(sol_chunk), len(inp_chunk)], dtype=np.int64).tobytes())
            fh.write(sol_chunk)
            fh.write(inp_chunk)
        os.replace(tmp, self.path(index))

    def read(self, index: int, decode: bool = True) -> dict | None:
        """Sample ``index``'s fields, ``x`` (its unknowns, canonical order) and ``input`` (with
        ``decode=False`` the raw ``solution_chunk`` and ``input_chunk`` instead), or None when
        the part is missing or unreadable (either chunk corrupt, non-finite values)."""
        try:
            data = self.path(index).read_bytes()
        except OSError:
            return None
        k, m = len(self.PART_FIELDS), len(self.MAGIC)
        if len(data) < m + 8 * (k + 2) or data[:m] != self.MAGIC:
            return None
        head = np.frombuffer(data, np.float64, k, m)
        ls, li = (int(v) for v in np.frombuffer(data, np.int64, 2, m + 8 * k))
        start = m + 8 * (k + 2)
        if ls < 0 or li < 0 or len(data) != start + ls + li or not np.all(np.isfinite(head)):
            return None
        out = {name: head[i] for i, name in enumerate(self.PART_FIELDS)}
        out["fallback"] = self.marker(index).exists()
        sol = data[start:start + ls]
        if not decode:
            out["solution_chunk"], out["input_chunk"] = sol, data[start + ls:]
            return out
        try:
            x = self.layout.decode_solution(sol)
            inp = self.layout.decode_input(data[start + ls:])
        except ValueError:
            return None
        if not np.all(np.isfinite(x)):
            return None
        out["x"], out["input"] = x, inp
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
