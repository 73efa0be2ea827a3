"""The dataset file as a neural-operator user meets it: one grid for inputs and solutions, the
documented layout, chunks and compression, lazy loading, the torch Dataset, ``hybridsolve
verify``, normalised configurations on resume, no temporaries after a kill, global progress."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from hybridsolve.datagen import DatagenConfig, Dataset, load, run, verify
from hybridsolve.datagen.dataset import FORMAT_VERSION, _h5py
from hybridsolve.errors import InputError
from hybridsolve.stack import MPI


@pytest.fixture
def shared_dir(tmp_path, comm):
    """One folder for all ranks (each pytest process has its own tmp_path)."""
    return Path(comm.bcast(str(tmp_path), root=0))


def _make(comm, folder, family="darcy", n=8, count=4, name=None, **opts):
    out = folder / (name or f"{family}_{n}_{'_'.join(f'{k}{v}' for k, v in opts.items())}.h5")
    s = run(DatagenConfig(family=family, n=n, count=count, out=str(out), options=opts), comm,
            progress=False)
    assert s["status"] in ("complete", "already complete")
    return out


# --- one grid, documented ------------------------------------------------------------------------
@pytest.mark.parametrize("family,n,opts,input_grid", [
    ("darcy", 8, {"discretization": "grid"}, (9, 9)),   # coefficient on all nodes: boundary added
    ("darcy", 8, {}, (9, 9)),                           # P1 dofs = the same nodes
    ("grid", 6, {}, (6, 6)),                            # source and mask on the unknowns' points
])
def test_inputs_and_solutions_share_one_grid(family, n, opts, input_grid, shared_dir, comm):
    out = _make(comm, shared_dir, family, n, 3, **opts)
    if comm.rank == 0:
        with load(out) as ds:
            inputs, sols = ds["inputs"], ds["solutions"]
            assert tuple(inputs.shape[-2:]) == tuple(sols.shape[1:]) == input_grid
            lay = ds.layout
            assert lay["format_version"] == FORMAT_VERSION == ds.version == 2
            assert lay["grid"] == list(input_grid) and lay["inputs_on_solution_grid"]
            gc, gi = ds["grid_coordinates"][()], ds["grid_index"][()]
            # the unknowns' own coordinates are the grid points grid_index names
            np.testing.assert_allclose(gc.reshape(-1, 2)[gi], ds["coordinates"][()], atol=1e-12)
            if family == "darcy":  # the coefficient's nodes (i/n, j/n), boundary included
                i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
                np.testing.assert_allclose(gc, np.stack([i / n, j / n], -1), atol=1e-12)
                assert lay["boundary"].startswith("included")
                edge = np.concatenate([sols[:, 0, :], sols[:, -1, :], sols[:, :, 0],
                                       sols[:, :, -1]], axis=1)
                # the grid discretization's boundary nodes hold the Dirichlet value exactly,
                # FEM's boundary dofs (identity rows) up to the solver's tolerance
                exact = opts.get("discretization") == "grid"
                assert lay["boundary_value"] == (0.0 if exact else None)
                assert np.all(edge == 0.0) if exact else np.abs(edge).max() < 1e-8
                assert np.abs(sols[:, 1:-1, 1:-1]).min() > 0
            else:
                assert lay["boundary"].startswith("excluded")
            for s in range(len(ds)):  # the unknowns in canonical order: A x = b holds
                np.testing.assert_array_equal(ds.unknowns(s),
                                              np.asarray(sols[s]).reshape(-1)[gi])
    comm.Barrier()


def test_layout_of_coefficient_and_flat_families_says_what_the_arrays_are(shared_dir, comm):
    helm = _make(comm, shared_dir, "helmholtz", 8, 2)
    therm = _make(comm, shared_dir, "thermal", 4, 2)
    if comm.rank == 0:
        with load(helm) as ds:
            lay = ds.layout
            assert "Chebyshev" in lay["inputs"] and "wavenumber k" in lay["inputs"]
            assert not lay["inputs_on_solution_grid"] and lay["grid"] == [9, 9]
            assert "indexed like the inputs" not in json.dumps(ds.provenance)
            assert ds.provenance["solutions_layout"] == lay["solutions"]
            assert ds.provenance["options"]["k_min"] == 10.0   # defaults filled in
        with load(therm) as ds:
            lay = ds.layout
            assert lay["grid"] is None and "grid_index" not in ds
            n_dofs = ds["coordinates"].shape[0]
            assert ds["solutions"].shape == (2, n_dofs) and f"(N, {n_dofs})" in lay["solutions"]
            assert "T_left" in lay["inputs"]
    comm.Barrier()


def test_every_array_is_chunked_and_compressed(shared_dir, comm):
    out = _make(comm, shared_dir, "darcy", 8, 3, discretization="grid")
    if comm.rank == 0:
        h5py = _h5py()
        with h5py.File(out, "r") as f:
            for name, dset in f.items():
                assert dset.chunks is not None and dset.compression == "gzip", name
            for name in ("inputs", "solutions"):   # one sample per chunk, shuffled
                assert f[name].chunks == (1, *f[name].shape[1:]) and f[name].shuffle
    comm.Barrier()


@pytest.mark.serial
def test_chunks_compressed_by_the_solving_rank_read_back_through_hdf5s_own_filters(tmp_path):
    """The chunks the ranks compress (shuffle + deflate, by hand) are what HDF5's filters read."""
    from hybridsolve.datagen.dataset import COMPRESSION, decode_chunk, encode_chunk

    h5py = _h5py()
    rng = np.random.default_rng(3)
    for a in (rng.standard_normal((7, 5)), rng.integers(-9, 9, 11).astype(np.int32),
              np.cumsum(rng.standard_normal(300))):
        blob = encode_chunk(a)
        assert np.array_equal(decode_chunk(blob, a.shape, a.dtype), a)
        with h5py.File(tmp_path / "c.h5", "w") as f:
            d = f.create_dataset("a", shape=(2, *a.shape), dtype=a.dtype, chunks=(1, *a.shape),
                                 **COMPRESSION)
            d.id.write_direct_chunk((1, *([0] * a.ndim)), blob)
        with h5py.File(tmp_path / "c.h5", "r") as f:
            assert np.array_equal(f["a"][1], a) and not f["a"][0].any()
    with pytest.raises(ValueError, match="corrupt"):
        decode_chunk(blob[:-3] + b"xyz", a.shape, a.dtype)


