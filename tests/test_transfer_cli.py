"""push and fetch end to end with real processes: `cas serve`, nginx, two stores, checkouts."""

import json
import os
import subprocess
import time

import pytest

from casstore.store.objects import Store

from conftest import CasRunner, assert_store_consistent, make_model, publish, write_safetensors
from servers import CasServe, nginx


@pytest.fixture
def family(tmp_path):
    shared = os.urandom(3 << 20)
    t2v = make_model(tmp_path / "t2v", {"vae.pth": shared, "t5/enc.pth": 12 << 20, "config.json": b'{"m": "t2v"}'}
                     | {f"assets/{i:03d}.txt": 300 + i for i in range(40)})
    write_safetensors(t2v / "model-00001.safetensors", elems=1 << 20)
    i2v = make_model(tmp_path / "i2v", {"vae.pth": shared, "config.json": b'{"m": "i2v"}', "extra.bin": 1 << 20})
    return t2v, i2v


@pytest.mark.slow  # two servers and a dozen `cas` runs, ~6 s
def test_push_to_serve_fetch_from_serve_and_nginx(tmp_path, family, monkeypatch):
    t2v, i2v = family
    srv = CasServe(tmp_path / "remote")
    try:
        pub = CasRunner(tmp_path / "pub", tmp_path)
        pub("add", t2v, "--name", "t2v", "--version", "1.0.0")
        pub("add", i2v, "--name", "i2v", "--version", "1.0.0")
        monkeypatch.setenv("CAS_TOKEN", srv.token)
        pushed = pub.json("push", "t2v@1.0.0", "--remote", srv.url)
        assert pushed["blobs_sent"] == 44 and pushed["blobs_present"] == 0
        again = pub.json("push", "t2v@1.0.0", "--remote", srv.url)
        assert again["blobs_sent"] == 0 and again["blobs_present"] == 44
        assert pub.json("push", "i2v@1.0.0", "--remote", srv.url)["blobs_sent"] == 2  # the VAE is there already
        monkeypatch.delenv("CAS_TOKEN")

        user = CasRunner(tmp_path / "user", tmp_path)
        monkeypatch.setenv("CAS_PART_SIZE", str(1 << 20))  # exercise ranged, parallel parts
        got = user.json("fetch", "t2v", "--remote", srv.url)
        assert got["version"] == "1.0.0" and got["current"] and got["bytes_downloaded"] == got["bytes_total"]
        got2 = user.json("fetch", "i2v@1.0.0", "--remote", srv.url)
        assert got2["bytes_reused"] == 3 << 20 and got2["bytes_downloaded"] == got2["bytes_total"] - (3 << 20)
        user("checkout", "t2v", tmp_path / "co")
        assert subprocess.run(["diff", "-r", str(t2v), str(tmp_path / "co")]).returncode == 0
        assert [v["version"] for v in user.json("versions", "t2v", "--remote", srv.url)["versions"]] == ["1.0.0"]

        with nginx(tmp_path / "remote", tmp_path / "nginx") as ngx:
            third = CasRunner(tmp_path / "third", tmp_path)
            third.json("fetch", "t2v@1.0.0", "--remote", ngx.url)
            third("checkout", "t2v", tmp_path / "co3", "--link", "copy")
            assert subprocess.run(["diff", "-r", str(t2v), str(tmp_path / "co3")]).returncode == 0
            assert_store_consistent(Store.open(tmp_path / "third"))
    finally:
        srv.stop()


