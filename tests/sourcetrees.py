"""Real-shaped sources for `cas import` tests: an HF hub cache (as huggingface_hub lays it out and
reads it back), an HF --local-dir (written by huggingface_hub's own metadata functions), a git-lfs
repository made by git and git-lfs, an Ollama store."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def hf_cache(cache: Path, repo_id: str, files: dict[str, bytes], *, commit: str = COMMIT, lfs=lambda p: p.endswith(
        (".safetensors", ".bin", ".pth"))) -> Path:
    """models--ORG--NAME with blobs named by etag (SHA-256 for LFS files, git SHA-1 otherwise),
    refs/main and a snapshot of relative symlinks. Returns the repo folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    for rel, data in files.items():
        etag = hashlib.sha256(data).hexdigest() if lfs(rel) else git_sha1(data)
        (repo / "blobs" / etag).write_bytes(data)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(repo / "blobs" / etag, link.parent))
    return repo


def hf_local_dir(root: Path, files: dict[str, bytes], *, commit: str = COMMIT) -> Path:
    from huggingface_hub._local_folder import write_download_metadata

    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        etag = hashlib.sha256(data).hexdigest() if rel.endswith(".safetensors") else git_sha1(data)
        write_download_metadata(root, rel, commit, etag)
    return root


def git(repo: Path, *args: str, env: dict | None = None) -> str:
    e = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
         "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_GLOBAL": "/dev/null", **(env or {})}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=e).stdout


def git_lfs_repo(repo: Path, files: dict[str, bytes]) -> Path:
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "lfs", "install", "--local")
    git(repo, "lfs", "track", "*.safetensors")
    for rel, data in files.items():
        p = repo / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "weights")
    return repo


def ollama_store(root: Path, name: str, layers: dict[str, bytes]) -> Path:
    """manifests/registry.ollama.ai/library/<model>/<tag> and blobs/sha256-<hex>; ``layers`` maps
    a media-type suffix (model, template, params) to bytes; the config is made here."""
    model, _, tag = name.partition(":")
    (root / "blobs").mkdir(parents=True, exist_ok=True)

    def blob(data: bytes, media: str) -> dict:
        h = hashlib.sha256(data).hexdigest()
        (root / "blobs" / f"sha256-{h}").write_bytes(data)
        return {"mediaType": media, "digest": f"sha256:{h}", "size": len(data)}

    doc = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
           "config": blob(b'{"model_format":"gguf"}', "application/vnd.docker.container.image.v1+json"),
           "layers": [blob(d, f"application/vnd.ollama.image.{k}") for k, d in layers.items()]}
    m = root / "manifests" / "registry.ollama.ai" / "library" / model / (tag or "latest")
    m.parent.mkdir(parents=True, exist_ok=True)
    m.write_text(json.dumps(doc))
    return root


def flip_byte(path: Path, at: int = 0) -> None:
    """One byte changed in place, size and (restored) mtime kept: what a bad disk or a bad copy does."""
    st = os.stat(path)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 1]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(path, st.st_mode & 0o777)


def hub_app(repo_id: str, files: dict[str, bytes], *, commit: str = COMMIT, lfs=lambda p: p.endswith(
        (".safetensors", ".bin", ".pth"))):
    """An aiohttp app answering what huggingface_hub asks the Hub for one repo at one commit (repo
    info, HEAD and GET of `resolve/`), so that the real client writes a real cache or --local-dir
    here, where the Hub cannot be reached. The etags are the Hub's: SHA-256 for LFS files (as
    X-Linked-Etag), the git SHA-1 for the rest."""
    from aiohttp import web

    def etag(rel: str) -> str:
        return hashlib.sha256(files[rel]).hexdigest() if lfs(rel) else git_sha1(files[rel])

    async def info(request):
        return web.json_response({"id": repo_id, "modelId": repo_id, "sha": commit, "private": False,
                                  "siblings": [{"rfilename": p} for p in sorted(files)]})

    async def tree(request):
        out = []
        for rel in sorted(files):
            entry = {"type": "file", "path": rel, "size": len(files[rel]), "oid": git_sha1(files[rel])}
            if lfs(rel):
                entry["lfs"] = {"oid": etag(rel), "size": len(files[rel]), "pointerSize": 134}
            out.append(entry)
        return web.json_response(out)

    async def resolve(request):
        rel = request.match_info["path"]
        if f"{request.match_info['org']}/{request.match_info['name']}" != repo_id or rel not in files:
            return web.Response(status=404, headers={"X-Error-Code": "EntryNotFound"})
        headers = {"X-Repo-Commit": commit, "ETag": f'"{etag(rel)}"', "Content-Length": str(len(files[rel]))}
        if lfs(rel):
            headers["X-Linked-Etag"] = f'"{etag(rel)}"'
            headers["X-Linked-Size"] = str(len(files[rel]))
        if request.method == "HEAD":
            return web.Response(headers=headers)
        return web.Response(body=files[rel], headers={k: v for k, v in headers.items() if k != "Content-Length"})

    app = web.Application()
    app.router.add_get("/api/models/{org}/{name}/revision/{rev}", info)
    app.router.add_get("/api/models/{org}/{name}/tree/{rev}", tree)
    app.router.add_route("HEAD", "/{org}/{name}/resolve/{rev}/{path:.+}", resolve)
    app.router.add_get("/{org}/{name}/resolve/{rev}/{path:.+}", resolve, allow_head=False)
    return app


def hf_download(endpoint: str, cache: Path, repo_id: str, local_dir: Path | None = None) -> str:
    """huggingface_hub's own `snapshot_download`, in a subprocess, from ``endpoint``."""
    env = {**os.environ, "HF_ENDPOINT": endpoint.rstrip("/"), "HF_HUB_CACHE": str(cache), "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_ETAG_TIMEOUT": "10"}
    code = ("import sys; from huggingface_hub import snapshot_download; "
            "print(snapshot_download(sys.argv[1], local_dir=sys.argv[2] or None))")
    p = subprocess.run([sys.executable, "-c", code, repo_id, str(local_dir or "")], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()
