import json
import os
import subprocess
import sys

import pytest

from conftest import CasRunner as CasRunnerFor
from conftest import make_model


@pytest.fixture
def published(cas, tmp_path):
    src = make_model(tmp_path / "src", {"w.bin": 10_000, "config.json": b"{}"})
    cas("add", src, "--name", "m", "--version", "1.0", "--note", "first", "--meta", "arch=dit")
    (src / "config.json").write_bytes(b'{"v": 2}')
    cas("add", src, "--name", "m", "--version", "1.1")
    return src


def test_json_on_every_command(cas, published, tmp_path):
    out = {
        "list": cas.json("list"),
        "show": cas.json("show", "m@1.0"),
        "path": cas.json("path", "m@1.1"),
        "checkout": cas.json("checkout", "m@1.1", tmp_path / "co"),
        "use": cas.json("use", "m@1.1"),
        "rollback": cas.json("rollback", "m"),
        "log": cas.json("log", "m"),
        "verify": cas.json("verify"),
        "du": cas.json("du"),
    }
    assert [v["version"] for v in out["list"]["models"][0]["versions"]] == ["1.0", "1.1"]
    assert out["show"]["note"] == "first" and out["show"]["meta"] == {"arch": "dit"}
    assert os.path.isdir(out["path"]["path"])
    assert out["use"]["version"] == "1.1" and out["use"]["previous"] == "1.0"
    assert out["rollback"]["version"] == "1.0"
    assert [h["action"] for h in out["log"]["history"]] == ["rollback", "use", "add"]
    assert out["verify"]["ok"] is True
    assert out["du"]["blob_bytes"] == 10_000 + 2 + 8


def test_add_prints_digest_on_stdout_and_messages_on_stderr(cas, tmp_path):
    src = make_model(tmp_path / "s", {"a": 10})
    p = cas("add", src, "--name", "x", "--version", "1")
    assert p.stdout.startswith("blake3:") and len(p.stdout.strip()) == 71
    assert "x@1" in p.stderr


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (["show", "nope"], 3, "nope"),
        (["show", "m@9.9"], 3, "m@9.9"),
        (["use", "m"], 2, "MODEL@VERSION"),
        (["show", "../etc"], 2, "../etc"),
        (["use", "m@1.0", "--expect", "0.9"], 5, "not 0.9"),
        (["checkout", "m", "x", "--link", "bogus"], 2, "bogus"),
        (["add", "/definitely/not/here", "--name", "m", "--version", "2"], 3, "/definitely/not/here"),
        (["add", ".", "--name", "m", "--version", "1.0"], 5, "already published"),
        (["add", ".", "--name", "m", "--version", "3", "--meta", "novalue"], 2, "novalue"),
    ],
)
def test_exit_codes(cas, published, args, code, needle):
    p = cas(*args, ok=False)
    assert p.returncode == code, p.stderr
    assert needle in p.stderr


def test_json_error_object(cas, published):
    p = cas("--json", "show", "m@7", ok=False)
    err = json.loads(p.stdout)["error"]
    assert err["type"] == "NotFound" and err["exit_code"] == 3


def test_verify_exit_code_on_corruption(cas, published):
    blobs = cas.store / "blobs"
    victim = next(p for p in blobs.rglob("*") if p.is_file())
    os.chmod(victim, 0o644)
    victim.write_bytes(b"x" * victim.stat().st_size)
    p = cas("verify", ok=False)
    assert p.returncode == 4 and victim.name in p.stderr and "m@1.0" in p.stderr
    assert not victim.exists()


def test_store_from_env(tmp_path):
    env = {**os.environ, "CAS_HOME": str(tmp_path / "envstore")}
    src = make_model(tmp_path / "s", {"a": 10})
    subprocess.run([sys.executable, "-m", "casstore_cli.main", "add", src, "--name", "e", "--version", "1"], env=env, check=True, capture_output=True)
    assert (tmp_path / "envstore" / "casstore.json").exists()


