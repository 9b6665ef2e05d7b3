"""What a transfer may do (``Settings``, from arguments and the environment, for the CLI and the
Python API alike) and what it cost (``Stats``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from casstore.errors import InvalidInput
from casstore.model.chunking import MAP_MIN_SIZE

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
    lock_refresh: float = 5.0
    stale_after: float = 60.0  # a lock or partial not refreshed for this long belongs to nobody
    lock_timeout: float = 3600.0  # longest wait for another process downloading the same blob
    rate: float | None = None
    delta: bool = True  # assemble a missing blob from chunks of local blobs where its remote map allows
    delta_min_size: int = MAP_MIN_SIZE  # smaller blobs are fetched whole (and get no map at push)

    @classmethod
    def from_env(cls, **over) -> Settings:
        s = cls(**over)
        for name, env in (("low_speed_time", "CAS_LOW_SPEED_TIME"), ("backoff", "CAS_RETRY_BACKOFF"),
                          ("attempts", "CAS_RETRY_ATTEMPTS"), ("stale_after", "CAS_STALE_AFTER"),
                          ("part_size", "CAS_PART_SIZE"), ("lock_timeout", "CAS_LOCK_TIMEOUT"),
                          ("delta_min_size", "CAS_DELTA_MIN_SIZE"), ("request_size", "CAS_REQUEST_SIZE")):
            if os.environ.get(env):
                setattr(s, name, type(getattr(s, name))(float(os.environ[env])))
        if os.environ.get("CAS_DELTA"):
            s.delta = delta_mode(os.environ["CAS_DELTA"])
        return s


def delta_mode(text: str) -> bool:
    """``--delta auto|never`` (or CAS_DELTA) as a flag."""
    if text not in ("auto", "never"):
        raise InvalidInput(f"invalid delta mode {text!r}: expected 'auto' or 'never'")
    return text == "auto"


@dataclass
class Stats:
    blobs: int = 0
    bytes_total: int = 0
    bytes_downloaded: int = 0  # received from the network
    bytes_reused: int = 0  # already in the store, or fetched by another process meanwhile
    bytes_resumed: int = 0  # adopted from an earlier, interrupted download
    bytes_from_local: int = 0  # copied from chunks of blobs already in the store (delta)
    bytes_maps: int = 0  # chunk maps received, to find those chunks
    retries: int = 0
    elapsed: float = 0.0

    def to_json(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}
