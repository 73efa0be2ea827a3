"""Shared machinery of the DOLFINx families: one P1 model per communicator, reused per system."""

from __future__ import annotations

from typing import Any

import numpy as np

from hybridsolve.errors import InputError
from hybridsolve.problems.base import LinearSystem, ProblemFamily

__all__ = ["FEMFamily"]


class FEMFamily(ProblemFamily):
    """A family assembled with DOLFINx P1 elements; subclasses define :meth:`make_model`."""

    def model(self, comm) -> Any:
        """The family's P1 model on ``comm`` (mesh, spaces, forms), built on first use."""
        from hybridsolve.stack import have_dolfinx

        if not have_dolfinx():
            raise InputError(f"{self.name}: this family needs DOLFINx (pip install hybridsolve[stack])")
        key = ("model", comm.py2f())
        if key not in self._cache:
            self._cache[key] = self.make_model(comm)
        return self._cache[key]

    def make_model(self, comm) -> Any:  # pragma: no cover - abstract in spirit
        raise NotImplementedError

    def set_coefficients(self, model: Any, params: np.ndarray) -> None:
        raise NotImplementedError

    def build_rhs(self, params, comm, index) -> LinearSystem:
        model = self.model(comm)
        self.set_coefficients(model, params)
        b = model.problem.assemble_rhs()
        return LinearSystem(A=None, b=b, params=params, meta={"discretization": "P1 FEM"},
                            canonical=model.problem.canonical,
                            local_coordinates=model.problem.local_coordinates,
                            extra={"problem": model.problem})

    def build(self, params, comm, index, previous=None, into=None) -> LinearSystem:
        model = self.model(comm)
        self.set_coefficients(model, params)
        A, b = model.problem.assemble(into=into)
        return LinearSystem(A=A, b=b, params=params, meta={"discretization": "P1 FEM"},
                            canonical=model.problem.canonical,
                            local_coordinates=model.problem.local_coordinates,
                            extra={"problem": model.problem})
