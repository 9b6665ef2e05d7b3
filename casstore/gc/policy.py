"""The GC policy: what a store may hold and for how long, built from arguments and the user config
so that `cas gc`, `cas list`, `cas du`, the automatic GC and the Python API judge alike."""

from __future__ import annotations

from dataclasses import dataclass

DAY = 86400.0
DEFAULT_GRACE = 3600.0


@dataclass(frozen=True)
class Policy:
    """No size limit, 30 days' retention, the last 2 of each model's history, one hour's grace,
    unless told otherwise (``retention_days=None``: keep unused versions while there is room)."""

    max_size: int | None = None
    retention_days: float | None = 30.0
    keep_last: int = 2
    grace: float = DEFAULT_GRACE

    @classmethod
    def from_config(cls, *, max_size: int | str | None = None, retention_days: float | None = None,
                    keep_last: int | None = None, grace: float | None = None) -> Policy:
        """Arguments given, else the user config's ``[gc]``, else the defaults above."""
        from casstore.config import load_user_config
        from casstore.model.sizes import parse_size

        cfg = load_user_config().get("gc", {})
        ms = max_size if max_size is not None else cfg.get("max_size")
        return cls(
            max_size=parse_size(str(ms)) if ms is not None else None,
            retention_days=float(retention_days if retention_days is not None
                                 else cfg.get("retention_days", cls.retention_days)),
            keep_last=int(keep_last if keep_last is not None else cfg.get("keep_last", cls.keep_last)),
            grace=float(grace if grace is not None else cfg.get("grace", cls.grace)),
        )
