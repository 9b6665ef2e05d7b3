import json
import os
import subprocess
import sys

import pytest

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
