"""What a transfer may do (``Settings``, from arguments and the environment, for the CLI and the
Python API alike) and what it cost (``Stats``)."""

from __future__ import annotations

from dataclasses import dataclass

from casstore.config import env
from casstore.errors import InvalidInput
from casstore.model import values
from casstore.model.chunking import MAP_MIN_SIZE
from casstore.remotes.layers import Tuning

MiB = 1 << 20


@dataclass
class Settings:
    jobs: int = 8
    part_size: int = 64 * MiB
    min_split: int = 4 * MiB
    request_size: int = 16 * MiB  # longest ranged request: parts are fetched in requests of this size
    attempts: int = 5
    backoff: float = 0.5
    backoff_cap: float = 30.0
    low_speed_limit: int = 1024  # bytes/s; below this for low_speed_time, the connection is dropped
    low_speed_time: float = 30.0
    stall_timeout: float = 30.0  # seconds without a byte (and for a response's whole head)
    connect_timeout: float = 30.0
    lock_refresh: float = 5.0
    stale_after: float = 60.0  # a lock or partial not refreshed for this long belongs to nobody
    lock_timeout: float = 3600.0  # longest wait for another process downloading the same blob
    rate: float | None = None
    delta: bool = True  # assemble a missing blob from chunks of local blobs where its remote map allows
    delta_min_size: int = MAP_MIN_SIZE  # smaller blobs are fetched whole (and get no map at push)

    @classmethod
    def from_env(cls, **over) -> Settings:
        """The defaults, then ``CAS_*`` variables (typed: a bad one is an error naming it), then
        ``over`` (the command's own options)."""
        s = cls()
        t = Tuning.from_env()  # the remote stack's settings: parsed there, once
        s.attempts, s.backoff, s.backoff_cap = t.attempts, t.backoff, t.backoff_cap
        s.low_speed_limit, s.low_speed_time = t.low_speed_limit, t.low_speed_time
        s.stall_timeout, s.connect_timeout = t.stall_timeout, t.connect_timeout
        for name, var, parse in _ENV:
            setattr(s, name, env(var, parse, getattr(s, name)))
        for name, value in over.items():
            setattr(s, name, value)
        if s.jobs < 1:
            raise InvalidInput(f"--jobs {s.jobs}: expected 1 or more")
        return s

    def tuning(self) -> Tuning:
        """What the remote stack takes of these settings (remotes/layers.py)."""
        return Tuning(self.attempts, self.backoff, self.backoff_cap, self.connect_timeout, self.stall_timeout,
                      self.low_speed_limit, self.low_speed_time)


def delta_mode(text: str) -> bool:
    """``--delta auto|never`` (or CAS_DELTA) as a flag."""
    if text not in ("auto", "never"):
        raise InvalidInput(f"invalid delta mode {text!r}: expected 'auto' or 'never'")
    return text == "auto"


_ENV = (("stale_after", "CAS_STALE_AFTER", values.seconds),
        ("part_size", "CAS_PART_SIZE", values.positive_size),
        ("lock_timeout", "CAS_LOCK_TIMEOUT", values.seconds),
        ("delta_min_size", "CAS_DELTA_MIN_SIZE", values.size),
        ("request_size", "CAS_REQUEST_SIZE", values.positive_size),
        ("delta", "CAS_DELTA", lambda v: delta_mode(v)))


@dataclass
class Stats:
    blobs: int = 0
    bytes_total: int = 0
    bytes_downloaded: int = 0  # received from the network
    bytes_reused: int = 0  # already in the store, or fetched by another process meanwhile
    bytes_resumed: int = 0  # adopted from an earlier, interrupted download
    bytes_from_local: int = 0  # copied from chunks of blobs already in the store (delta)
    bytes_copied: int = 0  # reflinked or kernel-copied from a remote on the store's filesystem
    bytes_maps: int = 0  # chunk maps received, to find those chunks
    retries: int = 0
    elapsed: float = 0.0

    def to_json(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}
