"""Arguments and checks shared by the commands."""

from __future__ import annotations

import argparse
import os
import difflib
from pathlib import Path
from typing import Sequence

from hybridsolve.errors import InputError


def family_opts(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise InputError(f"--opt expects key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out


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
    close = difflib.get_close_matches(name, [k for k in known if k.startswith("--")], n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"hybridsolve {command}: unknown option {name}{hint}"


def check_outputs(args: argparse.Namespace) -> None:
    """Every output path the command will write is checked before the work starts."""
    for attr in ("json", "plot", "out", "checkpoint"):
        path = getattr(args, attr, None)
        if path is None:
            continue
        path = Path(path)
        if attr == "plot" and path.suffix.lower() != ".png":
            raise InputError(f"--plot {path}: the plot is a PNG file (.png)")
        if attr == "json" and path.suffix.lower() != ".json":
            raise InputError(f"--json {path}: expected a .json file")
        folder = path if (attr == "out" and args.command == "demo") else path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            ok = folder.is_dir() and os.access(folder, os.W_OK)
        except OSError:
            ok = False
        if not ok:
            raise InputError(f"--{attr} {path}: cannot write there ({folder} is not a writable "
                             "folder)")
        if path.is_dir() and not (attr == "out" and args.command == "demo"):
            raise InputError(f"--{attr} {path}: is a folder, expected a file name")
