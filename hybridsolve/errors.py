"""Exceptions with messages meant for the user."""


class CollectiveError(Exception):
    """Marker: raised identically on every rank (from collective data), so a driver can report
    it once and exit without aborting the MPI job."""


class InputError(CollectiveError, ValueError):
    """Bad input from the user: a wrong size, an unknown name, NaN in data, a bad option.

    Raised identically on every rank (input is validated before, or from the collective result
    of, any parallel work).
    """


class SolverError(CollectiveError, RuntimeError):
    """A solve failed in a way the caller must be told about (not converged when asked, breakdown)."""


class NotSPDError(SolverError):
    """CG (or another SPD-only method) met a matrix or preconditioner that is not SPD."""
