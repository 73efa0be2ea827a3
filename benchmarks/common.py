"""Shared pieces of the benchmark scripts: the machine statement and result tables."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """One line describing the machine and the stack the figures were taken on."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    from hybridsolve.stack import describe

    return f"{cpu}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}, {describe()}"


def median_time(fn: Callable[[], object], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def write_table(name: str, title: str, header: Sequence[str], rows: Sequence[Sequence],
                notes: str = "") -> Path:
    """Write a Markdown table to ``benchmarks/results/<name>.md`` and print it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", f"Machine: {machine()}", f"Date: {time.strftime('%Y-%m-%d')}", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    if notes:
        lines += ["", notes]
    text = "\n".join(lines) + "\n"
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    print(text)
    return path