def test_directory_remote_via_config(tmp_path, family):
    t2v, _ = family
    a = CasRunner(tmp_path / "a", tmp_path)
    a("add", t2v, "--name", "t2v", "--version", "1.0.0")
    a("remote", "add", "nas", tmp_path / "nas", "--default")
    assert a.json("remote", "list")["remotes"][0] == {"name": "nas", "url": str(tmp_path / "nas"), "default": True, "token": False}
    a("push", "t2v@1.0.0")
    b = CasRunner(tmp_path / "b", tmp_path)
    b("fetch", "t2v@1.0.0")
    b("checkout", "t2v", tmp_path / "co")
    assert subprocess.run(["diff", "-r", str(t2v), str(tmp_path / "co")]).returncode == 0
    a("remote", "remove", "nas")
    p = b("fetch", "t2v", ok=False)
    assert p.returncode == 3 and "no remote configured" in p.stderr


def test_plain_http_refused_off_loopback(tmp_path):
    c = CasRunner(tmp_path / "s", tmp_path)
    p = c("fetch", "m", "--remote", "http://example.invalid/cas/", ok=False)
    assert p.returncode == 2 and "refusing plain HTTP" in p.stderr


def test_remote_tag_moved_is_refused(tmp_path, family):
    t2v, _ = family
    pub = publish(tmp_path, t2v, "t2v", "1.0.0", tmp_path / "nas")
    user = CasRunner(tmp_path / "user", tmp_path)
    user("fetch", "t2v@1.0.0", "--remote", tmp_path / "nas")
    (t2v / "config.json").write_bytes(b'{"changed": true}')
    pub("add", t2v, "--name", "t2v", "--version", "1.0.0", "--force")
    p = pub("push", "t2v@1.0.0", "--remote", tmp_path / "nas", ok=False)
    assert p.returncode == 5 and "already published on the remote" in p.stderr
    pub("push", "t2v@1.0.0", "--remote", tmp_path / "nas", "--force")
    store = Store.open(tmp_path / "user")
    mine = store.refs.get_tag("t2v", "1.0.0")
    # Complete here: served from the store without asking the remote, and unchanged.
    assert user.json("fetch", "t2v@1.0.0", "--remote", tmp_path / "nas")["manifest"] == str(mine)
    # Incomplete here (a blob collected): the remote is asked, and the moved tag is refused.
    blob = store.blob_path(store.get_manifest(mine).entries[0].digest)
    os.chmod(blob, 0o644)
    os.unlink(blob)
    p = user("fetch", "t2v@1.0.0", "--remote", tmp_path / "nas", ok=False)
    assert p.returncode == 5 and "moved" in p.stderr
    assert store.refs.get_tag("t2v", "1.0.0") == mine  # nothing changed silently


def _fetch_json(p):
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    return json.loads(out)


