"""casstore: a content-addressed store for large model weights.

    import casstore
    store = casstore.open_store()              # $CAS_HOME, the config file, or the user cache dir
    casstore.add(store, "weights/", "t2v-A14B", "1.1.0")
    path = casstore.path(store, "t2v-A14B@1.1.0")  # a read-only directory for from_pretrained
    casstore.use(store, "t2v-A14B", "1.1.0"); casstore.rollback(store, "t2v-A14B")
"""

from __future__ import annotations

from .current import rollback, use
from .digest import Digest
from .errors import CasError, Conflict, IntegrityError, InvalidInput, NotFound
from .ingest import add
from .manifest import Entry, Manifest
from .materialize import checkout
from .store import Store
from .verify import verify

__all__ = ["Digest", "Entry", "Manifest", "Store", "CasError", "Conflict", "IntegrityError", "InvalidInput",
           "NotFound", "add", "checkout", "open_store", "path", "rollback", "use", "verify"]


def open_store(path=None, *, create: bool = True) -> Store:
    from .config import store_path

    return Store.open(store_path(path), create=create)


def path(store: Store, ref: str):
    """The read-only directory of ``MODEL[@VERSION]``'s files inside the store."""
    from .materialize import view
    from .names import Ref

    r = Ref.parse(ref)
    _, digest, m = store.load(r.model, r.version)
    return view(store, digest, m)
