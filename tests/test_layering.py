"""The package map of docs/architecture.md, enforced: each package imports only the ones below it,
and the library never imports the CLI or click."""

import ast
import pathlib

import casstore

ROOT = pathlib.Path(casstore.__file__).parent

# package -> the packages it may import (besides itself); docs/architecture.md draws the same.
ALLOWED = {
    "errors": set(),
    "progress": set(),
    "model": {"errors"},
    "config": {"errors", "model"},
    "fs": {"errors", "model"},
    "store": {"errors", "model", "fs", "config"},
    "remotes": {"errors", "model", "fs", "config"},
    "transfer": {"errors", "model", "fs", "store", "remotes", "config"},
    "gc": {"errors", "model", "fs", "store", "config"},
    "sources": {"errors", "model", "fs"},
    "ops": {"errors", "model", "fs", "store", "remotes", "transfer", "gc", "config", "progress", "sources"},
    "testing": {"errors", "model", "remotes", "store"},
}


def package_of(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("").parts
    return rel[0] if rel != ("__init__",) else "(root)"


def imports(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text())):  # function-level imports too
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_every_package_imports_only_what_is_below_it():
    wrong = []
    seen = set()
    for path in sorted(ROOT.rglob("*.py")):
        pkg = package_of(path)
        seen.add(pkg)
        for mod in imports(path):
            top = mod.split(".")[0]
            if top in ("click", "casstore_cli", "rich"):
                wrong.append(f"{path.relative_to(ROOT)} imports {mod}: the library never imports the CLI's tools")
            if top != "casstore" or pkg == "(root)":
                continue
            target = mod.split(".")[1] if "." in mod else "(root)"
            if target != pkg and target not in ALLOWED[pkg]:
                wrong.append(f"{path.relative_to(ROOT)} ({pkg}) imports {mod} ({target})")
    assert not wrong, "\n".join(wrong)
    assert seen - {"(root)"} == set(ALLOWED), "a package is missing from the map (or the map names one that is gone)"
