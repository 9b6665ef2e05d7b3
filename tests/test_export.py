"""`cas export hf-cache` read back by the real huggingface_hub offline (and safetensors), and
`cas export oci` checked against the OCI image-layout rules."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from casstore.errors import InvalidInput
from casstore.ops.add import add
from casstore.ops.export import export_hf_cache, export_oci
from casstore.ops.importer import import_model
from casstore.ops.verify import verify

from conftest import CasRunner, make_model
from sourcetrees import COMMIT, hf_cache

REPO = "Wan-AI/Wan2.2-T2V-A14B"

READ_BACK = r"""
import json, os, sys, warnings
warnings.simplefilter("error")  # any warning huggingface_hub gives fails the read
from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download
from safetensors.numpy import load_file
repo = sys.argv[1]
snap = snapshot_download(repo)
cfg = hf_hub_download(repo, "config.json")
info = scan_cache_dir()
tensors = load_file(os.path.join(snap, "transformer", "shard.safetensors"))
files = {os.path.relpath(os.path.join(d, n), snap): open(os.path.join(d, n), "rb").read().hex()
         for d, _, ns in os.walk(snap) for n in ns}
print(json.dumps({"snap": snap, "cfg": open(cfg).read(), "warnings": [str(w) for w in info.warnings],
                  "repos": [[r.repo_id, r.size_on_disk, [rev.commit_hash for rev in r.revisions]] for r in info.repos],
                  "tensor": tensors["w"].tolist(), "files": files}))