@pytest.mark.slow  # kills a process mid-download
def test_kill_9_mid_blob_then_resume(tmp_path, monkeypatch):
    big = make_model(tmp_path / "m", {"big.bin": 48 << 20})
    publish(tmp_path, big, "m", "1.0.0", tmp_path / "nas")
    with nginx(tmp_path / "nas", tmp_path / "nginx") as ngx:
        user = CasRunner(tmp_path / "user", tmp_path)
        p = subprocess.Popen(user.argv("--json", "fetch", "m@1.0.0", "--remote", ngx.url, "--limit-rate", "8M"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(3.0)
        assert p.poll() is None, "the limited fetch should still be running"
        p.kill()
        p.wait()
        store = Store.open(tmp_path / "user")
        assert store.refs.models() == [] and not list(store.iter_blobs())
        partials = list((tmp_path / "user" / "tmp" / "downloads").glob("*.part"))
        assert len(partials) == 1
        res = user.json("fetch", "m@1.0.0", "--remote", ngx.url)
        assert res["bytes_resumed"] > 4 << 20, res
        assert res["bytes_downloaded"] + res["bytes_resumed"] == 48 << 20
        assert res["bytes_downloaded"] < 0.9 * (48 << 20)
        assert_store_consistent(store)
        assert not list((tmp_path / "user" / "tmp" / "downloads").iterdir())


def test_fetch_over_https_verifies_the_certificate_on_both_http_paths(tmp_path, monkeypatch):
    """nginx with TLS: refused while the certificate is not trusted, fetched once it is (through
    SSL_CERT_FILE), the large blob's ranges through the engine's threads (`-vv` logs them)."""
    src = make_model(tmp_path / "m", {"big.bin": 12 << 20, "config.json": b"{}"})
    publish(tmp_path, src, "m", "1.0.0", tmp_path / "nas")
    with nginx(tmp_path / "nas", tmp_path / "nginx", tls=True) as ngx:
        assert ngx.url.startswith("https://")
        user = CasRunner(tmp_path / "user", tmp_path)
        p = subprocess.run(user.argv("fetch", "m@1.0.0", "--remote", ngx.url), capture_output=True, text=True,
                           env={**os.environ, "SSL_CERT_FILE": str(tmp_path / "nowhere.pem")}, timeout=120)
        assert p.returncode == 7 and "cannot use the CA bundle" in p.stderr and "nowhere.pem" in p.stderr, p.stderr
        other = tmp_path / "other-ca.pem"  # a bundle that exists but does not hold nginx's certificate
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=x",
                        "-keyout", str(tmp_path / "k.pem"), "-out", str(other)], check=True, capture_output=True)
        p = subprocess.run(user.argv("fetch", "m@1.0.0", "--remote", ngx.url), capture_output=True, text=True,
                           env={**os.environ, "SSL_CERT_FILE": str(other)}, timeout=120)
        assert p.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in p.stderr and ngx.url in p.stderr, p.stderr
        p = subprocess.run(user.argv("-vv", "fetch", "m@1.0.0", "--remote", ngx.url), capture_output=True, text=True,
                           env={**os.environ, "SSL_CERT_FILE": str(ngx.cert)}, timeout=120)
        assert p.returncode == 0, p.stderr
        assert "on cas-fetch" in p.stderr  # a ranged GET on an engine thread
        store = Store.open(tmp_path / "user")
        monkeypatch.setenv("SSL_CERT_FILE", str(other))
        assert threaded_read(ngx.url, store) is not None  # the threaded path verifies on its own too
        monkeypatch.setenv("SSL_CERT_FILE", str(ngx.cert))
        assert threaded_read(ngx.url, store) is None
    assert_store_consistent(store)
    assert user("verify").returncode == 0


def threaded_read(url, store):
    """The error of one ``read_into`` of the store's largest blob from ``url``, or None."""
    import asyncio

    from casstore.errors import RemoteError
    from casstore.remotes.base import blob
    from casstore.remotes.http import HttpRemote

    d = max(store.blob_digests(), key=lambda d: store.blob_path(d).stat().st_size)
    r = HttpRemote(url)  # its TLS context is made at its first connection, from the environment then
    try:
        got = bytearray()
        r.read_into(blob(d), 0, 1 << 20, lambda view: got.extend(view) or True)
        assert bytes(got) == store.blob_path(d).read_bytes()[: 1 << 20]
        return None
    except RemoteError as e:
        assert "CERTIFICATE_VERIFY_FAILED" in str(e) and url in str(e), e
        return e
    finally:
        asyncio.run(r.close())


def slow_ranged_server(root, rate: int):
    """Serves files under ``root`` with ranges (206), blobs bigger than 1 MiB at ``rate`` bytes/s:
    so that a fetch through the engine's threaded reads can be killed midway."""
    import asyncio

    from aiohttp import web

    from servers import ThreadedApp

    async def serve(request):
        path = root / request.match_info["tail"]
        if not path.is_file():
            return web.Response(status=404)
        data = path.read_bytes()
        rng = request.headers.get("Range")
        if not rng:
            return web.Response(body=data, headers={"Accept-Ranges": "bytes"})  # as nginx says
        a, b = rng.removeprefix("bytes=").split("-")
        a, b = int(a), (int(b) + 1 if b else len(data))
        resp = web.StreamResponse(status=206, headers={"Content-Range": f"bytes {a}-{b - 1}/{len(data)}",
                                                       "Content-Length": str(b - a)})
        await resp.prepare(request)
        step = 64 << 10
        for i in range(a, b, step):
            await resp.write(data[i:min(b, i + step)])
            if len(data) > 1 << 20:
                await asyncio.sleep(step / rate)
        return resp

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    return ThreadedApp(app)


