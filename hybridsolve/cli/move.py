"""``hybridsolve move``: move a mesh by a monitor and write it with its quality."""

from __future__ import annotations

import argparse
import json
from typing import Any

from hybridsolve.errors import InputError
from hybridsolve.cli.args import family_opts


_EXPR_NAMES = {k: getattr(__import__("numpy"), k) for k in (
    "exp", "sin", "cos", "tan", "tanh", "cosh", "sinh", "sqrt", "abs", "log", "pi", "arctan2",
    "minimum", "maximum", "where")}


def _monitor_from_args(args: argparse.Namespace):
    import numpy as np

    from hybridsolve.movement import BallMonitor, CallableMonitor, ConstantMonitor, RingMonitor

    opts = family_opts(args.monitor_opt)
    kw: dict[str, Any] = {}
    for k, v in opts.items():
        try:
            kw[k] = tuple(float(t) for t in v.split(",")) if k == "center" else float(v)
        except ValueError:
            raise InputError(f"--monitor-opt {k}={v!r}: not a number") from None
    name = args.monitor
    kinds = {"ring": RingMonitor, "ball": BallMonitor}
    try:
        if name in kinds:
            return kinds[name](**kw)
        if name == "constant":
            return ConstantMonitor(kw.get("value", 1.0))
    except TypeError as err:
        raise InputError(f"--monitor-opt for {name}: {err}") from None
    if name.startswith("expr:"):
        code = name[5:]
        try:
            compiled = compile(code, "<monitor>", "eval")
        except SyntaxError as err:
            raise InputError(f"--monitor expression {code!r}: {err.msg}") from None

        def fn(x):
            env = dict(_EXPR_NAMES, x=x[0], y=x[1], z=x[2] if len(x) > 2 else 0 * x[0])
            try:
                out = eval(compiled, {"__builtins__": {}}, env)  # noqa: S307 - the user's own expression
            except Exception as err:  # noqa: BLE001
                raise InputError(f"--monitor expression {code!r} failed: {err}") from None
            return np.broadcast_to(np.asarray(out, dtype=float), x[0].shape)

        return CallableMonitor(fn, name=code)
    raise InputError(f"unknown monitor {name!r}: ring, ball, constant or expr:<expression>")


def make_mover(args: argparse.Namespace, mesh, monitor):
    """The mover the command line asks for (``--mover``, else ``-mover_type``, else
    Monge-Ampere), on ``mesh`` with ``monitor``."""
    from hybridsolve.movement import create_mover, get_mover
    from hybridsolve.movement.learned import LearnedMover
    from hybridsolve.movement.mover import selected_mover

    pinned = True if args.pinned == "all" else None
    name = selected_mover(args.mover)
    kw = {}
    if args.model is not None:
        if not issubclass(get_mover(name), LearnedMover):
            raise InputError(f"--model is for learned movers; {name!r} is not one")
        kw["model"] = args.model
    # (a learned mover hands variant/rtol/max_it to its classical fallback)
    return create_mover(name, mesh, monitor, variant=args.variant, rtol=args.rtol,
                        max_it=args.max_it, pinned=pinned, **kw)


def cmd_move(args: argparse.Namespace, comm) -> int:
    """Move one mesh by a monitor and report/write the result."""
    from hybridsolve.movement import gather_cells, plot_meshes, write_mesh
    from hybridsolve.movement import MoveReason, cell_metrics, mesh_quality
    from hybridsolve.parallel import print0

    import dolfinx
    import dolfinx.io

    if args.mesh is not None:
        if not args.mesh.exists():
            raise InputError(f"mesh file {args.mesh} does not exist")
        try:
            with dolfinx.io.XDMFFile(comm, str(args.mesh), "r") as xf:
                mesh = xf.read_mesh(name=args.mesh_name)
        except RuntimeError as err:
            raise InputError(f"cannot read mesh {args.mesh_name!r} from {args.mesh}: {err}") from None
    elif args.square is not None:
        if args.square < 1:
            raise InputError("--square needs N >= 1")
        mesh = dolfinx.mesh.create_unit_square(comm, args.square, args.square)
    else:
        from hybridsolve.problems.fem import gmsh_domain

        if args.domain not in ("lshape", "square_hole", "slot"):
            raise InputError(f"unknown --domain {args.domain!r}: lshape, square_hole or slot")
        mesh = gmsh_domain(comm, args.domain, args.n)
    monitor = _monitor_from_args(args)
    before = gather_cells(mesh)[0]
    mover = make_mover(args, mesh, monitor)
    q0 = mesh_quality(mesh, mover.evaluate_monitor(monitor, mover.xi), space=mover.space,
                      reference_sign=mover.ref_sign)
    mover.reset()
    what = f"rtol {mover.rtol:g}" if hasattr(mover, "rtol") else f"model {mover.model_name}"
    print0(f"moving {q0['cells']} cells on {comm.size} rank(s) by {monitor.name} "
           f"({mover.method}, {what})", comm=comm)
    res = mover.move()
    q = res.info["quality"]
    print0(res.summary(), comm=comm)
    if "fallback" in res.info:
        print0(f"  fallback to {res.info['fallback']['to']}: {res.info['fallback']['why']}",
               comm=comm)
    elif res.reason == MoveReason.CONVERGED_BLENDED:
        print0(f"  the model's mesh inverted {res.info['model_inverted']} cells: blended "
               f"{res.info['blend']:.3f} of the way toward it", comm=comm)
    if "repair" in res.info:
        r = res.info["repair"]
        print0(f"  repaired {r['inverted_before']} inverted cells locally ({r['vertices']} "
               "vertices moved)", comm=comm)
    print0(f"  {'':22s} {'before':>10s} {'after':>10s}", comm=comm)
    for key in ("equidistribution_cv", "weighted_volume_ratio", "volume_ratio", "aspect_ratio_max",
                "q_eq_max", "q_ali_max", "inverted"):
        print0(f"  {key:22s} {q0[key]:10.4g} {q[key]:10.4g}", comm=comm)
    if args.out:
        path = write_mesh(mesh, args.out, monitor_values=mover.monitor_values, space=mover.space)
        print0(f"wrote {path}", comm=comm)
    if args.plot:
        cm = cell_metrics(mesh, mover.monitor_values, space=mover.space)
        after, vals = gather_cells(mesh, cm["equidistribution"])
        if comm.rank == 0:
            plot_meshes([("before", before, None), (f"after ({res.iterations} its)", after, vals)],
                        args.plot, label="m|K| / mean", title=f"{mover.method}: {monitor.name}")
        print0(f"wrote {args.plot}", comm=comm)
    if args.json and comm.rank == 0:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"result": res.to_dict(), "quality_before": q0}, indent=1))
    return 0
