import asyncio
import os

import casstore

from conftest import make_model


def test_python_api_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("CAS_HOME", str(tmp_path / "s"))
    store = casstore.open_store()
    src = make_model(tmp_path / "m", {"config.json": b"{}", "w.bin": 1000})
    casstore.add(store, src, "t2v", "1.0.0")
    (src / "config.json").write_bytes(b'{"v": 2}')
    casstore.add(store, src, "t2v", "1.1.0")
    casstore.use(store, "t2v", "1.1.0")
    p = casstore.path(store, "t2v")
    assert (p / "config.json").read_bytes() == b'{"v": 2}'
    assert casstore.rollback(store, "t2v").version == "1.0.0"
    assert (casstore.path(store, "t2v") / "config.json").read_bytes() == b"{}"
    assert casstore.verify(store).ok


def test_store_from_user_config(tmp_path, monkeypatch):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'store = "{tmp_path / "configured"}"\n')
    monkeypatch.setenv("CAS_CONFIG", str(cfg))
    monkeypatch.delenv("CAS_HOME")
    assert casstore.open_store().root == tmp_path / "configured"
    monkeypatch.setenv("CAS_HOME", str(tmp_path / "env"))  # the environment overrides the file
    assert casstore.open_store().root == tmp_path / "env"
    assert casstore.open_store(tmp_path / "explicit").root == tmp_path / "explicit"
    assert os.path.exists(tmp_path / "explicit" / "casstore.json")


def test_bad_config_file_is_named(tmp_path, monkeypatch):
    cfg = tmp_path / "config.toml"
    cfg.write_text("store = [unclosed\n")
    monkeypatch.setenv("CAS_CONFIG", str(cfg))
    monkeypatch.delenv("CAS_HOME")
    try:
        casstore.open_store()
    except casstore.InvalidInput as e:
        assert str(cfg) in str(e)
    else:
        raise AssertionError("a broken config file must be an error")


def test_fetch_api_returns_a_loadable_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("CAS_HOME", str(tmp_path / "pub"))
    pub = casstore.open_store()
    src = make_model(tmp_path / "m", {"config.json": b'{"a": 1}', "w.bin": 300_000})
    casstore.add(pub, src, "t2v", "1.1.0")
    import asyncio

    from casstore.ops.push import push
    from casstore.remotes.directory import DirectoryRemote

    asyncio.run(push(pub, DirectoryRemote(tmp_path / "nas"), "t2v", "1.1.0"))
    seen = []
    path = casstore.fetch("t2v@1.1.0", remote=str(tmp_path / "nas"), store=str(tmp_path / "user"),
                          progress=lambda done, total: seen.append((done, total)))
    assert (path / "config.json").read_bytes() == b'{"a": 1}' and (path / "w.bin").stat().st_size == 300_000
    assert seen and seen[-1] == (300_008, 300_008)
    again = asyncio.run(casstore.afetch("t2v", remote=str(tmp_path / "nas"), store=str(tmp_path / "user")))
    assert again.version == "1.1.0" and again.stats.bytes_downloaded == 0 and again.stats.bytes_reused == 300_008


def test_api_functions_survive_submodule_imports():
    import importlib

    for mod in ("casstore.ops.verify", "casstore.ops.fetch", "casstore.ops.switch", "casstore.ops.add", "casstore.ops.checkout"):
        importlib.import_module(mod)
    for name in ("verify", "fetch", "afetch", "use", "rollback", "add", "checkout", "path", "open_store"):
        assert callable(getattr(casstore, name)), name


def test_progress_callbacks_count_up_to_the_total(tmp_path):
    from casstore.ops.add import add
    from casstore.ops.push import push
    from casstore.ops.verify import verify
    from casstore.remotes.directory import DirectoryRemote
    from casstore.store.objects import Store

    store = Store.open(tmp_path / "s")
    calls: dict[str, list] = {"add": [], "push": [], "verify": []}
    src = make_model(tmp_path / "src", {f"f{i}": 50_000 for i in range(5)})
    add(store, src, "m", "1", progress=lambda d, t: calls["add"].append((d, t)))
    asyncio.run(push(store, DirectoryRemote(tmp_path / "nas"), "m", "1", progress=lambda d, t: calls["push"].append((d, t))))
    verify(store, progress=lambda d, t: calls["verify"].append((d, t)))
    for name, seq in calls.items():
        assert seq, name
        dones = [d for d, _ in seq]
        assert dones == sorted(dones) and seq[-1][0] == seq[-1][1] and seq[-1][0] >= 250_000, (name, seq)


