"""Exceptions with messages meant for the user."""


class InputError(ValueError):
    """Bad input from the user: a wrong size, an unknown name, NaN in data, a bad option.

    Raised identically on every rank (input is validated before any collective work), so a
    driver can report it once and exit without aborting the MPI job.
    """


class SolverError(RuntimeError):
    """A solve failed in a way the caller asked to be told about (not converged, breakdown)."""
