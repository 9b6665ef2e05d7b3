"""Space and shared stores: gc, pin, unpin, config, init, doctor."""

from __future__ import annotations

import sys

import click

from .app import Ctx, _policy, _ref, _size, cli, pass_ctx


def _gc(c: Ctx, policy, dry_run: bool) -> dict:
    from casstore.gc import execute, plan, read_state

    store = c.store()
    p = plan(read_state(store), policy)
    say = c.info
    say(f"gc plan: {len(p.delete_versions)} versions, {len(p.delete_manifests)} manifests, {len(p.delete_blobs)} blobs; "
        f"frees {_size(p.bytes_freed)} of {_size(p.bytes_before)}")
    for m, v, _ in p.delete_versions:
        say(f"  - {m}@{v}")
    for label, reasons in p.kept:
        say(f"  keep {label}: {'; '.join(reasons)}")
    if p.shortfall:
        c.warn(f"cannot get under {_size(policy.max_size)}: still {_size(p.shortfall)} over, held by the versions kept above")
    out = {"plan": p.to_json(), "dry_run": dry_run}
    if not dry_run:
        r = execute(store, p, policy)
        say(f"gc: removed {r.versions} versions, {r.manifests} manifests, {r.blobs} blobs ({_size(r.bytes_freed)}); "
            f"{r.spared} spared at the last check, {r.cleaned} temp files and leases cleaned")
        out["result"] = r.to_json()
    return out


@cli.command()
@click.option("--max-size", metavar="SIZE", help="Keep the store under SIZE (e.g. 200G); default from config gc.max_size.")
@click.option("--retention-days", type=float, help="Keep versions used within N days (default 30).")
@click.option("--keep-last", type=int, help="Keep the last N versions of each model's history (default 2).")
@click.option("--grace", type=float, metavar="SECONDS", help="Spare anything younger than this (default 3600).")
@click.option("--dry-run", is_flag=True, help="Print the plan and stop.")
@pass_ctx
def gc(c: Ctx, max_size, retention_days, keep_last, grace, dry_run) -> None:
    """Collect garbage: unreferenced objects, then least recently used versions while over --max-size."""
    out = _gc(c, _policy(max_size, retention_days, keep_last, grace), dry_run)
    c.result(out)


def _auto_gc(c: Ctx) -> None:
    """After fetch/update: say what the library's light GC did, if anything."""
    from casstore.gc import auto_collect

    done = auto_collect(c.store())
    if done is not None:
        policy, p, r = done
        assert policy.max_size is not None  # auto GC runs only with one
        if p.shortfall:
            c.warn(f"cannot get under {_size(policy.max_size)}: still {_size(p.shortfall)} over")
        c.info(f"auto gc (over gc.max_size {_size(policy.max_size)}): freed {_size(r.bytes_freed)}")


@cli.command()
@click.argument("ref")
@pass_ctx
def pin(c: Ctx, ref) -> None:
    """Pin MODEL@VERSION: GC never collects it."""
    from casstore.store.markers import mark

    r = _ref(ref)
    store = c.store()
    version, _ = store.resolve(r.model, r.version)
    mark(store, r.model, version, "pins")
    c.result({"pinned": f"{r.model}@{version}"})


@cli.command()
@click.argument("ref")
@pass_ctx
def unpin(c: Ctx, ref) -> None:
    """Release MODEL@VERSION: remove its pin, or the rollback root an update left on it."""
    from casstore.errors import NotFound
    from casstore.store.markers import unmark

    r = _ref(ref)
    store = c.store()
    version, _ = store.resolve(r.model, r.version)
    released = []
    if unmark(store, r.model, version, "pins"):
        released.append("pin")
    if unmark(store, r.model, version, "keep"):
        released.append("rollback root")
    if not released:
        raise NotFound(f"{r.model}@{version} is neither pinned nor kept as a rollback root")
    c.info(f"released {r.model}@{version}: {', '.join(released)}")
    c.result({"unpinned": f"{r.model}@{version}", "released": released})


@cli.group()
def config() -> None:
    """Read and change the user config file (gc.max_size, gc.retention_days, gc.keep_last, gc.grace, store)."""


_CONFIG_KEYS = {"store": str, "default_remote": str, "gc.max_size": str, "gc.retention_days": float,
                "gc.keep_last": int, "gc.grace": float}


@config.command("set")
@click.argument("key")
@click.argument("value")
@pass_ctx
def config_set(c: Ctx, key, value) -> None:
    """Set KEY to VALUE."""
    from casstore.config import load_user_config, save_user_config
    from casstore.errors import InvalidInput
    from casstore.model.sizes import parse_size

    if key not in _CONFIG_KEYS:
        raise InvalidInput(f"unknown config key {key!r}; known: {', '.join(_CONFIG_KEYS)}")
    try:
        typed = _CONFIG_KEYS[key](value)
    except ValueError:
        raise InvalidInput(f"invalid value {value!r} for {key}") from None
    if key == "gc.max_size":
        parse_size(value)
    cfg = load_user_config()
    section, _, name = key.rpartition(".")
    (cfg.setdefault(section, {}) if section else cfg)[name] = typed
    save_user_config(cfg)
    c.result({key: typed})


@config.command("get")
@click.argument("key", required=False)
@pass_ctx
def config_get(c: Ctx, key) -> None:
    """Print KEY (or every key) from the user config file."""
    from casstore.config import config_path, load_user_config

    cfg = load_user_config()
    flat = {k: v for k, v in cfg.items() if not isinstance(v, dict)}
    flat.update({f"gc.{k}": v for k, v in cfg.get("gc", {}).items()})
    if key:
        flat = {key: flat.get(key)}
    c.result({"config": str(config_path()), **flat}, "\n".join(f"{k} = {v}" for k, v in flat.items()))


@cli.command()
@click.option("--shared", is_flag=True, help="Only the store: make it group-shared (group-writable directories, "
                                             "setgid, umask 002); no cas.toml.")
@click.option("--remote", "remote", metavar="NAME|URL", help="The project's remote, written into cas.toml.")
@pass_ctx
def init(c: Ctx, shared, remote) -> None:
    """Start a project here (a commented cas.toml) and create the store; with --shared, make the
    store group-shared instead."""
    from pathlib import Path

    from casstore.ops.project import TOML, Project
    from casstore.store.shared import make_shared

    store = c.store()
    out = {"store": str(store.root), "shared": shared}
    if shared:
        make_shared(store)
    else:
        existed = (Path.cwd() / TOML).exists()
        project = Project.create(Path.cwd(), remote)
        out["project"] = str(project.toml_path)
        c.info(f"{'kept the existing' if existed else 'created'} {project.toml_path}; store at {store.root}")
    c.result(out, str(store.root))


@cli.command()
@pass_ctx
def doctor(c: Ctx) -> None:
    """Report wrong permissions, stale locks, orphaned temp files and unknown files in the store."""
    from casstore.ops.doctor import diagnose

    findings = diagnose(c.store())
    for f in findings:
        c.warn(f"{f.kind}: {f.path}: {f.detail}")
    c.info(f"{len(findings)} finding(s)")
    c.result({"findings": [f.to_json() for f in findings]})
    if findings:
        sys.exit(1)


