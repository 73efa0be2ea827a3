"""MPI helpers: rank-0 printing, gathering, and ending a whole job cleanly on an error."""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from typing import Any, Callable

import numpy as np

from hybridsolve.errors import CollectiveError, InputError
from hybridsolve.stack import MPI

__all__ = ["print0", "allgather_array", "collective_call", "run_collective_main",
           "install_abort_hook"]


def print0(*args: Any, comm: MPI.Comm = MPI.COMM_WORLD, file=None, **kw: Any) -> None:
    """``print`` on rank 0 of ``comm`` only, flushed."""
    if comm.rank == 0:
        print(*args, file=file or sys.stdout, flush=True, **kw)


def allgather_array(comm: MPI.Comm, local: np.ndarray) -> np.ndarray:
    """Concatenate each rank's 1-D (or row-stacked) array in rank order, on every rank."""
    local = np.ascontiguousarray(local)
    parts = comm.allgather(local)
    return np.concatenate(parts, axis=0) if parts else local


def collective_call(comm: MPI.Comm, fn: Callable[[], Any], what: str = "") -> Any:
    """Run ``fn`` on every rank; if it raises :class:`InputError` on any rank, raise it on all
    (prefixed by ``what``), so a bad input seen by one rank never leaves the others waiting."""
    err, out = None, None
    try:
        out = fn()
    except InputError as e:
        err = str(e)
    errs = [e for e in comm.allgather(err) if e]
    if errs:
        raise InputError(f"{what}: {errs[0]}" if what else errs[0])
    return out


def rank0_call(comm: MPI.Comm, fn: Callable[[], Any], what: str, broadcast: bool = True) -> Any:
    """Run ``fn`` on rank 0 only and broadcast its result (``broadcast=False``: rank 0 keeps it,
    the others get ``None``); if it raises there, every rank raises: an :class:`InputError` as it
    was, anything else as a ``SolverError`` naming ``what``, so no rank waits for a failed one."""
    from hybridsolve.errors import SolverError

    out, err = None, None
    if comm.rank == 0:
        try:
            out = fn()
        except InputError as e:
            err = ("input", str(e))
        except Exception as e:  # noqa: BLE001 - re-raised on every rank below
            err = ("solver", f"{what} failed on rank 0: {type(e).__name__}: {e}")
    err = comm.bcast(err, root=0)
    if err:
        raise InputError(err[1]) if err[0] == "input" else SolverError(err[1])
    return comm.bcast(out, root=0) if broadcast else out


