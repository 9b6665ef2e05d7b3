"""A cloned project cannot send the user's credentials elsewhere (docs/security.md): tokens and
``insecure`` bind to the URLs the user configured, and project discovery stops at the repository
root and at directories another user owns. A real listener on loopback records every request's
``Authorization`` header."""

import os
import subprocess

import pytest
from aiohttp import web

from conftest import CasRunner
from servers import ThreadedApp

TOKEN = "user-secret-token"


@pytest.fixture
def listener():
    seen: list[tuple[str, str | None]] = []

    async def handle(request):
        seen.append((request.path, request.headers.get("Authorization")))
        # reads need a token here: a client that has one sends it again with it (reads carry none first)
        return web.Response(status=404 if request.headers.get("Authorization") else 401)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = ThreadedApp(app)
    server.seen = seen
    yield server
    server.stop()


def user_config(tmp_path, team_url: str) -> None:
    """The user's own config (the isolated CAS_CONFIG of conftest)."""
    with open(os.environ["CAS_CONFIG"], "w") as f:
        f.write(f'default_remote = "team"\n[remotes.team]\nurl = "{team_url}"\ntoken = "{TOKEN}"\n')


def project(tmp_path, toml: str):
    repo = tmp_path / "clone"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "cas.toml").write_text(toml + '\n[models.m]\nversion = "1.0.0"\n')
    return repo, CasRunner(tmp_path / "store", repo)


def test_a_project_cannot_rebind_the_users_remote(tmp_path, listener):
    user_config(tmp_path, "https://models.example.com/cas/")
    repo, cas = project(tmp_path, f'[remotes.team]\nurl = "{listener.url}"')
    for cmd in (["sync"], ["lock"], ["fetch", "m@1.0.0", "--remote", "team"]):
        p = cas(*cmd, ok=False)
        assert p.returncode == 2, p.stderr
        assert "cannot rebind your remote" in p.stderr and str(repo / "cas.toml") in p.stderr
        assert os.environ["CAS_CONFIG"] in p.stderr
    assert listener.seen == []  # before: 8 requests, each with the user's token


def test_a_project_url_gets_no_cas_token(tmp_path, listener, monkeypatch):
    user_config(tmp_path, "https://models.example.com/cas/")
    monkeypatch.setenv("CAS_TOKEN", TOKEN)
    _, cas = project(tmp_path, f'remote = "{listener.url}"\n[remotes.extra]\nurl = "{listener.url}x/"')
    cas("sync", ok=False)
    cas("lock", "--remote", "extra", ok=False)
    assert listener.seen and all(auth is None for _, auth in listener.seen), listener.seen
    # The same URL named by the user on the command line does get CAS_TOKEN.
    listener.seen.clear()
    cas("fetch", "m@1.0.0", "--remote", listener.url, ok=False)
    assert listener.seen and {auth for _, auth in listener.seen} == {None, f"Bearer {TOKEN}"}, listener.seen


def test_a_project_remote_at_the_users_url_gets_the_users_token(tmp_path, listener):
    user_config(tmp_path, listener.url)
    _, cas = project(tmp_path, f'remote = "{listener.url}"')
    cas("sync", ok=False)
    assert listener.seen and {auth for _, auth in listener.seen} == {None, f"Bearer {TOKEN}"}, listener.seen


@pytest.mark.parametrize("option", ['insecure = true', f'token = "{TOKEN}"'])
def test_a_project_cannot_set_insecure_or_a_token(tmp_path, option):
    user_config(tmp_path, "https://models.example.com/cas/")
    _, cas = project(tmp_path, f'[remotes.mirror]\nurl = "http://example.com/cas/"\n{option}')
    p = cas("sync", ok=False)
    assert p.returncode == 2 and "only the user config" in p.stderr, p.stderr


def test_discovery_stops_at_the_repository_root(tmp_path, listener):
    user_config(tmp_path, "https://models.example.com/cas/")
    (tmp_path / "cas.toml").write_text(f'remote = "{listener.url}"\n[models.m]\nversion = "1.0.0"\n')
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "sub").mkdir()
    p = CasRunner(tmp_path / "store", repo / "sub")("sync", ok=False)
    assert p.returncode == 3 and "cas.toml" in p.stderr, p.stderr  # no project here
    assert listener.seen == []


def test_discovery_skips_a_directory_another_user_owns(tmp_path, listener, users):
    """A cas.toml another account wrote in a shared parent (/tmp, a team directory) chooses nothing."""
    import pwd

    user_config(tmp_path, "https://models.example.com/cas/")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "cas.toml").write_text(f'remote = "{listener.url}"\n[models.m]\nversion = "1.0.0"\n')
    os.chown(shared, pwd.getpwnam(users[0]).pw_uid, -1)
    mine = shared / "mine"
    mine.mkdir()
    os.chown(mine, os.geteuid(), -1)
    cas = CasRunner(tmp_path / "store", mine)
    p = cas("sync", ok=False)
    assert p.returncode == 3 and listener.seen == [], p.stderr
    # Listed as safe by the user: used.
    env = {**os.environ, "CAS_SAFE_DIRECTORIES": str(shared)}
    p = subprocess.run(cas.argv("sync"), cwd=mine, capture_output=True, text=True, env=env, timeout=60)
    assert listener.seen, p.stderr
