"""Logging for hybridsolve: ``logging.getLogger(__name__)`` in library code, shown on rank 0.

Library modules log through the standard :mod:`logging` module under the ``hybridsolve``
logger and never print. :func:`configure` (called by the ``hybridsolve`` command with
``--verbose``/``--quiet``, or by a driver) installs one handler on ``stderr`` that shows records
from rank 0 of ``COMM_WORLD`` only, and a filter that lets each distinct warning through once.
Without :func:`configure`, Python's defaults apply (warnings and errors reach ``stderr`` through
the last-resort handler, on every rank), as for any library.

    import logging
    log = logging.getLogger(__name__)
    log.info("solved %d systems", n)          # shown with --verbose
    warn_once(log, "TorchPC inside CG ...")   # once per process, whatever the call count
"""

from __future__ import annotations

import logging
import sys

__all__ = ["configure", "warn_once", "RankZeroFilter", "OnceFilter", "LEVELS"]

ROOT = "hybridsolve"
#: --quiet / default / --verbose / --verbose --verbose
LEVELS = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}

_seen: set[tuple[str, str]] = set()      # what OnceFilter has let through
_warned: set[tuple[str, str]] = set()    # what warn_once has logged


def _rank() -> int:
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None:
        return 0
    try:
        return mpi.COMM_WORLD.rank
    except Exception:  # noqa: BLE001 - MPI finalised or not initialised
        return 0


class RankZeroFilter(logging.Filter):
    """Lets records through on rank 0 of ``COMM_WORLD`` only (errors on every rank)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or _rank() == 0


class OnceFilter(logging.Filter):
    """Lets each distinct (logger, message) warning through once per process."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        key = (record.name, record.getMessage())
        if key in _seen:
            return False
        _seen.add(key)
        return True


def warn_once(logger: logging.Logger, msg: str, *args) -> None:
    """``logger.warning(msg, *args)`` the first time this message is seen in this process."""
    key = (logger.name, msg % args if args else msg)
    if key in _warned:
        return
    _warned.add(key)
    logger.warning(msg, *args)


def configure(verbosity: int = 0, stream=None) -> logging.Logger:
    """Show hybridsolve's log on rank 0: ``verbosity`` -1 (errors), 0 (warnings), 1 (info),
    2 (debug). Idempotent: a second call changes the level and keeps one handler."""
    logger = logging.getLogger(ROOT)
    logger.setLevel(LEVELS.get(max(-1, min(2, verbosity)), logging.WARNING))
    handler = next((h for h in logger.handlers if getattr(h, "_hybridsolve", False)), None)
    if handler is None:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler._hybridsolve = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("hybridsolve: %(levelname)s: %(message)s"))
        handler.addFilter(RankZeroFilter())
        handler.addFilter(OnceFilter())
        logger.addHandler(handler)
        logger.propagate = False
    elif stream is not None:
        handler.setStream(stream)
    return logger