@pytest.fixture
def sigint_reaches_children():
    """A job a shell starts in the background (`.ci/run &`) ignores SIGINT, and so does every
    process it starts: a `cas` child would then never see the Ctrl-C this test sends (it
    finished its fetch and exited 0 in a backgrounded CI rehearsal). A handler here is reset to
    the default in a child."""
    import signal

    before = signal.getsignal(signal.SIGINT)
    if before == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.slow  # interrupts a process mid-download
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGINT"])
def test_a_threaded_fetch_interrupted_mid_blob_resumes(tmp_path, sig, sigint_reaches_children):
    """As above without --limit-rate, so that the blob's ranges go through the engine's threads
    (a slow server keeps it in flight). Killed, or stopped with Ctrl-C (which must end it within
    seconds: the threads' sockets are shut, not waited out), it leaves the partial and its
    record, and the next fetch resumes from them."""
    import signal

    big = make_model(tmp_path / "m", {"big.bin": 48 << 20})
    publish(tmp_path, big, "m", "1.0.0", tmp_path / "nas")
    srv = slow_ranged_server(tmp_path / "nas", 1 << 20)
    try:
        user = CasRunner(tmp_path / "user", tmp_path)
        p = subprocess.Popen(user.argv("--json", "fetch", "m@1.0.0", "--remote", srv.url),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3.0)
        assert p.poll() is None, "the throttled fetch should still be running"
        t0 = time.monotonic()
        p.send_signal(getattr(signal, sig))
        _, err = p.communicate(timeout=20)
        assert p.returncode != 0 and time.monotonic() - t0 < 10, (p.returncode, err)
        store = Store.open(tmp_path / "user")
        assert store.refs.models() == [] and not list(store.iter_blobs())
        assert len(list((tmp_path / "user" / "tmp" / "downloads").glob("*.part"))) == 1
        res = user.json("fetch", "m@1.0.0", "--remote", srv.url)
    finally:
        srv.stop()
    assert res["bytes_resumed"] > 4 << 20, res
    assert res["bytes_downloaded"] + res["bytes_resumed"] == 48 << 20
    assert_store_consistent(store)
    assert user("verify").returncode == 0


