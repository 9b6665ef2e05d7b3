"""An Ollama store (``$OLLAMA_MODELS``, else ``~/.ollama/models``)::

    manifests/<host>/<namespace>/<model>/<tag>   an OCI-style manifest: config + layers
    blobs/sha256-<hex>                           the bytes, named by their SHA-256

Each layer becomes a file named by its media type (``application/vnd.ollama.image.model`` is
``model.gguf``), and the config ``config.json``.
"""

from __future__ import annotations

import os
from pathlib import Path

from casstore.errors import InvalidInput, NotFound
from casstore.fs.scan import SourceFile, stat_file
from casstore.model.strictjson import field as typed
from casstore.model.strictjson import load_file
from casstore.sources import Plan, is_hex

DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG = "registry.ollama.ai", "library", "latest"
_MEDIA_PREFIX = "application/vnd.ollama.image."
_FILE_NAMES = {"model": "model.gguf", "projector": "projector.gguf", "adapter": "adapter.gguf",
               "params": "params.json", "messages": "messages.json", "template": "template",
               "system": "system", "license": "LICENSE"}


def models_dir(explicit: str | os.PathLike | None = None) -> Path:
    return Path(explicit or os.environ.get("OLLAMA_MODELS") or os.path.expanduser("~/.ollama/models"))


def manifest_path(root: Path, name: str) -> tuple[Path, str]:
    """The manifest file of ``[host/][namespace/]model[:tag]``, and the name spelled in full."""
    base, _, tag = name.partition(":")
    parts = base.split("/")
    if not 1 <= len(parts) <= 3 or not all(parts) or any(p in (".", "..") for p in parts) or "/" in tag:
        raise InvalidInput(f"invalid Ollama model name {name!r}: expected [HOST/][NAMESPACE/]MODEL[:TAG]")
    host, ns, model = ([DEFAULT_HOST, DEFAULT_NAMESPACE] + parts)[-3:] if len(parts) < 3 else parts
    tag = tag or DEFAULT_TAG
    return root / "manifests" / host / ns / model / tag, f"{host}/{ns}/{model}:{tag}"


def read_ollama(root: Path, name: str) -> Plan:
    path, full = manifest_path(root, name)
    try:
        doc = load_file(path, what="Ollama manifest", max_bytes=1 << 20)
    except FileNotFoundError:
        raise NotFound(f"Ollama model {name!r} is not in {root} (no {path})") from None
    layers = [("config", typed(doc, "config", dict, where=str(path)))]
    layers += [("layer", layer) for layer in typed(doc, "layers", list, where=str(path))]
    files: list[SourceFile] = []
    seen: dict[str, int] = {}
    for kind, layer in layers:
        if not isinstance(layer, dict):
            raise InvalidInput(f"{path}: a layer is not an object")
        digest = typed(layer, "digest", str, where=str(path))
        media = typed(layer, "mediaType", str, where=str(path))
        size = typed(layer, "size", int, where=str(path))
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or not is_hex(hexd, 64):
            raise InvalidInput(f"{path}: layer digest {digest!r} is not sha256:<64 hex>")
        rel = "config.json" if kind == "config" else _FILE_NAMES.get(media.removeprefix(_MEDIA_PREFIX),
                                                                     media.removeprefix(_MEDIA_PREFIX).replace("/", "_"))
        seen[rel] = seen.get(rel, 0) + 1
        if seen[rel] > 1:
            rel = f"{rel}-{seen[rel]}"
        blob = root / "blobs" / f"sha256-{hexd}"
        st = stat_file(blob, rel)
        if st.st_size != size:
            raise InvalidInput(f"{blob} has {st.st_size} bytes, but {path} says {size}")
        files.append(SourceFile(rel, blob, st, sha256=hexd, claimed_by=f"the Ollama manifest {path}"))
    return Plan("ollama", f"ollama://{full}", files, {}, full.rsplit("/", 1)[-1].split(":")[0],
                immutable=True)