@pytest.mark.serial
def test_a_damaged_part_is_solved_again_on_resume(tmp_path, monkeypatch):
    """A part whose compressed chunk is damaged (or cut short) reads as missing: the resumed run
    solves that sample again and the dataset verifies."""
    from hybridsolve import datagen

    out = tmp_path / "d.h5"
    parts = Path(str(out) + ".parts")
    cfg = dict(family="darcy", n=6, count=6, out=str(out), options={"discretization": "grid"})
    real_write, calls = datagen.Parts.write, {"n": 0}

    def flaky(self, index, x, inp, **fields):
        if calls["n"] == 4:
            raise RuntimeError("simulated crash")
        calls["n"] += 1
        real_write(self, index, x, inp, **fields)

    monkeypatch.setattr(datagen.Parts, "write", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(DatagenConfig(**cfg), MPI.COMM_SELF, progress=False)
    monkeypatch.setattr(datagen.Parts, "write", real_write)
    files = sorted(parts.glob("s*.part"))
    assert len(files) == 4
    raw = bytearray(files[0].read_bytes())
    raw[-10] ^= 0xFF                          # a flipped byte inside a chunk: zlib's checksum
    files[0].write_bytes(bytes(raw))
    files[1].write_bytes(files[1].read_bytes()[:-5])   # cut short
    s = run(DatagenConfig(**cfg), MPI.COMM_SELF, progress=False)
    assert s["status"] == "complete" and s["removed"] == 2, s
    assert s["solved_here"] == 4, s    # the two damaged ones and the two never written
    assert verify(out, MPI.COMM_SELF)["failures"] == []


# --- reading: lazily, into torch, version 1 -------------------------------------------------------
def test_load_is_lazy_and_reads_samples_on_demand(shared_dir, comm):
    out = _make(comm, shared_dir, "darcy", 8, 4, discretization="grid")
    if comm.rank == 0:
        h5py = _h5py()
        ds = load(out)
        assert isinstance(ds, Dataset) and len(ds) == 4
        # nothing read: the big arrays are h5py datasets (file handles), no numpy array is held
        assert isinstance(ds["solutions"], h5py.Dataset) and isinstance(ds["inputs"], h5py.Dataset)
        assert not any(isinstance(v, np.ndarray) and v.size > 16 for v in vars(ds).values())
        everything = ds.read()
        x, y = ds[2]
        np.testing.assert_array_equal(x, everything["inputs"][2])
        np.testing.assert_array_equal(y, everything["solutions"][2])
        assert [a.shape for a in ds[-1]] == [(9, 9), (9, 9)] and len(list(ds)) == 4
        assert ds["provenance"]["identity"]["family"] == "darcy" and "solutions" in ds
        with pytest.raises(IndexError):
            ds[4]
        with pytest.raises(KeyError, match="arrays:"):
            ds["nothing"]
        ds.close()
        with load(out) as again:
            handle = again["solutions"]
        assert not handle.id.valid   # closed by the context manager
    comm.Barrier()


def test_torch_dataset_yields_tensors_of_the_grid_shapes(shared_dir, comm):
    import torch

    from hybridsolve.datagen import TorchDataset

    out = _make(comm, shared_dir, "darcy", 8, 4, discretization="grid")
    if comm.rank == 0:
        td = TorchDataset(out)
        assert len(td) == 4 and td.input_shape == td.solution_shape == (9, 9)
        x, y = td[1]
        assert x.dtype == y.dtype == torch.float32 and x.shape == y.shape == (9, 9)
        with load(out) as ds:
            np.testing.assert_allclose(y.numpy(), ds[1][1].astype(np.float32))
        batch = next(iter(torch.utils.data.DataLoader(td, batch_size=3)))
        assert [tuple(b.shape) for b in batch] == [(3, 9, 9), (3, 9, 9)]
        clone = pickle.loads(pickle.dumps(td))   # as a DataLoader worker gets it: no open file
        assert clone._ds is None and clone[3][0].shape == (9, 9)
        td.close()
        clone.close()
    comm.Barrier()


@pytest.mark.serial   # one process writes and reads its own files
def test_a_version_1_file_still_loads_and_verifies(tmp_path):
    out = _make(MPI.COMM_SELF, tmp_path, "darcy", 6, 3)   # P1: same grid in both versions
    old = tmp_path / "v1.h5"
    h5py = _h5py()
    with h5py.File(out, "r") as f, h5py.File(old, "w") as g:
        for k in ("inputs", "solutions", "coordinates", "iterations", "solve_time",
                  "true_residual", "chain_position", "rank", "fallback"):
            g.create_dataset(k, data=f[k][()])
        gi = f["grid_index"][()]
        order = np.empty_like(gi)
        order[gi] = np.arange(len(gi))          # version 1: grid point g holds unknown order[g]
        g.create_dataset("grid_order", data=order)
        g.attrs["provenance"] = f.attrs["provenance"]
    with load(old) as v1, load(out) as v2:
        assert v1.version == 1 and "grid_index" in v1 and v1.layout["format_version"] == 1
        for s in range(3):
            np.testing.assert_array_equal(v1.unknowns(s), v2.unknowns(s))
    assert verify(old, MPI.COMM_SELF)["failures"] == []


@pytest.mark.serial
def test_unreadable_or_foreign_files_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(InputError, match="cannot read"):
        load(junk)
    h5py = _h5py()
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f.create_dataset("inputs", data=np.zeros(3))
    with pytest.raises(InputError, match="not a hybridsolve dataset"):
        load(tmp_path / "foreign.h5")
    out = _make(MPI.COMM_SELF, tmp_path, "darcy", 6, 2, discretization="grid")
    with h5py.File(out, "r+") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(InputError, match="upgrade hybridsolve"):
        load(out)


# --- verify --------------------------------------------------------------------------------------
def test_verify_in_process_agrees_on_every_rank(shared_dir, comm):
    out = _make(comm, shared_dir, "heat", 6, 4)    # sequential: each step from the stored one
    rep = verify(out, comm)
    assert rep["failures"] == [] and rep["count"] == 4 and rep["ranks"] == comm.size
    assert np.all(rep["residuals"] <= 1e-8 * (1 + 1e-6))
    np.testing.assert_allclose(rep["residuals"], rep["stored"], rtol=1e-3, atol=1e-14)
    every = comm.allgather(rep["residuals"].tolist())
    assert all(r == every[0] for r in every)


@pytest.mark.serial   # runs mpiexec itself
def test_verify_cli_passes_a_good_file_and_names_a_corrupt_sample(tmp_path):
    out = _make(MPI.COMM_SELF, tmp_path, "darcy", 8, 5, discretization="grid")
    reports = []
    for np_ in (1, 2):
        js = tmp_path / f"v{np_}.json"
        p = run_cli(["verify", str(out), "--json", str(js)], np_=np_)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "all 5 pass" in p.stdout and "worst true residual" in p.stdout
        reports.append(json.loads(js.read_text()))
    assert reports[0]["residuals"] == reports[1]["residuals"]   # rank-count independent
    h5py = _h5py()
    with h5py.File(out, "r+") as f:
        f["solutions"][3, 4, 4] += 1.0
    p = run_cli(["verify", str(out)], np_=2)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "FAILED: 1 of 5 samples" in p.stdout and "sample 3: true residual" in p.stdout
    with h5py.File(out, "r+") as f:
        f["solutions"][3, 4, 4] -= 1.0
        f["solutions"][1, 0, 0] = 0.5          # a boundary node off its Dirichlet value
        f["inputs"][4, 2, 2] *= 1.5            # not the seed's draw
    p = run_cli(["verify", str(out)])
    assert p.returncode == 1 and "FAILED: 2 of 5" in p.stdout, p.stdout + p.stderr
    assert "sample 1: boundary values" in p.stdout and "sample 4: inputs differ" in p.stdout
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF garbage")
    for args, message in (([str(bad)], "cannot read"), ([str(tmp_path / "none.h5")], "no such file")):
        p = run_cli(["verify", *args], np_=2)
        assert p.returncode == 2 and message in p.stderr, p.stdout + p.stderr
        assert p.stderr.count("hybridsolve: error") == 1
    with h5py.File(out, "r+") as f:
        prov = json.loads(f.attrs["provenance"])
        prov["identity"]["n"] = 9
        f.attrs["provenance"] = json.dumps(prov)
    p = run_cli(["verify", str(out)])
    assert p.returncode == 2 and "parameter arrays of shape" in p.stderr, p.stderr


# --- resume: normalised configurations, no temporaries ------------------------------------------
def test_default_valued_options_are_the_same_configuration(shared_dir, comm):
    out = _make(comm, shared_dir, "darcy", 6, 3, name="norm.h5", discretization="grid")
    again = DatagenConfig(family="darcy", n=6, count=3, out=str(out),
                          options={"discretization": "grid", "alpha": "2.5", "tau": "7"})
    assert run(again, comm, progress=False)["status"] == "already complete"
    other = DatagenConfig(family="darcy", n=6, count=3, out=str(out),
                          options={"discretization": "grid", "alpha": "3"})
    with pytest.raises(InputError, match=r"another configuration \(option alpha: 2.5 there, "
                                         r"3.0 here\)"):
        run(other, comm, progress=False)


def test_configuration_identity_is_normalised():
    base = DatagenConfig(family="darcy", n=8, count=3, out="x.h5")
    same = DatagenConfig(family="darcy", n=8, count=3, out="x.h5",
                         options={"alpha": "2.50", "operator": "aij"})
    assert same.digest() == base.digest() == "9b4c91e7023b71af"
    assert same.effective_options()["alpha"] == 2.5 and same.effective_options()["tau"] == 7.0
    three = DatagenConfig(family="darcy", n=8, count=3, out="x.h5", options={"alpha": "3"})
    assert three.identity()["options"] == {"alpha": "3.0"}
    # a run started before normalisation wrote the options as given: it still resumes
    legacy = {**three.identity(), "options": {"alpha": "3"}}
    from hybridsolve.datagen.config import _digest

    assert _digest(legacy) in three.digests() and three.digest() != _digest(legacy)


@pytest.mark.serial   # a crash on one process only (COMM_SELF)
def test_resume_after_a_crash_with_equivalent_options_and_no_temporaries(tmp_path, monkeypatch):
    from hybridsolve import datagen
    from hybridsolve.datagen import dataset

    out = tmp_path / "r.h5"
    parts = Path(str(out) + ".parts")
    real_write, calls = datagen.Parts.write, {"n": 0}

    def flaky(self, index, x, inp, **fields):
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        calls["n"] += 1
        real_write(self, index, x, inp, **fields)

    monkeypatch.setattr(datagen.Parts, "write", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(DatagenConfig(family="darcy", n=6, count=6, out=str(out),
                          options={"discretization": "grid"}), MPI.COMM_SELF, progress=False)
    monkeypatch.setattr(datagen.Parts, "write", real_write)
    # what a kill -9 leaves: a part and the final file half written under temporary names
    (parts / ".tmp-99999-5.part").write_bytes(b"half")
    (tmp_path / ".r.h5.tmp-99999").write_bytes(b"half")
    # a crash in the final write itself (after the temporary is written, before the rename)
    real_replace = dataset.os.replace

    def failing_replace(src, dst):
        if str(dst) == str(out):
            raise OSError("simulated crash at the rename")
        real_replace(src, dst)

    monkeypatch.setattr(dataset.os, "replace", failing_replace)
    cfg = dict(family="darcy", n=6, count=6, out=str(out),
               options={"discretization": "grid", "alpha": "2.5", "source": "1"})
    with pytest.raises(OSError, match="at the rename"):
        run(DatagenConfig(**cfg), MPI.COMM_SELF, progress=False)
    assert not list(tmp_path.glob(".r.h5.tmp-*")) and not list(parts.glob(".tmp-*"))
    monkeypatch.setattr(dataset.os, "replace", real_replace)
    (tmp_path / ".r.h5.tmp-99998").write_bytes(b"half")
    s = run(DatagenConfig(**cfg), MPI.COMM_SELF, progress=False)
    assert s["status"] == "complete" and s["resumed"] == 6
    assert [p.name for p in tmp_path.iterdir()] == ["r.h5"]   # no temporaries, no parts left
    assert verify(out, MPI.COMM_SELF)["failures"] == []


def test_a_failed_final_write_ends_every_rank_and_the_rerun_completes(shared_dir, comm,
                                                                     monkeypatch):
    """Rank 0 alone writes the file: when that fails, the other ranks are told (no hang)."""
    from hybridsolve.datagen import dataset
    from hybridsolve.errors import SolverError

    out = shared_dir / "fw.h5"
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst) == str(out):
            raise OSError("simulated full disk")
        real_replace(src, dst)

    cfg = dict(family="darcy", n=6, count=4, out=str(out), options={"discretization": "grid"})
    monkeypatch.setattr(dataset.os, "replace", failing_replace)
    with pytest.raises(OSError if comm.rank == 0 else SolverError, match="simulated full disk"):
        run(DatagenConfig(**cfg), comm, progress=False)
    monkeypatch.setattr(dataset.os, "replace", real_replace)
    comm.Barrier()
    s = run(DatagenConfig(**cfg), comm, progress=False)
    assert s["status"] == "complete" and s["resumed"] == 4
    if comm.rank == 0:
        assert sorted(p.name for p in shared_dir.iterdir()) == ["fw.h5"]
    comm.Barrier()


# --- progress --------------------------------------------------------------------------------------
def test_progress_without_a_terminal_is_plain_lines():
    from hybridsolve.datagen.progress import Progress

    done = {"n": 0}
    buf = io.StringIO()
    bar = Progress(40, "datagen test", lambda: done["n"], stream=buf, poll_s=0.0)
    for _ in range(40):
        done["n"] += 1
        bar.update()
    bar.close()
    text = buf.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and 5 <= len(lines) <= 11          # about one line per tenth
    assert lines[-1].startswith("datagen test: 40/40 samples (100%) in ")
    assert all(ln.startswith("datagen test: ") for ln in lines)


def test_progress_counts_every_ranks_samples(shared_dir, comm, capfd):
    """Rank 0's lines count the samples of all ranks (data mode: half of them are rank 1's)."""
    out = shared_dir / "prog.h5"
    s = run(DatagenConfig(family="darcy", n=6, count=8, out=str(out),
                          options={"discretization": "grid"}), comm, progress=True)
    assert s["status"] == "complete"
    err = capfd.readouterr().err
    if comm.rank == 0:
        assert "\r" not in err, err
        assert f"datagen darcy (data mode, {comm.size} rank" in err
        assert "8/8 samples (100%) in" in err.splitlines()[-1], err
    else:
        assert "samples" not in err


@pytest.mark.serial   # runs mpiexec itself
def test_datagen_progress_in_a_batch_log_on_two_ranks(tmp_path):
    out = tmp_path / "log.h5"
    p = run_cli(["datagen", "--family", "darcy", "--n", "8", "--count", "10", "--opt",
                 "discretization=grid", "--out", str(out)], np_=2)
    assert p.returncode == 0, p.stderr
    assert "\r" not in p.stderr and "\r" not in p.stdout
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("datagen darcy")]
    assert lines and lines[-1].startswith("datagen darcy (data mode, 2 ranks): 10/10 samples")
    assert os.listdir(tmp_path) == ["log.h5"]