@pytest.mark.slow  # two processes on one store
def test_two_fetches_one_store(tmp_path):
    big = make_model(tmp_path / "m", {"big.bin": 32 << 20, "small.txt": b"x"})
    publish(tmp_path, big, "m", "1.0.0", tmp_path / "nas")
    with nginx(tmp_path / "nas", tmp_path / "nginx") as ngx:
        user = CasRunner(tmp_path / "user", tmp_path)
        Store.open(tmp_path / "user")
        ps = [subprocess.Popen(user.argv("--json", "fetch", "m@1.0.0", "--remote", ngx.url, "--limit-rate", "16M"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [_fetch_json(p) for p in ps]
        total = sum(r["bytes_downloaded"] for r in results)
        assert total < 1.5 * (32 << 20), results  # the lock saved the second download
        assert_store_consistent(Store.open(tmp_path / "user"))


def test_verify_repair_refetches_corrupt_blobs(tmp_path, family):
    t2v, _ = family
    publish(tmp_path, t2v, "t2v", "1.0.0", tmp_path / "nas")
    user = CasRunner(tmp_path / "user", tmp_path)
    user("fetch", "t2v@1.0.0", "--remote", tmp_path / "nas")
    store = Store.open(tmp_path / "user")
    victim = store.blob_path(store.get_manifest(store.refs.get_tag("t2v", "1.0.0")).entries[0].digest)
    os.chmod(victim, 0o644)
    victim.write_bytes(b"\0" * victim.stat().st_size)
    p = user("verify", ok=False)
    assert p.returncode == 4
    res = user.json("verify", "--repair", "--remote", tmp_path / "nas")
    assert res["ok"] is True
    assert_store_consistent(store)


def test_project_remote_and_token_hygiene(tmp_path, family, monkeypatch):
    t2v, _ = family
    srv = CasServe(tmp_path / "remote")
    try:
        proj = tmp_path / "proj"
        proj.mkdir()
        # A committed project file names a remote; a token written there is refused outright.
        (proj / "cas.toml").write_text(f'[remotes.team]\nurl = "{srv.url}"\ntoken = "{srv.token}"\n')
        pub = CasRunner(tmp_path / "pub", proj)
        pub("add", t2v, "--name", "t2v", "--version", "1.0.0")
        p = pub("push", "t2v@1.0.0", ok=False)
        assert p.returncode == 2 and "only the user config" in p.stderr and srv.token not in p.stderr
        (proj / "cas.toml").write_text(f'[remotes.team]\nurl = "{srv.url}"\n')
        listed = pub.json("remote", "list")["remotes"]
        assert listed == [{"name": "team", "url": srv.url, "default": False, "token": False}]
        p = pub("push", "t2v@1.0.0", ok=False)
        assert p.returncode == 7 and "refused (401)" in p.stderr
        # CAS_TOKEN_TEAM is for the user's own remote named team, not for one a project names so.
        monkeypatch.setenv("CAS_TOKEN_TEAM", srv.token)
        p = pub("push", "t2v@1.0.0", ok=False)
        assert p.returncode == 7 and "refused (401)" in p.stderr
        pub("remote", "add", "team", srv.url)  # the user configures it: now it is theirs
        monkeypatch.setenv("CAS_TOKEN_TEAM", "not-the-token")
        p = pub("push", "t2v@1.0.0", ok=False)
        assert p.returncode == 7 and "403" in p.stderr and "not-the-token" not in p.stderr + p.stdout
        monkeypatch.setenv("CAS_TOKEN_TEAM", srv.token)
        pub("push", "t2v@1.0.0")
    finally:
        srv.stop()


def test_progress_bar_on_a_tty_only(tmp_path, family):
    import shutil

    t2v, _ = family
    publish(tmp_path, t2v, "t2v", "1.0.0", tmp_path / "nas")
    user = CasRunner(tmp_path / "user", tmp_path)
    plain = user("fetch", "t2v", "--remote", tmp_path / "nas", "--progress", "plain")
    assert "━" not in plain.stderr and "t2v@1.0.0:" in plain.stderr  # not a TTY: no bar
    assert shutil.which("script"), "util-linux's script gives the command a TTY"
    cmd = " ".join(f"'{a}'" for a in CasRunner(tmp_path / "user2", tmp_path).argv("fetch", "t2v", "--remote", tmp_path / "nas", "--limit-rate", "20M"))
    p = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "COLUMNS": "120", "TERM": "xterm"})
    assert p.returncode == 0, p.stdout
    assert "fetch t2v" in p.stdout and "MiB" in p.stdout  # the bar: label, bytes and rate in MiB as elsewhere


def on_a_tty(argv, **env):
    cmd = " ".join(f"'{a}'" for a in argv)
    return subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "120", "TERM": "xterm", **env})


