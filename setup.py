"""hybridsolve: solver-in-the-loop scientific computing on PETSc, DOLFINx and torch.

Install with the binary wheel stack (DOLFINx 0.11 + PETSc 3.25 + petsc4py + mpi4py/mpich):

    pip install ".[stack,test]"

On an HPC system that provides its own petsc4py/mpi4py (and optionally DOLFINx) as modules,
install without the wheel stack: ``pip install .``.
"""

from setuptools import find_packages, setup

core = [
    "numpy>=1.26,<3",
    "scipy>=1.11,<2",
    "numba>=0.60,<1",
    "numba-cuda>=0.20,<1",
    "torch>=2.4,<3",
    "h5py>=3.10,<4",
    "matplotlib>=3.8,<4",
    "tqdm>=4.66,<5",
    "safetensors>=0.4,<1",
]
extras = {
    # The binary wheel stack: DOLFINx 0.11, PETSc 3.25 (real), petsc4py, slepc4py, mpi4py, mpich.
    "stack": ["dolfinx-solver-real>=0.11,<0.12", "gmsh>=4.12,<5"],
    # For users who bring their own PETSc build but want it checked at install time.
    "petsc": ["petsc4py>=3.22", "mpi4py>=4.0"],
    "test": ["pytest>=8", "pytest-timeout>=2.3"],
    # What the benchmarks compare against besides PETSc and SciPy.
    "bench": ["pyamg>=5.0,<6"],
}
extras["all"] = extras["stack"] + extras["test"] + extras["bench"]

setup(
    name="hybridsolve",
    version="0.1.0",
    description="Solver-in-the-loop scientific computing: PETSc/DOLFINx solvers with learned components",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.12",
    packages=find_packages(include=["hybridsolve", "hybridsolve.*"]) + ["hybridsolve.kernels"],
    # kernels/ lives at the top level (design card) but installs as hybridsolve.kernels, so it
    # cannot clash with the unrelated PyPI package named "kernels".
    package_dir={"hybridsolve.kernels": "kernels"},
    package_data={"hybridsolve.learned": ["weights/*.safetensors"]},
    install_requires=core,
    extras_require=extras,
    entry_points={"console_scripts": ["hybridsolve=hybridsolve.cli.main:main"]},
)
