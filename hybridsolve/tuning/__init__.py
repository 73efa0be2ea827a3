"""Online tuning of solver parameters across a sequence of solves (bandit-tuned SOR and beyond).

* :mod:`~hybridsolve.tuning.learners`: :class:`TsallisINF`, :class:`BinnedTsallisINF`,
  :class:`ChebCB` (the paper's), :class:`IGW` (ours, non-contextual); no MPI/PETSc needed;
* :mod:`~hybridsolve.tuning.references`: best fixed and instance-optimal omegas (evaluation);
* :mod:`~hybridsolve.tuning.petsc`: :class:`SORTuner` and :class:`OptionsTuner`, which set the
  chosen value on a PETSc solver, solve, and feed the cost back (rank 0 learns, all ranks use
  the same value).
"""

from hybridsolve.tuning.learners import (IGW, LEARNERS, BinnedTsallisINF, ChebCB, FixedValue, Learner,
                                         TsallisINF, default_omegas, learner_from_state,
                                         load_learner, make_learner)

__all__ = ["Learner", "TsallisINF", "IGW", "BinnedTsallisINF", "ChebCB", "FixedValue", "LEARNERS",
           "make_learner", "learner_from_state", "load_learner", "default_omegas", "SORTuner",
           "OptionsTuner"]


def __getattr__(name):
    if name in ("SORTuner", "OptionsTuner"):
        from hybridsolve.tuning import petsc

        return getattr(petsc, name)
    raise AttributeError(name)