def test_every_long_command_shows_progress_on_a_tty(tmp_path, family):
    t2v, _ = family
    me = CasRunner(tmp_path / "me", tmp_path)
    for args, label in ((("add", t2v, "--name", "t2v", "--version", "1.0.0"), "add t2v@1.0.0"),
                        (("push", "t2v@1.0.0", "--remote", tmp_path / "nas"), "push t2v@1.0.0"),
                        (("verify",), "verify")):
        p = on_a_tty(me.argv(*args))
        assert p.returncode == 0, p.stdout
        assert label in p.stdout and "MiB" in p.stdout, (label, p.stdout[-500:])
    import re

    colour = re.compile(r"\x1b\[[0-9;]*m")  # SGR: colours and styles, not cursor moves
    p = on_a_tty(CasRunner(tmp_path / "c", tmp_path).argv("fetch", "t2v", "--remote", tmp_path / "nas"))
    assert colour.search(p.stdout), "a bar in colour, so that the check below can fail"
    p = on_a_tty(CasRunner(tmp_path / "u", tmp_path).argv("fetch", "t2v", "--remote", tmp_path / "nas"), NO_COLOR="1")
    assert p.returncode == 0 and "fetch t2v" in p.stdout and not colour.search(p.stdout)  # NO_COLOR: the bar, no colour


@pytest.mark.slow  # two publishing processes
def test_racing_publishers_on_a_directory_remote_lose_no_version(tmp_path):
    """Two machines (processes) pushing different versions of one model to one NAS directory at
    the same time: the index's compare-and-swap makes the loser retry; every version is listed."""
    nas = tmp_path / "nas"
    pubs = []
    for who in ("a", "b"):
        pub = CasRunner(tmp_path / f"pub-{who}", tmp_path)
        for i in range(6):
            pub("add", make_model(tmp_path / f"{who}{i}", {"w": 2000, "c": f"{who}{i}".encode()}),
                "--name", "m", "--version", f"1.{i}.0-{who}")
        pubs.append(pub)
    script = " && ".join  # one shell loop per publisher, both at once
    procs = [subprocess.Popen(["bash", "-c", script(" ".join(f"'{x}'" for x in pub.argv("push", f"m@1.{i}.0-{who}", "--remote", nas))
                                                    for i in range(6))])
             for who, pub in zip("ab", pubs)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    listed = CasRunner(tmp_path / "reader", tmp_path).json("versions", "m", "--remote", nas)["versions"]
    assert sorted(v["version"] for v in listed) == sorted(f"1.{i}.0-{w}" for w in "ab" for i in range(6))
    # The plain index file that static servers serve has converged to the newest snapshot.
    newest = sorted((nas / "index" / "m.history").iterdir())[-1]
    assert (nas / "index" / "m.json").read_bytes() == newest.read_bytes()


@pytest.mark.slow  # two stores standing in for two machines
def test_the_same_tree_added_on_two_machines_is_one_manifest(tmp_path, family):
    t2v, _ = family
    a, b = CasRunner(tmp_path / "a", tmp_path), CasRunner(tmp_path / "b", tmp_path)
    da = a.json("add", t2v, "--name", "t2v", "--version", "1.0.0")["manifest"]
    time.sleep(1.1)  # another second on another machine
    db = b.json("add", t2v, "--name", "t2v", "--version", "1.0.0")["manifest"]
    assert da == db
    a("push", "t2v@1.0.0", "--remote", tmp_path / "nas")
    b("push", "t2v@1.0.0", "--remote", tmp_path / "nas")  # a no-op, not a conflict
    [row] = a.json("versions", "t2v", "--remote", tmp_path / "nas")["versions"]
    assert row["manifest"] == da and row["created"] > 0  # the index says when it was published
    c = CasRunner(tmp_path / "c", tmp_path)
    c("add", t2v, "--name", "t2v", "--version", "1.0.0", "--note", "other notes")
    p = c("push", "t2v@1.0.0", "--remote", tmp_path / "nas", ok=False)
    assert p.returncode == 5 and "already published" in p.stderr


def test_progress_for_ci_logs_and_machines(tmp_path):
    """Without a terminal: a plain line every CAS_PROGRESS_INTERVAL seconds and at the end;
    --progress json: NDJSON events on stderr, the result still alone on stdout."""
    import json as _json
    import os as _os

    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("add", make_model(tmp_path / "src", {"w.bin": 3 << 20}), "--name", "m", "--version", "1")
    pub("push", "m@1", "--remote", tmp_path / "nas")
    user = CasRunner(tmp_path / "user", tmp_path)
    _os.environ["CAS_PROGRESS_INTERVAL"] = "0"
    try:
        p = user("fetch", "m@1", "--remote", tmp_path / "nas")
    finally:
        del _os.environ["CAS_PROGRESS_INTERVAL"]
    lines = [line for line in p.stderr.splitlines() if line.startswith("fetch m@1:")]
    assert lines[-1].endswith(", done") and "3.0 MiB of 3.0 MiB (100 %)" in lines[-1] and len(lines) >= 2
    quick = CasRunner(tmp_path / "quick", tmp_path)("fetch", "m@1", "--remote", tmp_path / "nas")
    assert "fetch m@1:" not in quick.stderr  # over within the first 5 s: only its summary line
    p = user("--json", "--progress", "json", "fetch", "m@1", "--remote", tmp_path / "nas")
    events = [_json.loads(line) for line in p.stderr.splitlines()]  # every stderr line is an event
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and "end" in kinds and kinds[-1] == "message"  # the summary, as an event
    assert _json.loads(p.stdout)["version"] == "1"  # stdout: the result only
    other = CasRunner(tmp_path / "other", tmp_path)
    p = other("fetch", "m@1", "--remote", tmp_path / "nas", "--progress", "json")
    events = [_json.loads(line) for line in p.stderr.splitlines()]  # every stderr line is an event
    assert any(e["event"] == "log" and "verified" in e["message"] for e in events), events
    [end] = [e for e in events if e["event"] == "end"]
    assert end["done"] == end["total"] == 3 << 20
    q = other("fetch", "m@1", "--remote", tmp_path / "nas", "-q")
    assert q.stderr == ""


def test_fetch_print_path_for_scripts_and_sync_limit_rate(tmp_path):
    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("add", make_model(tmp_path / "src", {"config.json": b'{"a": 1}'}), "--name", "m", "--version", "1")
    pub("push", "m@1", "--remote", tmp_path / "nas")
    user = CasRunner(tmp_path / "user", tmp_path)
    out = user("fetch", "m@1", "--remote", tmp_path / "nas", "--print-path").stdout.strip()  # DIR=$(cas fetch …)
    assert out == user("path", "m@1").stdout.strip() and open(os.path.join(out, "config.json")).read() == '{"a": 1}'
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "cas.toml").write_text(f'remote = "{tmp_path / "nas"}"\n[models.m]\nversion = "1"\n')
    me = CasRunner(tmp_path / "me", proj)
    p = me("sync", "--limit-rate", "lots", ok=False)
    assert p.returncode == 2 and "lots" in p.stderr
    assert me.json("sync", "--limit-rate", "10M")["models"] == {"m": "1"}


