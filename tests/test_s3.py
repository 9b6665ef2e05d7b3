"""s3:// remotes against a real S3 server process on loopback (moto's standalone server, or SeaweedFS with CAS_TEST_S3=seaweedfs): the remote
contract, push/fetch/update/sync end to end, two publishers racing, multipart uploads and their
clean-up, a server that ignores conditional writes, `cas gc --remote`, and S3's failure modes
(SlowDown bursts, a reset mid-part, wrong bytes) injected by a proxy in front of the server."""

import json
import os
import pathlib
import subprocess

import pytest
from aiohttp import web

from casstore.errors import Conflict, RemoteError, RemoteStatusError
from casstore.remotes.s3 import ConditionalWritesUnsupported, S3Remote
from casstore.store.objects import Store
from casstore.testing.remote_contract import read_all, run

from conftest import CasRunner, assert_store_consistent, make_model
from servers import Moto, S3Proxy, SeaweedFS

MiB = 1 << 20


@pytest.fixture(scope="module")
def s3server(tmp_path_factory):
    """The S3 server these tests run against: moto, or SeaweedFS with CAS_TEST_S3=seaweedfs (a Go
    server that checks signatures; `.ci/run` runs this file against both)."""
    which = os.environ.get("CAS_TEST_S3", "moto")
    if which not in ("moto", "seaweedfs"):
        raise RuntimeError(f"CAS_TEST_S3={which!r}: expected moto or seaweedfs")
    server = Moto() if which == "moto" else SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@pytest.fixture
def s3(s3server, monkeypatch):
    """A fresh bucket, and the AWS environment every `cas` child process inherits."""
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3server.url)
    return s3server, s3server.bucket()


@pytest.mark.slow  # the whole cycle through s3server, ~8 s: the plain suite stays under 5 minutes
def test_push_fetch_update_and_sync_through_a_bucket(s3, tmp_path):
    s3server, bucket = s3
    url = f"s3://{bucket}/cas"
    src = make_model(tmp_path / "v1", {"model.safetensors": 3 * MiB, "config.json": b'{"v": 1}'})
    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("add", src, "--name", "m", "--version", "1.0.0")
    pub("remote", "add", "bucket", url, "--endpoint-url", s3server.url, "--default")
    assert pub.json("remote", "list")["remotes"][0] == {"name": "bucket", "url": url, "default": True, "token": False,
                                                        "endpoint_url": s3server.url}
    out = pub.json("push", "m@1.0.0")
    assert out["blobs_sent"] == 2
    keys = {o["Key"] for o in s3server.client().list_objects_v2(Bucket=bucket)["Contents"]}
    assert "cas/index/m.json" in keys and "cas/casstore-remote.json" in keys
    assert any(k.startswith("cas/blobs/") for k in keys) and not any(k.startswith("cas/tmp/") for k in keys)

    user = CasRunner(tmp_path / "user", tmp_path)
    user("remote", "add", "bucket", url, "--endpoint-url", s3server.url, "--default")
    assert user.json("fetch", "m")["version"] == "1.0.0"
    (src / "config.json").write_bytes(b'{"v": 2}')
    pub("add", src, "--name", "m", "--version", "1.1.0")
    again = pub.json("push", "m@1.1.0")
    assert again["blobs_sent"] == 1 and again["blobs_present"] == 1  # only what the bucket lacks
    out = user.json("update", "m")
    assert out["to"] == "1.1.0" and out["switched"]
    assert user.json("list", "m")["models"][0]["versions"][1]["current"]
    assert user("verify").returncode == 0

    project = tmp_path / "proj"
    project.mkdir()
    (project / "cas.toml").write_text(f'remote = "{url}"\n[models.m]\nversion = "^1.0"\n')
    proj = CasRunner(tmp_path / "proj-store", project)
    proj("sync")
    assert (project / "models" / "m" / "config.json").read_bytes() == b'{"v": 2}'
    assert_store_consistent(Store.open(tmp_path / "user"))


