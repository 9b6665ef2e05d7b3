"""Which kind of filesystem a path is on, for the few rules that differ on a network filesystem.

A NAS client (NFS, SMB, sshfs and other FUSE filesystems, Lustre, CephFS) may answer a directory
listing or a file's attributes from its cache for tens of seconds, while an open of a name goes to
the server. GC therefore waits that long between setting objects aside and its last check there
(gc/sweep.py), so that what another client wrote before the set-aside is in every listing.
"""

from __future__ import annotations

import os
from functools import lru_cache

# Kernel filesystem types whose clients cache what other clients change.
NETWORK = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "lustre", "glusterfs", "gpfs", "beegfs",
           "afs", "ncpfs", "davfs", "fuse")
# NFS revalidates a directory's attributes after at most acdirmax (60 s by default); sshfs after
# its cache_timeout (20 s).
NETWORK_SETTLE = 60.0


def fs_type(path: str | os.PathLike) -> str | None:
    """The type column of /proc/self/mountinfo for the mount holding ``path`` (None off Linux)."""
    return _fs_type(os.path.realpath(path))


@lru_cache(maxsize=16)
def _fs_type(real: str) -> str | None:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return None
    best, kind = "", None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or not tail:
            continue
        mount = fields[4].replace("\\040", " ")
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, tail[0]
    return kind


def is_network(path: str | os.PathLike) -> bool:
    kind = fs_type(path)
    return kind is not None and kind.split(".", 1)[0] in NETWORK
