#!/bin/bash
# Slurm batch template for a hybridsolve job. Adjust the resources and the module lines to your
# site. Two ways to get the stack:
#   (a) the project's venv with the PyPI wheel stack (its own MPICH): run `make venv` once on a
#       login node, then launch with the venv's mpiexec on a single node, or srun where the
#       site's Slurm supports PMI-2 for MPICH;
#   (b) the site's PETSc/petsc4py/mpi4py modules: `pip install --user -e .` (no [stack]) on top.
#SBATCH --job-name=hybridsolve
#SBATCH --nodes=1
#SBATCH --ntasks=8
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=hybridsolve-%j.out

set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
# module load petsc/3.25 py-petsc4py py-mpi4py      # option (b)
VENV=${VENV:-.venv}                                 # option (a)
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}    # one thread per rank: no oversubscription

"$VENV/bin/mpiexec" -n "${SLURM_NTASKS:-8}" "$VENV/bin/python" -m hybridsolve solve \
    --family darcy --n 256 --count 20 --seed 0 --rtol 1e-8 --json "results-${SLURM_JOB_ID:-local}.json" \
    -ksp_type cg -pc_type gamg -ksp_converged_reason