def test_help_imports_nothing_heavy():
    code = (
        "import sys\n"
        "from casstore_cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'aiohttp', 'casstore', 'blake3', 'sqlite3', 'rich', 'msgpack', 'platformdirs'})\n"
        "print('HEAVY', heavy)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in p.stdout, p.stdout


def test_quickstart_script_runs(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run(["bash", os.path.join(root, "examples", "quickstart.sh")], capture_output=True, text=True,
                       env={**os.environ, "WORK": str(tmp_path / "qs")}, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "quickstart OK" in p.stdout


def test_list_survives_a_broken_tag(cas, published):
    tag = cas.store / "refs" / "m" / "tags" / "1.0"
    manifest = next((cas.store / "manifests").rglob(tag.read_text().strip().split(":")[1] + ".json"))
    os.unlink(manifest)
    p = cas("list")
    assert "m@1.0 left out" in p.stderr and "1.1" in p.stdout


@pytest.mark.parametrize("args", [("list", "nope"), ("verify", "nope"), ("show", "nope"), ("log", "nope"),
                                  ("verify", "m@9.9"), ("checkout", "m@9.9", "co"), ("use", "nope@1")])
def test_an_unknown_model_or_version_is_not_found_with_one_json_document(cas, published, args):
    p = cas("--json", *args, ok=False)
    assert p.returncode == 3, p.stderr
    doc = json.loads(p.stdout)  # exactly one document: json.loads refuses trailing data
    assert doc["ok"] is False and doc["error"]["type"] == "NotFound" and doc["error"]["exit_code"] == 3


def test_check_updates_names_an_unknown_model(cas, published, tmp_path):
    cas("push", "m@1.1", "--remote", tmp_path / "nas")
    p = cas("check-updates", "nope", "--remote", tmp_path / "nas", ok=False)
    assert p.returncode == 3 and "nope" in p.stderr


def test_a_usage_error_with_json_is_still_one_document(cas, published):
    p = cas("--json", "list", "--bogus", ok=False)
    assert p.returncode == 2
    assert json.loads(p.stdout)["error"]["exit_code"] == 2


def test_global_options_after_the_command(cas, published, tmp_path):
    assert json.loads(cas("list", "--json").stdout)["models"][0]["model"] == "m"
    assert json.loads(cas("show", "m@1.0", "--json").stdout)["version"] == "1.0"
    p = cas("add", published, "--name", "m", "--version", "1.2", "-q")
    assert p.stderr == ""
    other = tmp_path / "other-store"
    cas("add", published, "--name", "x", "--version", "1", "--store", other)
    assert (other / "refs" / "x").is_dir()


def test_verbose_logs_the_engine_decisions(cas, published, tmp_path):
    from servers import CasServe

    for v in ("1.0", "1.1"):
        cas("push", f"m@{v}", "--remote", tmp_path / "nas")
    srv = CasServe(tmp_path / "nas", token=None)
    try:
        user = CasRunnerFor(tmp_path / "u", tmp_path)
        p = user("fetch", "m@1.1", "--remote", srv.url, "-vv")
        assert f"debug: GET {srv.url}index/m.json" in p.stderr
        assert "info: verified blake3:" in p.stderr  # per-file detail on request
        quiet = user("fetch", "m@1.0", "--remote", srv.url)
        assert "debug" not in quiet.stderr
    finally:
        srv.stop()


def test_verbose_add_names_each_file(cas, tmp_path):
    src = make_model(tmp_path / "v", {"a.bin": 10, "sub/b.bin": 20})
    p = cas("add", src, "--name", "v", "--version", "1", "-v")
    assert "info: a.bin: blake3:" in p.stderr and "info: sub/b.bin: blake3:" in p.stderr


def test_completion_scripts(cas):
    for shell, marker in (("bash", "complete -o nosort -F"), ("zsh", "compdef"), ("fish", "complete --no-files")):
        assert marker in cas("completion", shell).stdout
    env = {**os.environ, "COMP_WORDS": "cas li", "COMP_CWORD": "1", "_CAS_COMPLETE": "bash_complete"}
    out = subprocess.run([sys.executable, "-m", "casstore_cli.main"], env=env, capture_output=True, text=True).stdout
    assert "list" in out
