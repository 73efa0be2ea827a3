"""Progress of a datagen run over the global count (every rank's samples), shown on rank 0.

Rank 0 counts the samples of the parts folder (one file per finished sample, whichever rank
wrote it) at most about once a second: no communication, so the chains never wait for it. On a
terminal it is a tqdm bar; otherwise (a batch log, a pipe) plain lines without carriage
returns: one each time another tenth of the samples is done and at least every ``every_s``
seconds, and one at the end.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def count_parts(folder: Path, suffix: str = ".part") -> int:
    """Finished samples in a parts folder (``s<index>.part``; temporaries are hidden), or with
    ``suffix=".fallback"`` those of them the fallback solver finished."""
    try:
        with os.scandir(folder) as it:
            return sum(1 for e in it if e.name.startswith("s") and e.name.endswith(suffix))
    except OSError:
        return 0


class Progress:
    """``total`` samples, ``count()`` of them done (re-counted every ``poll_s`` or more).

    :meth:`update` after each of rank 0's own samples (shown at once, re-counted at the next
    poll), :meth:`poll` while rank 0 waits for the other ranks, :meth:`close` at the end.
    """

    def __init__(self, total: int, desc: str, count, stream=None, *, every_s: float = 10.0,
                 poll_s: float = 1.0, tty: bool | None = None, fallbacks=None) -> None:
        self.total, self.desc, self._count = int(total), desc, count
        self._fallbacks = fallbacks or (lambda: 0)   # counted with the samples, shown when > 0
        self.fallbacks = 0
        self.stream = stream or sys.stderr
        self.every_s, self.poll_s = every_s, poll_s
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.t0 = self._last_poll = self._last_line = time.monotonic()
        self.done = self.initial = self._count()
        self._scan_s = 0.0
        self._tenth = self._tenths(self.done)
        self._closed = False
        self.bar = None
        if tty:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=self.done, unit="sample", desc=desc,
                            dynamic_ncols=True, file=self.stream)

    def _tenths(self, done: int) -> int:
        return (10 * done) // max(self.total, 1)

    def update(self, n: int = 1) -> None:
        """Rank 0 finished ``n`` more samples of its own."""
        self.done = min(self.total, self.done + n)
        if not self.poll():
            self._show(time.monotonic())

    def poll(self) -> bool:
        """Re-count the samples done by every rank, unless the last count is recent (a count
        lists the folder: at most once per ``poll_s``, and at most ~2% of the time). Returns
        whether it counted."""
        t = time.monotonic()
        if t - self._last_poll < max(self.poll_s, 50 * self._scan_s):
            return False
        self.done = min(self.total, self._count())
        self.fallbacks = self._fallbacks()
        self._last_poll = time.monotonic()
        self._scan_s = self._last_poll - t
        self._show(self._last_poll)
        return True

    def _show(self, now: float) -> None:
        if self.bar is not None:
            if self.fallbacks:
                self.bar.set_postfix_str(f"{self.fallbacks} fallback(s)", refresh=False)
            self.bar.update(self.done - self.bar.n)
            return
        tenth = self._tenths(self.done)
        if self.done >= self.total:   # the last line is close()'s
            return
        if tenth > self._tenth or now - self._last_line >= self.every_s:
            self._tenth = max(tenth, self._tenth)
            self._line(now)

    def _line(self, now: float, end: bool = False) -> None:
        elapsed = now - self.t0
        new = self.done - self.initial
        text = f"{self.desc}: {self.done}/{self.total} samples ({100 * self.done // max(self.total, 1)}%)"
        if self.fallbacks:
            text += f", {self.fallbacks} finished by the fallback solver"
        if end:
            text += f" in {elapsed:.1f} s"
        elif new > 0 and elapsed > 0:
            rate = new / elapsed
            text += f", {rate:.3g} samples/s, about {(self.total - self.done) / rate:.0f} s left"
        print(text, file=self.stream, flush=True)
        self._last_line = now

    def close(self, ok: bool = True) -> None:
        """The final count (a last line, without a terminal); ``ok=False`` (the run failed):
        just end the bar."""
        if self._closed:
            return
        self._closed = True
        if ok:
            self.done = min(self.total, self._count())
            self.fallbacks = self._fallbacks()
        if self.bar is not None:
            if ok:
                self.bar.update(self.done - self.bar.n)
            self.bar.close()
        elif ok:
            self._line(time.monotonic(), end=True)