def test_fetch_dry_run_says_what_it_would_download_and_downloads_nothing(tmp_path):
    pub = CasRunner(tmp_path / "pub", tmp_path)
    shared = os.urandom(4000)
    pub("add", make_model(tmp_path / "a", {"shared.bin": shared, "a.bin": 3000}), "--name", "m", "--version", "1")
    pub("add", make_model(tmp_path / "b", {"shared.bin": shared, "b.bin": 5000}), "--name", "m", "--version", "2")
    for v in ("1", "2"):
        pub("push", f"m@{v}", "--remote", tmp_path / "nas")
    user = CasRunner(tmp_path / "user", tmp_path)
    user("fetch", "m@1", "--remote", tmp_path / "nas")
    before = sorted(p.name for p in (tmp_path / "user" / "blobs").rglob("*") if p.is_file())
    plan = user.json("fetch", "m@2", "--remote", tmp_path / "nas", "--dry-run")
    assert (plan["files"], plan["bytes"], plan["bytes_here"], plan["blobs_missing"], plan["bytes_missing"]) == \
        (2, 9000, 4000, 1, 5000)
    assert sorted(p.name for p in (tmp_path / "user" / "blobs").rglob("*") if p.is_file()) == before
    assert user("path", "m@2", ok=False).returncode == 3  # nothing recorded
    assert user.json("fetch", "m@2", "--remote", tmp_path / "nas")["bytes_downloaded"] == 5000  # what it said


