# The two commands: `make demo` (the main job) and `make test` (the whole test suite).
# Each creates the project's own .venv on first use (Python >= 3.12, found automatically;
# override with `make PYTHON=/path/to/python3.12 ...`) and installs everything from PyPI wheels.

VENV    ?= .venv
PY      := $(VENV)/bin/python
MPIEXEC := $(VENV)/bin/mpiexec
NP      ?= 2
# Threads per rank: 2 ranks on 2 cores must not oversubscribe.
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export NUMBA_NUM_THREADS ?= 1

.PHONY: demo test test-serial test-mpi venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py
	PYTHON="$(PYTHON)" tools/bootstrap.sh $(VENV)

demo: venv
	timeout 1200 $(MPIEXEC) -n $(NP) $(PY) -m hybridsolve demo --out out

test: test-serial test-mpi

test-serial: venv
	$(PY) -m pytest -q tests -p no:cacheprovider

test-mpi: venv
	timeout 1800 $(MPIEXEC) -n $(NP) $(PY) -m pytest -q tests -p no:cacheprovider -m "not serial"

clean:
	rm -rf $(VENV) out build *.egg-info