@pytest.mark.slow  # an S3 server and six `cas` runs
def test_delta_update_through_a_bucket(s3, tmp_path, monkeypatch):
    """Chunk maps go up with the blobs and come back as ranged GETs of only what changed."""
    from casstore.testing import modelfiles

    s3server, bucket = s3
    url = f"s3://{bucket}/delta"
    monkeypatch.setenv("CAS_DELTA_MIN_SIZE", str(MiB))
    old, new, changed = modelfiles.release_pair(tmp_path / "src", tensors=12, tensor_size=MiB, inserted_size=MiB,
                                                shards=1)
    pub = CasRunner(tmp_path / "pub", tmp_path)
    for v, src in (("1.0.0", old), ("1.1.0", new)):
        pub("add", src, "--name", "m", "--version", v)
        assert pub.json("push", f"m@{v}", "--remote", url)["maps_sent"] == 1
    keys = {o["Key"] for o in s3server.client().list_objects_v2(Bucket=bucket, Prefix="delta/chunks/")["Contents"]}
    assert len(keys) == 2
    user = CasRunner(tmp_path / "user", tmp_path)
    user("fetch", "m@1.0.0", "--remote", url)
    out = user.json("update", "m", "--remote", url)
    assert out["bytes_from_local"] == 9 * MiB and out["bytes_downloaded"] <= changed + MiB
    assert user("verify").returncode == 0


@pytest.mark.slow  # two publishing processes, eight pushes
def test_two_publishers_racing_on_one_bucket_lose_no_version(s3, tmp_path):
    s3server, bucket = s3
    url = f"s3://{bucket}/race"
    runners = []
    for i in range(2):
        cas = CasRunner(tmp_path / f"pub{i}", tmp_path)
        for j in range(4):
            src = make_model(tmp_path / f"src{i}{j}", {"w.bin": 200_000, "c.json": f"{i}.{j}".encode()})
            cas("add", src, "--name", "m", "--version", f"{i + 1}.{j}.0")
        runners.append(cas)
    procs = []
    for i, cas in enumerate(runners):
        script = " && ".join(" ".join(cas.argv("push", f"m@{i + 1}.{j}.0", "--remote", url)) for j in range(4))
        procs.append(subprocess.Popen(["sh", "-c", script], stderr=subprocess.PIPE, text=True))
    for p in procs:
        assert p.wait(120) == 0, p.stderr.read()
    index = json.loads(s3server.client().get_object(Bucket=bucket, Key="race/index/m.json")["Body"].read())
    assert sorted(index["versions"]) == sorted(f"{i}.{j}.0" for i in (1, 2) for j in range(4))


def test_large_blobs_go_up_in_checked_parts_and_a_failed_upload_is_aborted(s3, tmp_path):
    """The abort is tried again if it fails: it was one request whose error was dropped, so a
    connection the cancelled parts left closing, or a busy server, left the parts stored."""
    s3server, bucket = s3
    data = os.urandom(12 * MiB + 3)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    from casstore.model.digest import Digest
    from casstore.remotes.base import blob

    d = Digest.of_bytes(data)
    proxy_fail = {"on": True}

    aborts = []

    async def fail_second_part(request, n):
        if proxy_fail["on"] and "partNumber=2" in request.path_qs:
            return web.Response(status=500, text="<Error><Code>InternalError</Code></Error>")
        if request.method == "DELETE" and "uploadId=" in request.path_qs and "/blobs/" in request.path:
            aborts.append(n)
            if len(aborts) == 1:  # the first abort refused
                return web.Response(status=503, text="<Error><Code>SlowDown</Code></Error>")
        return None

    proxy = S3Proxy(s3server.url, fail_second_part)
    try:
        r = S3Remote(f"s3://{bucket}/mp", endpoint_url=proxy.url)
        r.part_size = 5 * MiB

        async def go():
            async with r:
                with pytest.raises(RemoteStatusError):
                    await r.write(blob(d, len(data)), src)
                assert await r.stale_uploads(older_than=1e12) == [] and len(aborts) == 2  # aborted, not orphaned
                assert await r.stat(blob(d)) is None
                proxy_fail["on"] = False
                await r.write(blob(d, len(data)), src)
                assert await r.stat(blob(d)) == len(data)
                assert await read_all(r, blob(d, len(data))) == data

        run(go())
        parts = [q for m, q, h in proxy.log if m == "PUT" and "partNumber=" in q]
        assert len(parts) >= 3
        puts = [h for m, q, h in proxy.log if m == "PUT" and "partNumber=" in q and "/blobs/" in q]  # not the probe's
        assert all("x-amz-checksum-crc32" in {k.lower() for k in h} for h in puts)  # the server checks each part
        completes = [h for m, q, h in proxy.log if m == "POST" and "uploadId=" in q]
        assert completes and all(h.get("If-None-Match") == "*" for h in completes)
        head = s3server.client().head_object(Bucket=bucket, Key=f"mp/blobs/{d.hex[:2]}/{d.hex}")
        assert head["ETag"].endswith('-3"')
    finally:
        proxy.stop()