def test_a_warning_under_the_progress_bar_gets_a_line_of_its_own(tmp_path, monkeypatch):
    """Before: the bar was drawn on stdout and a warning went to the stderr stream logging held,
    so on a terminal it was printed after the bar's last frame ("… 0/? bytes warning: …")."""
    import pty
    import re

    from casstore.model.keys import chunks_key

    monkeypatch.setenv("CAS_DELTA_MIN_SIZE", str(1 << 20))
    pub = CasRunner(tmp_path / "pub", tmp_path)
    one = os.urandom(4 << 20)
    two = one[: 2 << 20] + os.urandom(2 << 20)
    for v, data in (("1", one), ("2", two)):
        pub("add", make_model(tmp_path / f"src{v}", {"w.bin": data}), "--name", "m", "--version", v)
        pub("push", f"m@{v}", "--remote", tmp_path / "nas")
    user = CasRunner(tmp_path / "user", tmp_path)
    user("fetch", "m@1", "--remote", tmp_path / "nas")
    blob = Store.open(tmp_path / "pub").get_manifest(Store.open(tmp_path / "pub").refs.get_tag("m", "2")).entries[0]
    bad = tmp_path / "nas" / chunks_key(blob.digest)
    os.chmod(bad, 0o644)
    bad.write_bytes(b"not a chunk map")  # a warning in the middle of the fetch: "not using the chunk map"
    master, slave = pty.openpty()
    with nginx(tmp_path / "nas", tmp_path / "nginx") as web_server:  # streamed, so the map is read
        p = subprocess.Popen(user.argv("fetch", "m@2", "--remote", web_server.url, "--progress", "bar"), cwd=tmp_path,
                             stdout=slave, stderr=slave, env={**os.environ, "COLUMNS": "100", "TERM": "xterm"})
        os.close(slave)
        err = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            err += chunk
        p.wait(timeout=60)
    os.close(master)
    assert p.returncode == 0, err
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", err.decode(errors="replace"))  # one terminal, as a user's
    lines = [seg for seg in re.split(r"[\r\n]", text) if seg.strip()]
    (line,) = [seg for seg in lines if "not using the chunk map" in seg]
    assert line.startswith("warning: not using the chunk map"), repr(line)
    assert any(seg.startswith("blake3:") for seg in lines), lines  # the result, on a line of its own


@pytest.mark.slow  # a limited upload takes its time (~3 s)
def test_push_limit_rate_to_cas_serve(tmp_path, monkeypatch):
    src = make_model(tmp_path / "m", {"big.bin": 12 << 20, "config.json": b"{}"})
    srv = CasServe(tmp_path / "remote")
    try:
        pub = CasRunner(tmp_path / "pub", tmp_path)
        pub("add", src, "--name", "m", "--version", "1")
        monkeypatch.setenv("CAS_TOKEN", srv.token)
        assert pub("push", "m@1", "--remote", srv.url, "--limit-rate", "nonsense", ok=False).returncode == 2
        p = subprocess.Popen(pub.argv("--json", "push", "m@1", "--remote", srv.url, "--limit-rate", "4M"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1.5)  # 12 MiB at 4 MiB/s: about 3 s; unlimited, loopback takes well under 0.5 s
        assert p.poll() is None, "the limited push should still be running"
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert json.loads(out)["bytes_sent"] == (12 << 20) + 2
        monkeypatch.delenv("CAS_TOKEN")
        user = CasRunner(tmp_path / "user", tmp_path)
        user("fetch", "m@1", "--remote", srv.url)
        assert user("verify").returncode == 0
    finally:
        srv.stop()
