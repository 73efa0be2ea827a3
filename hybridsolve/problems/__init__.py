"""Problem families: reproducible sequences of related linear systems.

==========  ==========================================================================
name        what
==========  ==========================================================================
darcy       ``-div(a grad u) = f``, ``a = exp(GRF)``; P1 FEM (DOLFINx) or 5-point grid
poisson     ``-Laplace(u) = f``, ``u = g``; random Chebyshev data; square or gmsh domain
thermal     steady heat in a rectangle with a slot; random boundary data, fixed matrix
helmholtz   ``-Laplace(u) - k^2 u = f``; symmetric indefinite, ``k`` varies
heat        Crank–Nicolson heat stepping with time-varying diffusion; sequential
grid        structured-grid Poisson, 2-D/3-D, optional solid obstacles
cutsquare   Poisson on squares with corners/holes cut out, a mesh per system (NPSolver)
cutbox      Poisson on cubes with cylindrical holes, a mesh per system (NPSolver, 3-D)
==========  ==========================================================================
"""

from hybridsolve.problems.base import (FAMILIES, FamilyOption, LinearSystem, ProblemFamily,
                                       get_family, register)
from hybridsolve.problems import cutbox, cutsquare, darcy, gridpoisson, poisson  # noqa: F401  (register families)

__all__ = ["FAMILIES", "FamilyOption", "LinearSystem", "ProblemFamily", "get_family", "register"]
