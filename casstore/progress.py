"""Progress for the Python API: every long operation takes ``progress(done_bytes, total_bytes)``;
``Ticker`` keeps the running counts for it.

``tqdm_progress()`` makes such a callback that draws with tqdm (``tqdm.auto``: a widget in a
notebook, a text bar in a terminal), in binary units like the rest of casstore (MiB, GiB).
"""

from __future__ import annotations


class Ticker:
    """Running byte counts for a ``progress(done, total)`` callback (None: nothing to report)."""

    def __init__(self, progress, total: int = 0) -> None:
        self.progress, self.done, self.total = progress, 0, total

    def __call__(self, n: int, more_total: int = 0) -> None:
        self.done += n
        self.total += more_total
        if self.progress is not None:
            self.progress(self.done, self.total)


def tqdm_progress(desc: str | None = None, **tqdm_options):
    """A callback driving one tqdm bar; the bar closes when ``done`` reaches ``total``."""
    from tqdm.auto import tqdm

    bar = None

    def callback(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, **tqdm_options)
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return callback