@pytest.mark.parametrize("drop", [("if-none-match", "if-match"), ("if-match",), ("if-none-match",)],
                         ids=["both", "if-match", "if-none-match"])
def test_a_server_that_ignores_conditional_writes_is_refused(s3, tmp_path, drop):
    """rclone's `serve s3` ignores If-None-Match and If-Match; simulated by a proxy that drops them
    before the server sees them. A server that ignores only If-Match was accepted before (two racing
    publishers then lost a version from the index, every push exiting 0)."""
    s3server, bucket = s3

    async def forward_without_conditions(request, n):
        return await proxy.forward(request, drop=drop)

    proxy = S3Proxy(s3server.url, forward_without_conditions)
    try:
        cas = CasRunner(tmp_path / "pub", tmp_path)
        cas("add", make_model(tmp_path / "src", {"w.bin": 1000}), "--name", "m", "--version", "1.0.0")
        p = subprocess.run(cas.argv("push", "m@1.0.0", "--remote", f"s3://{bucket}/x"), capture_output=True,
                           text=True, env={**os.environ, "AWS_ENDPOINT_URL": proxy.url}, timeout=120)
        assert p.returncode == 7 and "ignores conditional writes" in p.stderr, p.stderr
        keys = [o["Key"] for o in s3server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert keys == []  # nothing was published, and the probe cleaned up after itself

        async def direct():
            async with S3Remote(f"s3://{bucket}/x", endpoint_url=proxy.url) as r:
                with pytest.raises(ConditionalWritesUnsupported, match="If-"):
                    await r.write_index("m", b"{}", None)

        run(direct())
    finally:
        proxy.stop()


def test_if_match_is_sent_as_the_server_wants_it(s3, tmp_path):
    """Ceph RGW refuses If-Match with the quoted ETag (only a model's first version could ever be
    published there); the probe learns to send it bare. Simulated by a proxy that answers 412 to a
    quoted If-Match and passes a bare one on to the server quoted."""
    from aiohttp import web

    s3server, bucket = s3

    async def rgw_like(request, n):
        tag = request.headers.get("If-Match")
        if tag is None:
            return None
        if tag.startswith('"'):
            return web.Response(status=412, text="<Error><Code>PreconditionFailed</Code></Error>")
        return await proxy.forward(request, replace={"If-Match": f'"{tag}"'})

    proxy = S3Proxy(s3server.url, rgw_like)
    try:
        env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url}
        cas = CasRunner(tmp_path / "pub", tmp_path)
        for v in ("1.0.0", "1.1.0"):
            cas("add", make_model(tmp_path / v, {"w.bin": 1000}), "--name", "m", "--version", v)
            p = subprocess.run(cas.argv("push", f"m@{v}", "--remote", f"s3://{bucket}/rgw"), capture_output=True,
                               text=True, env=env, timeout=120)
            assert p.returncode == 0, p.stderr
        p = subprocess.run(cas.argv("--json", "versions", "m", "--remote", f"s3://{bucket}/rgw"), capture_output=True,
                           text=True, env=env, timeout=120)
        assert p.returncode == 0 and {"1.0.0", "1.1.0"} <= set(json.dumps(json.loads(p.stdout)).split('"')), p.stdout
    finally:
        proxy.stop()


@pytest.mark.slow  # fault injection, as tests/test_faults.py
def test_s3_failure_modes_are_retried_or_refused(s3, tmp_path):
    s3server, bucket = s3
    url = f"s3://{bucket}/hostile"
    src = make_model(tmp_path / "src", {"w.bin": 6 * MiB + 11, "c.json": b"{}"})
    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("add", src, "--name", "m", "--version", "1.0.0")
    pub("push", "m@1.0.0", "--remote", url)
    mode = {"kind": None, "left": 0}

    async def fault(request, n):
        if request.method != "GET" or "/blobs/" not in request.path or mode["left"] <= 0:
            return None
        mode["left"] -= 1
        if mode["kind"] == "slowdown":
            return web.Response(status=503, headers={"Retry-After": "0"},
                                text="<Error><Code>SlowDown</Code><Message>Reduce your request rate</Message></Error>")
        return None

    proxy = S3Proxy(s3server.url, fault)
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url, "CAS_RETRY_BACKOFF": "0.01", "CAS_PART_SIZE": str(2 * MiB)}
    try:
        user = CasRunner(tmp_path / "user", tmp_path)
        mode.update(kind="slowdown", left=6)
        p = subprocess.run(user.argv("--json", "fetch", "m@1.0.0", "--remote", url), capture_output=True, text=True,
                           env=env, timeout=120)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["retries"] >= 6 and mode["left"] == 0
        assert user("verify").returncode == 0
    finally:
        proxy.stop()


