"""Garbage collection: read the store's state, make a plan (pure), show it, then execute it.

    policy.py        what may be kept and for how long (from arguments and config)
    state.py         the store read into plain values
    planner.py       what to delete, as a pure function of state and policy
    sweep.py         deleting refs first and blobs last, with last-moment checks
    housekeeping.py  leftovers of gone writers (shared with `cas doctor`)
"""

from __future__ import annotations

import os

from casstore.gc.planner import Plan, plan, root_reasons
from casstore.gc.policy import DAY, DEFAULT_GRACE, Policy
from casstore.gc.state import StoreState, VersionState, blob_table, bulk, read_state
from casstore.gc.sweep import GcResult, execute, recover_trash

__all__ = ["DAY", "DEFAULT_GRACE", "GcResult", "Plan", "Policy", "StoreState", "VersionState", "auto_collect",
           "collect", "execute", "plan", "read_state", "recover_trash", "root_reasons", "store_size"]


def store_size(store) -> int:
    """Bytes of the blobs in the store (`auto_collect` asks after every fetch). Blobs are listed
    by name (through the listing cache); the sizes the manifest summaries know are taken from
    there, the rest stat'ed. The GC this may trigger lists the store in full."""
    from casstore.store.summaries import load

    with bulk():
        return blob_table(store, load(store)[0], store.now()).total


def collect(store, policy: Policy, *, dry_run: bool = False) -> tuple[Plan, GcResult | None]:
    """Plan, and unless ``dry_run``, execute."""
    p = plan(read_state(store), policy)
    return p, None if dry_run else execute(store, p, policy)


def auto_collect(store, protect=()) -> tuple[Policy, Plan, GcResult] | None:
    """The light GC after a fetch, update or sync (CLI and Python API alike): only when the user
    config sets ``gc.max_size`` and the store is over it. ``protect``: the manifests the command
    just fetched or switched to, which this GC keeps whatever the policy says."""
    from dataclasses import replace

    from casstore.config import user_setting

    if user_setting("gc.max_size", None) is None or not os.access(store.root, os.W_OK):
        return None
    policy = replace(Policy.from_config(), protect=frozenset(protect))
    if policy.max_size is None or store_size(store) <= policy.max_size:
        return None
    p, result = collect(store, policy)
    assert result is not None
    return policy, p, result