def test_a_tqdm_bar_works_as_the_callback(tmp_path):
    import io

    import casstore
    from casstore.progress import tqdm_progress

    from conftest import CasRunner

    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("add", make_model(tmp_path / "src", {"w": 300_000}), "--name", "m", "--version", "1.0.0")
    pub("push", "m@1.0.0", "--remote", tmp_path / "nas")
    out = io.StringIO()
    casstore.fetch("m@1.0.0", store=str(tmp_path / "user"), remote=str(tmp_path / "nas"),
                   progress=tqdm_progress("m", file=out, mininterval=0))
    assert "293k" in out.getvalue() or "293K" in out.getvalue(), out.getvalue()  # 300,000 B in binary units


def test_fetch_works_inside_a_running_event_loop(tmp_path):
    """As in a Jupyter cell or an async web handler: asyncio.run() cannot nest, so the download
    runs on a thread of its own."""
    import asyncio

    from conftest import CasRunner

    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("add", make_model(tmp_path / "src", {"w": 300_000, "config.json": b"{}"}), "--name", "m", "--version", "1.0.0")
    pub("push", "m@1.0.0", "--remote", tmp_path / "nas")

    async def cell():
        return casstore.fetch("m@1.0.0", store=str(tmp_path / "user"), remote=str(tmp_path / "nas"))

    path = asyncio.run(cell())
    assert (path / "config.json").read_bytes() == b"{}" and (path / "w").stat().st_size == 300_000


def test_fetch_in_a_real_jupyter_kernel(tmp_path):
    """A real ipykernel (whose cells run inside its event loop), driven by jupyter_client."""
    from jupyter_client.manager import start_new_kernel  # with ipykernel, in the test extra

    from conftest import CasRunner

    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("add", make_model(tmp_path / "src", {"w": 300_000, "config.json": b'{"k": 1}'}), "--name", "m",
        "--version", "1.0.0")
    pub("push", "m@1.0.0", "--remote", tmp_path / "nas")
    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=60)
    try:
        code = (f"import casstore\np = casstore.fetch('m@1.0.0', store={str(tmp_path / 'user')!r}, "
                f"remote={str(tmp_path / 'nas')!r})\nprint('OUT', (p / 'config.json').read_text())")
        out, errors = [], []

        def on_msg(msg):
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                errors.append("\n".join(msg["content"]["traceback"]))

        reply = kc.execute_interactive(code, timeout=120, output_hook=on_msg)
        assert reply["content"]["status"] == "ok", errors
        assert 'OUT {"k": 1}' in "".join(out)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_the_api_is_typed_for_its_users():
    import typing
    from pathlib import Path

    assert (Path(casstore.__file__).parent / "py.typed").is_file()  # PEP 561: mypy reads our hints
    assert typing.get_type_hints(casstore.fetch)["return"] is Path
    assert typing.get_type_hints(casstore.path)["return"] is Path


def test_add_progress_counts_the_versions_bytes_once(tmp_path):
    """Before: hashing and then writing each counted the bytes (a 556 MiB model showed 1.1 GiB)."""
    from casstore.ops.add import add
    from casstore.store.objects import Store

    store = Store.open(tmp_path / "s")
    src = make_model(tmp_path / "src", {"a": 300_000, "b": 200_000, "dup": b"x" * 1000, "dup2": b"x" * 1000})
    seen: list = []
    add(store, src, "m", "1", progress=lambda d, t: seen.append((d, t)))
    assert {t for _, t in seen} == {502_000} and seen[-1] == (502_000, 502_000)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    seen.clear()
    add(store, src, "m", "2", progress=lambda d, t: seen.append((d, t)))  # all blobs here: hashing is all of it
    assert seen[-1] == (502_000, 502_000)