"""


def _model(tmp_path):
    from safetensors.numpy import save_file

    src = tmp_path / "src"
    (src / "transformer").mkdir(parents=True)
    save_file({"w": np.arange(6, dtype=np.float32)}, str(src / "transformer" / "shard.safetensors"))
    (src / "config.json").write_text('{"_class_name": "WanPipeline"}')
    (src / "README.md").write_text("# Wan\n")
    return src


def _read_back(cache, repo=REPO) -> dict:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    p = subprocess.run([sys.executable, "-c", READ_BACK, repo], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_huggingface_hub_reads_an_export_offline_and_cannot_delete_a_blob(store, tmp_path):
    src = _model(tmp_path)
    r = add(store, src, REPO, "1.1.0")
    cache = tmp_path / "hub"
    res = export_hf_cache(store, REPO, "1.1.0", cache_dir=cache)
    assert res.linked == 3 and res.copied == 0 and res.revision == "main"
    got = _read_back(cache)
    assert got["warnings"] == [] and got["tensor"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert got["cfg"] == '{"_class_name": "WanPipeline"}'
    assert {p: bytes.fromhex(h) for p, h in got["files"].items()} == {
        p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*") if p.is_file()}
    [[repo_id, size, commits]] = got["repos"]
    assert repo_id == REPO and commits == [res.commit] and size == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    m = store.get_manifest(r.manifest)
    for e in m.entries:  # blobs/<sha256> are hard links to the store's blobs: no second copy
        blob = cache / "models--Wan-AI--Wan2.2-T2V-A14B" / "blobs" / hashlib.sha256(
            store.blob_path(e.digest).read_bytes()).hexdigest()
        assert os.path.samefile(blob, store.blob_path(e.digest))

    # `hf cache delete` of that revision, through huggingface_hub's own strategy
    env = {**os.environ, "HF_HUB_CACHE": str(cache)}
    subprocess.run([sys.executable, "-c", "from huggingface_hub import scan_cache_dir as s; import sys; "
                    "s().delete_revisions(sys.argv[1]).execute()", res.commit], env=env, check=True)
    assert not (cache / "models--Wan-AI--Wan2.2-T2V-A14B" / "snapshots" / res.commit).exists()
    assert verify(store).ok and all(store.has_blob(e.digest) for e in m.entries)


def test_an_export_is_a_gc_root_while_it_exists(tmp_path):
    cas = CasRunner(tmp_path / "store", tmp_path)
    for v, n in (("1", 3000), ("2", 4000)):
        cas("add", make_model(tmp_path / f"v{v}", {"a.bin": n}), "--name", "o/m", "--version", v)
    cas("use", "o/m@2")
    cas("export", "hf-cache", "o/m@1", "--cache", tmp_path / "hub")
    policy = ("--max-size", "0", "--retention-days", "0", "--keep-last", "0", "--grace", "0")
    cas("gc", *policy)
    assert cas("path", "o/m@1").returncode == 0  # kept: the export is a root
    plan = cas.json("gc", "--dry-run", *policy)["plan"]
    assert any(r.startswith("locked by export ") for r in plan["kept"]["o/m@1"]), plan
    import shutil
    shutil.rmtree(tmp_path / "hub" / "models--o--m")
    cas("gc", *policy)
    assert cas("path", "o/m@1", ok=False).returncode != 0  # the export is gone: so is its root
    assert cas("path", "o/m@2").returncode == 0


def test_an_imported_version_exports_to_its_own_commit_and_re_export_is_stable(store, tmp_path):
    files = {"model.safetensors": os.urandom(1 << 16), "config.json": b"{}"}
    repo = hf_cache(tmp_path / "in", REPO, files)
    import_model(store, str(repo), None, "1")
    out = tmp_path / "out"
    first = export_hf_cache(store, REPO, "1", cache_dir=out)
    assert first.commit == COMMIT and first.hashed_bytes == 0  # imported versions record their SHA-256s
    again = export_hf_cache(store, REPO, "1", cache_dir=out)
    assert again.commit == COMMIT and again.linked == 0  # nothing to do the second time
    other = export_hf_cache(store, REPO, "1", cache_dir=tmp_path / "out2", revision="v1")
    assert other.commit == COMMIT and (tmp_path / "out2" / "models--Wan-AI--Wan2.2-T2V-A14B" / "refs" / "v1").read_text() == COMMIT
    with pytest.raises(InvalidInput, match="invalid revision"):
        export_hf_cache(store, REPO, "1", cache_dir=out, revision="../x")


def test_a_version_without_an_hf_source_gets_a_stable_commit(store, tmp_path):
    r = add(store, make_model(tmp_path / "x", {"a.json": b"{}"}), "o/plain", "1")
    a = export_hf_cache(store, "o/plain", "1", cache_dir=tmp_path / "h")
    b = export_hf_cache(store, "o/plain", "1", cache_dir=tmp_path / "h2")
    assert a.commit == b.commit == r.manifest.hex[:40] and a.hashed_bytes == 2 and b.hashed_bytes == 0
    add(store, make_model(tmp_path / "y", {"a": 1}), "plain", "1")
    with pytest.raises(InvalidInput, match="ORG/NAME"):
        export_hf_cache(store, "plain", "1", cache_dir=tmp_path / "h")


OCI_DIGEST = "sha256:"


def _oci_check(root):
    """The OCI image-layout rules (image-spec image-layout.md, descriptor.md): every descriptor's
    blob exists, has its size and its digest; index → manifest → config and layers."""
    assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((root / "index.json").read_text())
    assert index["schemaVersion"] == 2

    def blob(desc):
        assert desc["digest"].startswith(OCI_DIGEST)
        data = (root / "blobs" / "sha256" / desc["digest"][len(OCI_DIGEST):]).read_bytes()
        assert len(data) == desc["size"] and hashlib.sha256(data).hexdigest() == desc["digest"][len(OCI_DIGEST):]
        return data

    out = {}
    for mdesc in index["manifests"]:
        assert mdesc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        m = json.loads(blob(mdesc))
        assert m["schemaVersion"] == 2 and m["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
        assert m["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"
        cfg = json.loads(blob(m["config"]))
        assert cfg["modelfs"]["diffIds"] == [d["digest"] for d in m["layers"]]
        files = {}
        for layer in m["layers"]:
            assert layer["mediaType"].startswith("application/vnd.cncf.model.") and layer["mediaType"].endswith(".raw")
            files[layer["annotations"]["org.cncf.model.filepath"]] = blob(layer)
        out[mdesc["annotations"]["org.opencontainers.image.ref.name"]] = (m, files)
    return out


def test_oci_layout_is_valid_and_holds_every_file(store, tmp_path):
    src = _model(tmp_path)
    add(store, src, REPO, "1.1.0")
    add(store, make_model(tmp_path / "v2", {"config.json": b"{}", "w.gguf": 500}), REPO, "1.2.0")
    root = tmp_path / "oci"
    res = export_oci(store, REPO, "1.1.0", root)
    export_oci(store, REPO, "1.2.0", root)
    assert res.linked == 3
    images = _oci_check(root)
    assert set(images) == {"1.1.0", "1.2.0"}
    m, files = images["1.1.0"]
    assert files == {p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*") if p.is_file()}
    kinds = {layer["annotations"]["org.cncf.model.filepath"]: layer["mediaType"] for layer in m["layers"]}
    assert kinds == {"transformer/shard.safetensors": "application/vnd.cncf.model.weight.v1.raw",
                     "config.json": "application/vnd.cncf.model.weight.config.v1.raw",
                     "README.md": "application/vnd.cncf.model.doc.v1.raw"}
    again = export_oci(store, REPO, "1.1.0", root)  # re-export: the same index entry, not a second one
    assert again.linked == 0 and set(_oci_check(root)) == {"1.1.0", "1.2.0"}


def test_a_real_registry_accepts_the_oci_export_and_oras_pulls_the_same_bytes(store, tmp_path):
    """Pushed blob by blob and manifest by digest from the layout (what `oras cp --from-oci-layout`
    does) with oras-py, to Debian's docker-registry; pulled back with oras-py's own pull."""
    import oras.provider

    from servers import DockerRegistry

    src = _model(tmp_path)
    add(store, src, REPO, "1.1.0")
    root = tmp_path / "oci"
    export_oci(store, REPO, "1.1.0", root)
    [(m, _files)] = _oci_check(root).values()
    index = json.loads((root / "index.json").read_text())
    reg = DockerRegistry(tmp_path / "registry")
    try:
        client = oras.provider.Registry(hostname=reg.host, insecure=True)
        target = f"{reg.host}/wan-ai/wan2.2:1.1.0"
        container = client.get_container(target)
        for desc in [m["config"], *m["layers"]]:
            path = root / "blobs" / "sha256" / desc["digest"].split(":", 1)[1]
            assert client.upload_blob(str(path), container, desc).status_code in (200, 201)
        # The manifest's own bytes (oras-py's upload_manifest would re-serialize them), so that the
        # registry names it by the digest index.json gives.
        import requests

        want = index["manifests"][0]["digest"]
        put = requests.put(f"http://{reg.host}/v2/wan-ai/wan2.2/manifests/1.1.0",
                           data=(root / "blobs" / "sha256" / want.split(":", 1)[1]).read_bytes(),
                           headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, timeout=30)
        assert put.status_code == 201, put.text
        assert put.headers["Docker-Content-Digest"] == want
        assert client.get_manifest(container) == m
        out = tmp_path / "pulled"
        for rel in {p.parent.relative_to(src) for p in src.rglob("*") if p.is_file()}:
            (out / rel).mkdir(parents=True, exist_ok=True)  # oras-py writes files, not their directories
        pulled = client.pull(target=target, outdir=str(out))
        assert len(pulled) == 3
        assert {p.relative_to(src).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in src.rglob("*") if p.is_file()} == \
            {os.path.relpath(p, out): hashlib.sha256(open(p, "rb").read()).hexdigest() for p in pulled}
    finally:
        reg.stop()


def test_sync_exports_to_the_hf_cache_when_the_project_asks(tmp_path):
    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("add", _model(tmp_path), "--name", REPO, "--version", "1.1.0")
    pub("push", f"{REPO}@1.1.0", "--remote", tmp_path / "nas")
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "cas.toml").write_text(f'remote = "{tmp_path / "nas"}"\n[models."{REPO}"]\nversion = "1.1.0"\n'
                                   f'hf_cache = "{REPO}"\n')
    me = CasRunner(tmp_path / "store", proj)
    cache = tmp_path / "hub"
    os.environ["HF_HUB_CACHE"] = str(cache)
    try:
        out = me.json("sync")
    finally:
        del os.environ["HF_HUB_CACHE"]
    assert out["exported"] == {REPO: str(cache / "models--Wan-AI--Wan2.2-T2V-A14B")}
    got = _read_back(cache)
    assert got["warnings"] == [] and got["tensor"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    (proj / "cas.toml").write_text((proj / "cas.toml").read_text().replace(f'hf_cache = "{REPO}"', 'hf_cache = "plain"'))
    p = me("sync", ok=False)
    assert p.returncode == 2 and "hf_cache = 'plain' is not an HF repo id" in p.stderr


def test_an_export_never_writes_through_a_symlinked_directory(store, tmp_path):
    from casstore.errors import UnsafeDestination

    add(store, _model(tmp_path), REPO, "1.1.0")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    snaps = tmp_path / "hub" / "models--Wan-AI--Wan2.2-T2V-A14B" / "snapshots"
    snaps.mkdir(parents=True)
    (snaps / store.get_manifest(store.resolve(REPO, "1.1.0")[1]).digest().hex[:40]).symlink_to(elsewhere)
    with pytest.raises(UnsafeDestination, match="symlink"):
        export_hf_cache(store, REPO, "1.1.0", cache_dir=tmp_path / "hub")
    assert list(elsewhere.iterdir()) == []
    (tmp_path / "oci").mkdir()
    (tmp_path / "oci" / "blobs").symlink_to(elsewhere)
    with pytest.raises(UnsafeDestination):
        export_oci(store, REPO, "1.1.0", tmp_path / "oci")
    assert list(elsewhere.iterdir()) == []


def test_hfs_own_blob_of_that_name_is_left_alone(store, tmp_path):
    files = {"model.safetensors": os.urandom(4096), "config.json": b"{}"}
    repo = hf_cache(tmp_path / "hub", REPO, files)
    import_model(store, str(repo), None, "1")
    sha = hashlib.sha256(files["config.json"]).hexdigest()
    (tmp_path / "hub2").mkdir()
    own = tmp_path / "hub2" / "models--Wan-AI--Wan2.2-T2V-A14B" / "blobs" / sha
    own.parent.mkdir(parents=True)
    own.write_bytes(b"{}")
    res = export_hf_cache(store, REPO, "1", cache_dir=tmp_path / "hub2")
    assert res.linked == 1  # the other blob; HF's own config.json blob stays its own file
    assert own.read_bytes() == b"{}" and own.stat().st_nlink == 1
