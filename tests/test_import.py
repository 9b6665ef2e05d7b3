"""`cas import`: an HF hub cache, an HF --local-dir, a git-lfs repository and an Ollama store,
each imported with every file checked against its source's digests, and a flipped byte refused."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from casstore.errors import IntegrityError, InvalidInput, NotFound
from casstore.ops.add import add
from casstore.ops.importer import import_model

from conftest import assert_store_consistent
from sourcetrees import COMMIT, flip_byte, git, git_lfs_repo, hf_cache, hf_local_dir, ollama_store

REPO = "Wan-AI/Wan2.2-T2V-A14B"


def _files():
    return {"high_noise_model/diffusion_pytorch_model.safetensors": os.urandom(3 << 20),
            "Wan2.1_VAE.pth": os.urandom(1 << 20), "config.json": b'{"a": 1}', "README.md": b"# Wan\n"}


def _check_imported(store, r, files):
    m = store.get_manifest(r.added.manifest)
    assert {e.path: e.size for e in m.entries} == {p: len(d) for p, d in files.items()}
    for e in m.entries:
        assert e.sha256 == hashlib.sha256(files[e.path]).hexdigest()
        assert store.blob_path(e.digest).read_bytes() == files[e.path]
    assert m.meta["source"] == r.origin
    assert_store_consistent(store)
    return m


def test_hf_cache_import_links_blobs_and_keeps_the_cache_as_it_was(store, tmp_path, monkeypatch):
    from huggingface_hub import scan_cache_dir

    files = _files()
    cache = tmp_path / "hub"
    repo = hf_cache(cache, REPO, files)
    info = scan_cache_dir(cache)  # the fixture is a cache huggingface_hub itself reads cleanly
    assert info.warnings == [] and [r.repo_id for r in info.repos] == [REPO]
    before = {p: (p.lstat().st_mode, os.readlink(p) if p.is_symlink() else None) for p in repo.rglob("*")}
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))

    r = import_model(store, f"hf://{REPO}", None, "1.1.0")
    assert r.kind == "hf-cache" and r.origin == f"hf://{REPO}@{COMMIT}"
    assert r.added.model == REPO  # the repo id is the default name
    m = _check_imported(store, r, files)
    assert r.added.methods == {"hardlink": 4}  # zero copy
    for e in m.entries:
        assert os.path.samefile(repo / "snapshots" / COMMIT / e.path, store.blob_path(e.digest))
    after = {p: (p.lstat().st_mode & ~0o222, os.readlink(p) if p.is_symlink() else None) for p in repo.rglob("*")}
    assert after == {p: (mode & ~0o222, link) for p, (mode, link) in before.items()}  # same tree and links
    assert scan_cache_dir(cache).warnings == []
    # the same commit by ref, by commit, and as a snapshot path: the same manifest
    for source in (f"hf://{REPO}@main", f"hf://{REPO}@{COMMIT}", str(repo / "snapshots" / COMMIT), str(repo)):
        assert import_model(store, source, None, "1.1.0").added.unchanged


@pytest.mark.parametrize("victim", ["high_noise_model/diffusion_pytorch_model.safetensors", "config.json"])
def test_hf_cache_import_refuses_a_flipped_byte(store, tmp_path, victim):
    files = _files()
    repo = hf_cache(tmp_path / "hub", REPO, files)
    flip_byte(repo / "snapshots" / COMMIT / victim, at=len(files[victim]) // 2)
    with pytest.raises(IntegrityError) as e:
        import_model(store, str(repo), None, "1")
    msg = str(e.value)
    want = hashlib.sha256(files[victim]).hexdigest() if victim.endswith("safetensors") else None
    assert victim in msg and "nothing was added" in msg
    assert (want in msg) if want else "git SHA-1" in msg
    assert list(store.iter_blobs()) == [] and store.refs.models() == []
    assert [p for p in store.layout.tmp.iterdir() if p.is_file()] == []  # the staged links are gone


def test_hf_cache_errors_name_what_is_missing(store, tmp_path, monkeypatch):
    hf_cache(tmp_path / "hub", REPO, {"a.json": b"{}"})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(NotFound, match="Wan-AI/other is not in the Hugging Face cache"):
        import_model(store, "hf://Wan-AI/other", None, "1")
    with pytest.raises(NotFound, match=r"revision 'v2' is not in the cached repo .*refs: main"):
        import_model(store, f"hf://{REPO}@v2", None, "1")
    with pytest.raises(InvalidInput, match="is not a source `cas import` knows"):
        import_model(store, str(tmp_path), None, "1")


def test_a_2_gib_shaped_snapshot_imports_with_no_extra_disk(store, tmp_path):
    """du over the cache and the store together: hard links are counted once."""
    big = tmp_path / "hub"
    repo = hf_cache(big, REPO, {"model.safetensors": b""})
    blob = next((repo / "blobs").iterdir())
    with open(blob, "wb") as f:  # 64 MiB of real blocks (a 2 GiB run: bench/bench_import.py)
        for _ in range(64):
            f.write(os.urandom(1 << 20))
    sha = hashlib.sha256(blob.read_bytes()).hexdigest()
    blob.rename(repo / "blobs" / sha)
    link = repo / "snapshots" / COMMIT / "model.safetensors"
    link.unlink()
    link.symlink_to(f"../../blobs/{sha}")

    def du() -> int:
        out = subprocess.run(["du", "-s", "--block-size=1", str(big), str(store.root)], capture_output=True,
                             text=True, check=True).stdout
        return sum(int(line.split()[0]) for line in out.splitlines())

    before = du()
    r = import_model(store, str(repo), None, "1")
    grew = du() - before
    assert r.added.methods == {"hardlink": 1}
    assert grew < 1 << 20, f"the import used {grew} more bytes of disk"


def test_local_dir_import_checks_etags_and_leaves_metadata_out(store, tmp_path):
    files = {"model.safetensors": os.urandom(1 << 20), "config.json": b'{"b": 2}'}
    root = hf_local_dir(tmp_path / "local", files)
    assert (root / ".cache" / "huggingface" / "download" / "model.safetensors.metadata").is_file()
    r = import_model(store, str(root), "wan", "1")
    assert r.kind == "hf-local-dir" and r.origin.endswith(f"@{COMMIT}")
    _check_imported(store, r, files)
    assert r.added.methods.get("hardlink") is None  # a working folder is copied unless --move
    # The same folder on another machine (other download times): the same manifest.
    root2 = hf_local_dir(tmp_path / "local2", files)
    again = import_model(store, str(root2), "wan", "1")
    assert again.added.unchanged and again.added.manifest == r.added.manifest
    flip_byte(root / "model.safetensors", 100)
    with pytest.raises(IntegrityError, match="model.safetensors.*download record"):
        import_model(store, str(root), "wan", "2")
    with pytest.raises(InvalidInput, match="pass --name"):
        import_model(store, str(root2), None, "3")


def test_git_lfs_repository_import_reads_lfs_objects(store, tmp_path):
    files = {"model.safetensors": os.urandom(1 << 20), "config.json": b"{}", "sub/tok.txt": b"hello\n"}
    repo = git_lfs_repo(tmp_path / "repo", files)
    files[".gitattributes"] = (repo / ".gitattributes").read_bytes()
    r = import_model(store, str(repo), "m", "1")
    commit = git(repo, "rev-parse", "HEAD").strip()
    assert r.kind == "git-lfs" and r.origin == f"git@{commit}"  # no local path: the same on every machine
    _check_imported(store, r, files)

    # A pointer checkout (GIT_LFS_SKIP_SMUDGE=1): `cas add` refuses it; `cas import` says what to run.
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone), env={"GIT_LFS_SKIP_SMUDGE": "1"})
    assert (clone / "model.safetensors").stat().st_size < 200
    with pytest.raises(InvalidInput, match="model.safetensors is a Git LFS pointer"):
        add(store, clone, "m", "2")
    with pytest.raises(NotFound, match="git lfs fetch"):
        import_model(store, str(clone), "m", "2")

    oid = hashlib.sha256(files["model.safetensors"]).hexdigest()
    obj = repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    flip_byte(obj, 5)
    with pytest.raises(IntegrityError, match=f"LFS pointer of model.safetensors.*{oid}"):
        import_model(store, str(repo), "m", "3")
    (repo / "config.json").write_bytes(b"[]")  # a working-tree change is not the commit
    flip_byte(obj, 5)  # (the LFS object is good again)
    with pytest.raises(IntegrityError, match="config.json.*git SHA-1.*git status"):
        import_model(store, str(repo), "m", "3")


def test_ollama_import(store, tmp_path, monkeypatch):
    gguf = b"GGUF" + os.urandom(1 << 20)
    root = ollama_store(tmp_path / "ollama", "llama3:8b", {"model": gguf, "template": b"{{ .Prompt }}",
                                                           "params": b'{"stop": []}', "license": b"MIT"})
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    r = import_model(store, "ollama://llama3:8b", None, "8b")
    assert r.kind == "ollama" and r.origin == "ollama://registry.ollama.ai/library/llama3:8b"
    assert r.added.model == "llama3" and r.added.methods == {"hardlink": 5}
    m = store.get_manifest(r.added.manifest)
    assert {e.path for e in m.entries} == {"model.gguf", "template", "params.json", "LICENSE", "config.json"}
    gguf_blob = next(p for p in (root / "blobs").iterdir() if p.stat().st_size == len(gguf))
    flip_byte(gguf_blob, 9)
    with pytest.raises(IntegrityError, match="model.gguf.*Ollama manifest"):
        import_model(store, "ollama://llama3:8b", None, "8b-2")
    with pytest.raises(NotFound, match="'mistral' is not in"):
        import_model(store, "ollama://mistral", None, "1")


def test_cli_import(cas, tmp_path):
    files = _files()
    hf_cache(tmp_path / "hub", REPO, files)
    out = cas.json("import", f"hf://{REPO}", "--version", "1.1.0", "--hf-cache", tmp_path / "hub")
    assert out["kind"] == "hf-cache" and out["model"] == REPO and out["files"] == 4
    shown = cas.json("show", f"{REPO}@1.1.0")
    assert shown["meta"]["source"] == f"hf://{REPO}@{COMMIT}"
    flip_byte(next(p for p in (tmp_path / "hub").rglob("blobs/*") if p.stat().st_size == 1 << 20), 3)
    p = cas("import", f"hf://{REPO}", "--version", "1.1.1", "--hf-cache", tmp_path / "hub", ok=False)
    assert p.returncode != 0 and "Wan2.1_VAE.pth" in p.stderr and "SHA-256" in p.stderr


@pytest.mark.parametrize("url,origin", [
    ("https://user:hf_secret@huggingface.co/Wan-AI/Wan2.2", "git+https://huggingface.co/Wan-AI/Wan2.2"),
    ("git@github.com:org/repo.git", "git+git@github.com:org/repo.git"),
    ("/srv/git/repo", "git"), ("../repo", "git"), ("file:///srv/repo", "git"),
])
def test_the_recorded_git_origin_has_no_token_and_no_local_path(tmp_path, url, origin):
    from casstore.sources.gitlfs import _origin_url

    repo = git_lfs_repo(tmp_path / "r", {"a.json": b"{}"})
    git(repo, "remote", "add", "origin", url)
    assert _origin_url(repo) == origin


def test_sha256s_travel_with_push_and_fetch(tmp_path, monkeypatch):
    from conftest import CasRunner
    from servers import CasServe

    files = _files()
    hf_cache(tmp_path / "hub", REPO, files)
    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("import", f"hf://{REPO}", "--version", "1", "--hf-cache", tmp_path / "hub")
    srv = CasServe(tmp_path / "served")
    try:
        monkeypatch.setenv("CAS_TOKEN", srv.token)
        pub("push", f"{REPO}@1", "--remote", srv.url)
        dst = CasRunner(tmp_path / "dst", tmp_path)
        dst("fetch", f"{REPO}@1", "--remote", srv.url)
    finally:
        srv.stop()
    shown = dst.json("show", f"{REPO}@1")
    entries = shown.get("entries") or shown["manifest"]["entries"]
    assert {e["path"]: e["sha256"] for e in entries} == {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}
    assert dst.json("verify", "--sha256")["ok"]


def test_a_snapshot_link_leaving_its_repo_is_refused(store, tmp_path):
    repo = hf_cache(tmp_path / "hub", REPO, {"config.json": b"{}"})
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours")
    (repo / "snapshots" / COMMIT / "stolen.bin").symlink_to(secret)
    with pytest.raises(InvalidInput, match=r"stolen\.bin points outside its cache repo"):
        import_model(store, str(repo), None, "1")
    assert store.refs.models() == []


def test_what_huggingface_hub_itself_downloads_imports_and_a_flipped_byte_never_does(store, tmp_path):
    """The cache and the --local-dir written by the real client (`snapshot_download` against a
    loopback stand-in for the Hub API: tests/sourcetrees.hub_app), not by our own builders."""
    from servers import ThreadedApp
    from sourcetrees import hf_download, hub_app

    files = _files()
    hub = ThreadedApp(hub_app(REPO, files))
    try:
        snap = hf_download(hub.url, tmp_path / "hub", REPO)
        local = tmp_path / "local"
        hf_download(hub.url, tmp_path / "hub2", REPO, local)
    finally:
        hub.stop()
    assert snap.endswith(f"snapshots/{COMMIT}")
    a = import_model(store, f"hf://{REPO}", None, "1", hf_cache=str(tmp_path / "hub"))
    b = import_model(store, str(local), REPO, "2")
    assert a.kind == "hf-cache" and b.kind == "hf-local-dir" and b.origin == f"hf-local-dir@{COMMIT}"
    assert a.added.methods == {"hardlink": 4}
    ea, eb = (store.get_manifest(r.added.manifest).entries for r in (a, b))
    assert [(e.path, e.digest, e.sha256) for e in ea] == [(e.path, e.digest, e.sha256) for e in eb]
    _check_imported(store, a, files)
    for victim in (os.path.realpath(os.path.join(snap, "Wan2.1_VAE.pth")), local / "config.json"):
        flip_byte(Path(victim), 2)
    with pytest.raises(IntegrityError, match="Wan2.1_VAE.pth"):
        import_model(store, f"hf://{REPO}", None, "3", hf_cache=str(tmp_path / "hub"))
    with pytest.raises(IntegrityError, match="config.json.*git SHA-1"):
        import_model(store, str(local), REPO, "4")
    assert sorted(store.refs.tags(REPO)) == ["1", "2"]
