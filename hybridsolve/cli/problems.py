"""``hybridsolve problems``: list the families and their options."""

from __future__ import annotations

import argparse



def cmd_problems(args: argparse.Namespace) -> int:
    from hybridsolve.parallel import print0
    from hybridsolve.problems import FAMILIES

    for name, cls in sorted(FAMILIES.items()):
        kind = ("SPD" if cls.symmetric and cls.definite else
                "symmetric indefinite" if cls.symmetric else "nonsymmetric")
        seq = ", sequential" if cls.sequential else ""
        print0(f"{name:10s} {cls.summary}")
        print0(f"{'':10s} n: {cls.size_doc}; {kind}{seq}")
        for k, o in cls.options.items():
            choices = f" {list(o.choices)}" if o.choices else ""
            print0(f"{'':12s}--opt {k}={o.default!s:<8s} {o.doc}{choices}")
    return 0
