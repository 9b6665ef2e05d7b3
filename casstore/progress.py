"""Progress for the Python API: every long operation takes ``progress(done_bytes, total_bytes)``.

``tqdm_progress()`` makes such a callback that draws with tqdm (``tqdm.auto``: a widget in a
notebook, a text bar in a terminal), in binary units like the rest of casstore (MiB, GiB).
"""

from __future__ import annotations


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