def _petsc_error(exc: BaseException) -> BaseException | None:
    """The petsc4py error in ``exc`` or its causes, if any."""
    while exc is not None:
        if type(exc).__name__ == "Error" and type(exc).__module__.startswith("petsc4py"):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _interrupted(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def petsc_error_line(exc: BaseException) -> str:
    """PETSc's message of a petsc4py error in one line: ``PETSc error 86: Unknown type ...``."""
    text = str(exc)
    lines = [ln.split("]", 1)[-1].strip() for ln in text.splitlines()]
    msgs = [ln for ln in lines if ln and " at " not in ln and not ln.startswith("error code")]
    code = getattr(exc, "ierr", None)
    head = f"PETSc error {code}" if code is not None else "PETSc error"
    return f"{head}: {'; '.join(msgs)}" if msgs else head


def _message(exc: BaseException, comm: MPI.Comm, debug: bool = False) -> str:
    """The report of a failure: one line (PETSc's message for a PETSc error), the traceback
    first with ``debug`` or for an unexpected exception (a bug)."""
    where = f" (rank {comm.rank} of {comm.size})" if comm.size > 1 else ""
    petsc = _petsc_error(exc)
    if isinstance(exc, CollectiveError) or petsc is None:
        msg = f"hybridsolve: error{where}: {exc}"
    else:
        msg = f"hybridsolve: error{where}: {petsc_error_line(petsc)}"
        if not debug:
            msg += " (--debug for the trace)"
    if debug or not (isinstance(exc, CollectiveError) or petsc is not None):
        msg = "".join(traceback.format_exception(exc)) + msg
    return msg


#: How long a rank other than 0 waits before it reports a failure and ends the job, so that when
#: every rank fails alike (a bad option value, Ctrl-C in a terminal) rank 0 alone reports it.
GRACE_S = 0.5
DRAIN_S = 0.3   # lets mpiexec forward the message before MPI_Abort tears the job down


def _end_job(comm: MPI.Comm, code: int, message: str) -> int:
    """Print ``message`` and end: return ``code`` on one rank; on several, ``MPI_Abort`` (a rank
    waiting in a collective would otherwise wait forever), after a short grace on ranks other
    than 0 (rank 0's abort ends them first when it failed too: one message, not one per rank).
    MPI's own abort notice is silenced: the message is the report."""
    if comm.size > 1 and comm.rank != 0:
        time.sleep(GRACE_S)
    print(message, file=sys.stderr, flush=True)
    if comm.size == 1:
        return code
    sys.stdout.flush()
    time.sleep(DRAIN_S)  # Abort kills the I/O forwarding too: a message still in flight is lost
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    except OSError:  # pragma: no cover - no /dev/null
        pass
    MPI.COMM_WORLD.Abort(code)
    return code  # pragma: no cover - Abort does not return


def _ignore_sigint() -> None:
    """A second Ctrl-C while the job ends must not print a traceback."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # pragma: no cover - not the main thread
        pass


def run_collective_main(main: Callable[[], int | None], comm: MPI.Comm = MPI.COMM_WORLD,
                        debug: bool = False) -> int:
    """Run ``main`` so that an error on any rank ends the whole job with a message, never a hang.

    * :class:`~hybridsolve.errors.CollectiveError` (bad input, a solve that must fail loudly) is
      raised identically on every rank: rank 0 prints the message, every rank returns exit code 2
      (input) or 3 (solver).
    * A PETSc error (a bad option value, ...) is one line with PETSc's message (its trace with
      ``debug``); any other exception is printed with its traceback; exit code 1. Under MPI,
      ``MPI_Abort`` then ends all ranks (a rank waiting in a collective would otherwise wait
      forever); when every rank fails alike, rank 0 alone reports it.
    * Ctrl-C (SIGINT, on one rank or all, also when it arrives inside a PETSc callback) ends
      every rank with the one line ``hybridsolve: interrupted`` and exit code 130.
    """
    try:
        code = main()
        return int(code or 0)
    except CollectiveError as exc:
        if comm.rank == 0:
            print(_message(exc, comm, debug), file=sys.stderr, flush=True)
        return 2 if isinstance(exc, InputError) else 3
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - any failure must end every rank
        if _interrupted(exc):
            _ignore_sigint()
            msg = "hybridsolve: interrupted"
            if debug:
                msg = "".join(traceback.format_exception(exc)) + msg
            return _end_job(comm, 130, msg)
        return _end_job(comm, 1, _message(exc, comm, debug))


def install_abort_hook() -> None:
    """Make an uncaught exception in a driver script abort all ranks (like ``python -m mpi4py``)."""
    previous = sys.excepthook

    def hook(tp, value, tb):  # pragma: no cover - exercised through subprocess tests
        previous(tp, value, tb)
        sys.stderr.flush()
        if MPI.COMM_WORLD.size > 1:
            MPI.COMM_WORLD.Abort(1)

    sys.excepthook = hook


_threads_configured = False


def configure_threads() -> int:
    """Give each rank its share of the node's cores for Numba (and later torch) threads.

    Ranks on one node that each start a full thread pool oversubscribe the cores, and parallel
    loops then slow down by large factors. Unless ``NUMBA_NUM_THREADS`` is set explicitly, each
    rank gets ``cores // ranks-on-this-node`` threads (at least 1). Returns the thread count.
    """
    global _threads_configured
    import os

    import numba

    if _threads_configured or "NUMBA_NUM_THREADS" in os.environ:
        _threads_configured = True
        return numba.get_num_threads()
    local = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED)
    share = max(1, (os.cpu_count() or 1) // local.size)
    local.Free()
    numba.set_num_threads(min(share, numba.config.NUMBA_NUM_THREADS))
    _threads_configured = True
    return numba.get_num_threads()