@pytest.mark.slow  # fault injection, as tests/test_faults.py
def test_reset_mid_part_and_wrong_bytes(s3, tmp_path):
    s3server, bucket = s3
    url = f"s3://{bucket}/hostile2"
    src = make_model(tmp_path / "src", {"w.bin": 3 * MiB})
    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("add", src, "--name", "m", "--version", "1.0.0")
    pub("push", "m@1.0.0", "--remote", url)
    mode = {"kind": "reset", "left": 1}

    async def fault(request, n):
        if request.method != "GET" or "/blobs/" not in request.path or mode["left"] <= 0:
            return None
        mode["left"] -= 1
        status, headers, got = await proxy.upstream_answer(request)
        body, ctype = bytearray(got), headers.get("Content-Range")
        resp = web.StreamResponse(status=status, headers={"Content-Length": str(len(body)),
                                                          **({"Content-Range": ctype} if ctype else {})})
        await resp.prepare(request)
        if mode["kind"] == "reset":
            await resp.write(bytes(body[: len(body) // 2]))
            request.transport.close()
            return resp
        body[len(body) // 2] ^= 0xFF  # wrong bytes, right length
        await resp.write(bytes(body))
        return resp

    proxy = S3Proxy(s3server.url, fault)
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url, "CAS_RETRY_BACKOFF": "0.01"}
    try:
        user = CasRunner(tmp_path / "user", tmp_path)
        p = subprocess.run(user.argv("fetch", "m@1.0.0", "--remote", url), capture_output=True, text=True, env=env,
                           timeout=120)
        assert p.returncode == 0, p.stderr  # the reset part was fetched again
        mode.update(kind="wrong", left=1)
        other = CasRunner(tmp_path / "other", tmp_path)
        p = subprocess.run(other.argv("fetch", "m@1.0.0", "--remote", url), capture_output=True, text=True, env=env,
                           timeout=120)
        assert p.returncode == 4 and "hash to" in p.stderr, p.stderr  # never published
        store = Store.open(tmp_path / "other")
        assert list(store.iter_blobs()) == []
        p = subprocess.run(other.argv("fetch", "m@1.0.0", "--remote", url), capture_output=True, text=True, env=env,
                           timeout=120)
        assert p.returncode == 0, p.stderr
        assert_store_consistent(store)
    finally:
        proxy.stop()


@pytest.mark.slow  # ~6 s of S3 round trips
def test_gc_remote_plans_then_deletes_only_what_no_version_uses(s3, tmp_path):
    s3server, bucket = s3
    url = f"s3://{bucket}/gc"
    cas = CasRunner(tmp_path / "pub", tmp_path)
    cas("add", make_model(tmp_path / "a", {"w.bin": 100_000}), "--name", "m", "--version", "1.0.0")
    cas("push", "m@1.0.0", "--remote", url)
    c = s3server.client()
    orphan = "gc/blobs/00/" + "0" * 64
    c.put_object(Bucket=bucket, Key=orphan, Body=b"left by a publisher that died")
    plan = cas.json("gc", "--remote", url, "--grace", "0")
    assert plan["dry_run"] and plan["plan"]["delete"] == [orphan.removeprefix("gc/")]
    assert c.head_object(Bucket=bucket, Key=orphan)  # a dry run deletes nothing
    young = cas.json("gc", "--remote", url)  # the default grace period (an hour) spares it
    assert young["plan"]["delete"] == [] and young["plan"]["young_spared"] == 1
    done = cas.json("gc", "--remote", url, "--grace", "0", "--yes")
    assert done["result"]["deleted"] == 1
    with pytest.raises(c.exceptions.ClientError):
        c.head_object(Bucket=bucket, Key=orphan)
    user = CasRunner(tmp_path / "user", tmp_path)
    assert user.json("fetch", "m@1.0.0", "--remote", url)["version"] == "1.0.0"


def test_doctor_remote_aborts_stale_multipart_uploads(s3, tmp_path):
    s3server, bucket = s3
    c = s3server.client()
    c.create_multipart_upload(Bucket=bucket, Key="d/blobs/ab/" + "a" * 64)
    cas = CasRunner(tmp_path / "s", tmp_path)
    out = cas.json("doctor", "--remote", f"s3://{bucket}/d", "--stale-after", "0", ok=False)
    assert [f["kind"] for f in out["findings"]] == ["stale-upload"] and "aborted" in out["findings"][0]["detail"]
    assert c.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_credentials_are_never_printed(s3, tmp_path):
    s3server, bucket = s3
    cas = CasRunner(tmp_path / "pub", tmp_path)
    cas("add", make_model(tmp_path / "a", {"w.bin": 1000}), "--name", "m", "--version", "1.0.0")
    cas("remote", "add", "bucket", f"s3://{bucket}/c", "--endpoint-url", s3server.url, "--region", "us-east-1")
    outputs = [cas("-vv", "push", "m@1.0.0", "--remote", "bucket"),
               cas("-vv", "fetch", "m@9.9.9", "--remote", "bucket", ok=False),
               cas("-vv", "fetch", "m@1.0.0", "--remote", "s3://no-such-bucket-here/c", ok=False)]
    for p in outputs:
        assert Moto.SECRET not in p.stdout + p.stderr and Moto.KEY not in p.stdout + p.stderr
    config = pathlib.Path(os.environ["CAS_CONFIG"])
    assert "s3://" in config.read_text()  # the remote is saved; its credentials are not
    written = [config, *(f for f in (tmp_path / "pub").rglob("*") if f.is_file())]
    assert all(Moto.SECRET.encode() not in f.read_bytes() and Moto.KEY.encode() not in f.read_bytes() for f in written)


def test_index_compare_and_swap_uses_etags(s3):
    s3server, bucket = s3

    async def go():
        async with S3Remote(f"s3://{bucket}/cas") as r:
            await r.write_index("m", b'{"a": 1}', None)
            data, tag = await r.read_index("m")
            with pytest.raises(Conflict):
                await r.write_index("m", b'{"a": 2}', None)
            await r.write_index("m", b'{"a": 2}', tag)
            with pytest.raises(Conflict):
                await r.write_index("m", b'{"a": 3}', tag)  # the tag moved on
            assert (await r.read_index("m"))[0] == b'{"a": 2}'

    run(go())



def test_missing_costs_a_head_per_key_never_a_listing_of_the_bucket(s3):
    """A push listed the whole ``blobs/`` prefix to find what was missing, growing with the bucket
    (11.85 s at 100k blobs), not with the version."""
    s3server, bucket = s3
    from casstore.model.digest import Digest
    from casstore.remotes.base import blob

    datas = [os.urandom(100 + i) for i in range(150)]
    keys = [blob(Digest.of_bytes(d), len(d)) for d in datas]
    proxy = S3Proxy(s3server.url)

    async def go():
        async with S3Remote(f"s3://{bucket}/m", endpoint_url=proxy.url) as r:
            for k, d in zip(keys[:5], datas[:5]):
                await r.write(k, d)
            proxy.log.clear()
            wrong_size = blob(keys[0].digest, 1)
            return await r.missing([*keys, wrong_size])

    try:
        assert run(go()) == set(keys[5:]) | {blob(keys[0].digest, 1)}
        assert [q for m, q, _ in proxy.log if m == "GET"] == []  # no listing
        assert len([q for m, q, _ in proxy.log if m == "HEAD"]) == len(keys) + 1
    finally:
        proxy.stop()


def test_no_credentials_is_a_clear_refusal(s3, tmp_path):
    s3server, bucket = s3
    cas = CasRunner(tmp_path / "s", tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ACCESS") and not k.startswith("AWS_SECRET")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true")
    p = subprocess.run(cas.argv("fetch", "m@1.0.0", "--remote", f"s3://{bucket}/x"), capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.returncode == 7 and "no AWS credentials found" in p.stderr, p.stderr


def test_readers_fetch_the_bucket_through_plain_http(s3, tmp_path):
    """The keys are the directory remote's, so the bucket's public URL (here s3server's path-style
    URL; in production a CDN, nginx or S3 website endpoint) is an ordinary HTTP remote."""
    s3server, bucket = s3
    src = make_model(tmp_path / "v1", {"model.safetensors": 2 * MiB + 5, "config.json": b"{}"})
    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("add", src, "--name", "m", "--version", "1.0.0")
    pub("push", "m@1.0.0", "--remote", f"s3://{bucket}/cas")
    public_read = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                                           "Resource": f"arn:aws:s3:::{bucket}/cas/*"}]}
    s3server.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(public_read))  # readers need only GetObject
    reader = CasRunner(tmp_path / "reader", tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # a reader without credentials
    p = subprocess.run(reader.argv("--json", "fetch", "m", "--remote", f"{s3server.url}/{bucket}/cas/"),
                       capture_output=True, text=True, env={**env, "CAS_PART_SIZE": str(MiB)}, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["version"] == "1.0.0"
    assert reader("verify").returncode == 0


def _answer(status, headers, body, drop=(), replace=None):
    from aiohttp import web

    skip = ("transfer-encoding", "connection", "content-encoding", "content-length", *drop)
    h = {k: v for k, v in headers.items() if k.lower() not in skip} | (replace or {})
    return web.Response(status=status, body=body, headers=h)


@pytest.mark.parametrize("etag", ["kept", "wrong"])
def test_parts_answered_without_a_checksum_are_checked_by_their_etag(s3, tmp_path, etag):
    """Ceph RGW answers UploadPart without ChecksumCRC32: every blob over the part size crashed the
    push with KeyError 'ChecksumCRC32' (a traceback, small blobs left behind). Simulated by a proxy
    that strips it; with ``wrong``, the proxy also says the part was stored as other bytes."""
    s3server, bucket = s3
    data = os.urandom(11 * MiB + 5)
    from casstore.model.digest import Digest
    from casstore.remotes.base import blob

    d = Digest.of_bytes(data)

    async def rgw_parts(request, n):
        if request.method == "POST" and "uploads" in request.query:  # RGW ignores the upload's algorithm
            return await proxy.forward(request, drop=("x-amz-checksum-algorithm",))
        if request.method == "PUT" and "partNumber=" in request.path_qs:
            answer = await proxy.upstream_answer(request)
            return _answer(*answer, drop=("x-amz-checksum-crc32",),
                           replace={"ETag": '"0123456789abcdef0123456789abcdef"'} if etag == "wrong" else None)
        return None

    proxy = S3Proxy(s3server.url, rgw_parts)
    try:
        r = S3Remote(f"s3://{bucket}/rgw-parts", endpoint_url=proxy.url)
        r.part_size = 5 * MiB

        async def go():
            async with r:
                if etag == "kept":
                    await r.write(blob(d, len(data)), data)
                    assert await read_all(r, blob(d, len(data))) == data
                else:
                    with pytest.raises(RemoteError, match="not the MD5"):
                        await r.write(blob(d, len(data)), data)
                    assert await r.stat(blob(d)) is None
                    # the requests in order, should this fail again under load (twice so far, unexplained)
                    assert await r.stale_uploads(older_than=1e12) == [], [(m, q) for m, q, _ in proxy.log]

        run(go())
    finally:
        proxy.stop()


def test_a_server_whose_multipart_completion_ignores_if_none_match_is_refused(s3, tmp_path):
    """Ceph RGW before Squid completes a multipart upload over an existing key despite
    ``If-None-Match: *``; the probe now finds it (a proxy drops the header from completions)."""
    s3server, bucket = s3

    async def unconditional_completion(request, n):
        if request.method == "POST" and "uploadId=" in request.path_qs:
            return await proxy.forward(request, drop=("if-none-match",))
        return None

    proxy = S3Proxy(s3server.url, unconditional_completion)
    try:
        cas = CasRunner(tmp_path / "pub", tmp_path)
        cas("add", make_model(tmp_path / "src", {"w.bin": 1000}), "--name", "m", "--version", "1.0.0")
        p = subprocess.run(cas.argv("push", "m@1.0.0", "--remote", f"s3://{bucket}/x"), capture_output=True,
                           text=True, env={**os.environ, "AWS_ENDPOINT_URL": proxy.url}, timeout=120)
        assert p.returncode == 7 and "multipart upload completed over an existing key" in p.stderr, p.stderr
        assert "Traceback" not in p.stderr
        assert s3server.client().list_objects_v2(Bucket=bucket).get("Contents", []) == []
    finally:
        proxy.stop()
