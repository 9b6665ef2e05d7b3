"""The GC policy: what a store may hold and for how long, built from arguments and the user config
so that `cas gc`, `cas list`, `cas du`, the automatic GC and the Python API judge alike."""

from __future__ import annotations

from dataclasses import dataclass, field

from casstore.model.digest import Digest

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
    # Manifests this run must keep whatever the rest says: what the command that triggered an
    # automatic GC just fetched or switched to.
    protect: frozenset[Digest] = field(default_factory=frozenset)

    @classmethod
    def from_config(cls, *, max_size: int | str | None = None, retention_days: float | None = None,
                    keep_last: int | None = None, grace: float | None = None) -> Policy:
        """Arguments given, else the user config's ``[gc]``, else the defaults above; every value
        typed (casstore.config), so a bad one is an error naming it."""
        from casstore.config import load_user_config, user_setting
        from casstore.errors import InvalidInput
        from casstore.model import values

        cfg = load_user_config()

        def arg(name: str, value, parse):
            try:
                return parse(value)
            except InvalidInput as e:
                raise InvalidInput(f"--{name.replace('_', '-')} {value!r}: {e}") from None

        return cls(
            max_size=arg("max_size", max_size, values.size) if max_size is not None
            else user_setting("gc.max_size", None, cfg),
            retention_days=arg("retention_days", retention_days, values.days) if retention_days is not None
            else user_setting("gc.retention_days", cls.retention_days, cfg),
            keep_last=arg("keep_last", keep_last, values.count) if keep_last is not None
            else user_setting("gc.keep_last", cls.keep_last, cfg),
            grace=arg("grace", grace, values.seconds) if grace is not None else user_setting("gc.grace", cls.grace, cfg),
        )
