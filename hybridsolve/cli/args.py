"""Arguments and checks shared by the commands: the common flags, the one-line usage errors,
``--opt key=value`` pairs, unknown ``--flags``, PETSc options nobody read, output paths."""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from hybridsolve.errors import InputError

log = logging.getLogger(__name__)


def world_rank() -> int:
    """This process's rank in the job, known before MPI starts (from the launcher's environment:
    MPICH/Hydra, Open MPI, PMIx, Slurm), so that ``--help`` or a usage error prints once."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None:
        try:
            return mpi.COMM_WORLD.rank
        except Exception:  # noqa: BLE001 - MPI not initialised or finalised
            pass
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


class UsageError(Exception):
    """A command-line error: one line on stderr (rank 0), exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (raised as :class:`UsageError`, not printed per rank) and
    help/version text printed on rank 0 only."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")

    def _print_message(self, message: str, file=None) -> None:
        if world_rank() == 0:
            super()._print_message(message, file)


def add_common(p: argparse.ArgumentParser) -> None:
    """The flags every command has."""
    p.add_argument("--help", action="help", help="show this help and exit (also -h)")
    p.add_argument("--verbose", action="count", default=0,
                   help="more log messages, repeatable (also -v, -vv)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar and no warnings, only results and errors (also -q)")
    p.add_argument("--debug", action="store_true",
                   help="on an error, show the traceback and PETSc's full trace")
    p.add_argument("--strict-options", action="store_true",
                   help="an unused (misspelt) PETSc option is an error, not a warning")


#: single-dash short forms of our flags (anything else single-dash is PETSc's)
SHORT = {"-h": ["--help"], "-q": ["--quiet"], **{"-" + "v" * k: ["--verbose"] * k for k in (1, 2, 3)}}
#: flags that may also come before the command name
GLOBAL = {"--verbose", "--quiet", "--debug", "--strict-options"}


def normalise(argv: Sequence[str], commands: Sequence[str]) -> tuple[list[str], str | None]:
    """Expand the short forms (``-h``, ``-v``, ``-q``) and move global flags given before the
    command behind it. Returns the tokens and the first unknown ``--flag`` before the command."""
    out: list[str] = []
    for tok in argv:
        out.extend(SHORT.get(tok, [tok]))
    cmd = next((i for i, t in enumerate(out) if t in commands), None)
    if cmd is None:
        head, rest = out, []
    else:
        head, rest = out[:cmd], out[cmd:]
    bad = next((t for t in head if t.startswith("--") and t not in GLOBAL
                and t not in ("--help", "--version")), None)
    moved = [t for t in head if t in GLOBAL]
    if cmd is None or not moved:
        return out, bad
    return [t for t in head if t not in GLOBAL] + rest[:1] + moved + rest[1:], bad


def suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, [k for k in known if k.startswith("--")], n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def unknown_flags(parser: argparse.ArgumentParser, command: str | None,
                  extra: Sequence[str]) -> str | None:
    """The one-line error for the first unknown ``--flag`` in ``extra`` (else None)."""
    bad = next((t for t in extra if t.startswith("--")), None)
    if bad is None:
        return None
    known: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            known = [o for a in action.choices[command]._actions for o in a.option_strings]
    name = bad.split("=", 1)[0]
    return f"hybridsolve {command}: unknown option {name}{suggest(name, known)}"


def family_opts(pairs: Sequence[str]) -> dict[str, str]:
    """``--opt key=value`` pairs as a dict."""
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise InputError(f"--opt expects key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def report_unused(comm, strict: bool = False) -> None:
    """PETSc options no rank of ``comm`` read (misspelt, wrong prefix): a warning (once, rank
    0), or with ``strict`` an :class:`InputError` on every rank. Collective."""
    from hybridsolve.log import warn_once
    from hybridsolve.options import unused_options

    lists = comm.allgather(unused_options())
    left = sorted(set(lists[0]).intersection(*lists[1:]))
    if not left:
        return
    msg = f"PETSc option(s) set but never used: {' '.join(left)} (misspelt? wrong prefix?)"
    if strict:
        raise InputError(msg)
    warn_once(log, msg)


#: the file suffixes each output may have: (attribute, command) -> suffixes; command None: any
_SUFFIXES: dict[tuple[str, str | None], tuple[str, ...]] = {
    ("json", None): (".json",),
    ("plot", None): (".png",),
    ("checkpoint", None): (".json",),
    ("out", "datagen"): (".h5", ".hdf5"),
    ("out", "train"): (".safetensors",),
    ("out", "move"): (".xdmf", ".bp"),
}
#: outputs that are folders: ADIOS2 writes a .bp folder; the demo writes into --out
_FOLDERS = {("out", "demo")}


def check_output(attr: str, path: str | os.PathLike, command: str | None) -> None:
    """One output path: right suffix, its folder exists or can be created and is writable, and
    it is not an existing folder or read-only file. Raises :class:`InputError` (one line)."""
    path = Path(path)
    flag = f"--{attr.replace('_', '-')}"
    suffixes = _SUFFIXES.get((attr, command), _SUFFIXES.get((attr, None)))
    if suffixes and path.suffix.lower() not in suffixes:
        raise InputError(f"{flag} {path}: expected a {' or '.join(suffixes)} file")
    is_folder = (attr, command) in _FOLDERS
    folder = path if is_folder else path.parent
    if not _writable_folder(folder):
        raise InputError(f"{flag} {path}: cannot write there ({folder} is not a writable folder)")
    if not is_folder and path.is_dir() and path.suffix.lower() != ".bp":
        raise InputError(f"{flag} {path}: is a folder, expected a file name")
    if path.is_file():
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        except OSError:
            raise InputError(f"{flag} {path}: the file exists and cannot be written "
                             "(read-only?)") from None


def _writable_folder(folder: Path) -> bool:
    """The folder exists or can be made, and a file can be created in it (tried, not guessed
    from permission bits: root, read-only mounts and /proc all answer differently)."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".hybridsolve-check-"):
            pass
    except OSError:
        return False
    return True


def check_outputs(args: argparse.Namespace) -> None:
    """Every output path the command will write, checked before the work starts."""
    for attr in ("json", "plot", "out", "checkpoint"):
        path = getattr(args, attr, None)
        if path is not None:
            check_output(attr, path, args.command)
