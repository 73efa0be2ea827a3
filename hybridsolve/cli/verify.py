"""``hybridsolve verify FILE``: re-assemble every sample of a dataset and check its true residual.

Exit code 0 when every sample passes, 1 when any fails (each failing sample named), 2 when the
file cannot be checked (unreadable, not a dataset, inconsistent with its own provenance).
"""

from __future__ import annotations

import argparse
import json

#: failing samples listed by name before "... and N more"
SHOWN = 20


def cmd_verify(args: argparse.Namespace, comm) -> int:
    from hybridsolve.datagen.verify import verify
    from hybridsolve.errors import InputError
    from hybridsolve.parallel import print0

    if not args.file.is_file():
        raise InputError(f"verify: {args.file}: no such file")
    rep = verify(args.file, comm)
    res, fails = rep["residuals"], rep["failures"]
    head = (f"verify {rep['path']}: {rep['count']} samples of {rep['family']} (n={rep['n']}), "
            f"tol {rep['tol']:g}, {rep['ranks']} rank(s)")
    if rep["worst"] is not None:
        head += f": worst true residual {res[rep['worst']]:.3e} (sample {rep['worst']})"
    if not fails:
        print0(f"{head}; all {rep['count']} pass", comm=comm)
    else:
        lines = [f"{head}; FAILED: {len(fails)} of {rep['count']} samples"]
        lines += [f"  sample {f['index']}: {f['why']}" for f in fails[:SHOWN]]
        if len(fails) > SHOWN:
            lines.append(f"  ... and {len(fails) - SHOWN} more")
        print0("\n".join(lines), comm=comm)
    if args.json is not None and comm.rank == 0:
        out = {k: v for k, v in rep.items() if k not in ("residuals", "stored")}
        out["residuals"] = [float(r) for r in res]
        out["stored_residuals"] = [float(r) for r in rep["stored"]]
        args.json.write_text(json.dumps(out, indent=1))
    return 1 if fails else 0
