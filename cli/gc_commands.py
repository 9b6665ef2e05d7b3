"""Space and shared stores: gc, pin, unpin, config, init, doctor."""

from __future__ import annotations

import sys

import click

from .app import Ctx, _policy, _ref, _run, _size, cli, pass_ctx


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
    if p.young_spared:
        from casstore.gc.planner import format_age

        say(f"  spare {p.young_spared} blobs ({_size(p.young_bytes)}) nothing keeps: younger than the grace period "
            f"({format_age(policy.grace)}); a later gc takes them")
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
@click.option("--remote", "-r", "remote_name", metavar="NAME|URL",
              help="Collect a remote (a directory or bucket) instead: what no published version uses. A dry run "
                   "unless --yes.")
@click.option("--yes", is_flag=True, help="With --remote: delete what the plan lists.")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP to a host that is not loopback.")
@pass_ctx
def gc(c: Ctx, max_size, retention_days, keep_last, grace, dry_run, remote_name, yes, insecure) -> None:
    """Collect garbage: unreferenced objects, then least recently used versions while over --max-size."""
    if remote_name:
        c.result(_gc_remote(c, remote_name, insecure, 3600.0 if grace is None else grace, dry_run or not yes))
        return
    if yes:
        raise click.UsageError("--yes is for --remote (the local GC asks nothing; see its plan with --dry-run)")
    out = _gc(c, _policy(max_size, retention_days, keep_last, grace), dry_run)
    c.result(out)


def _gc_remote(c: Ctx, remote_name: str, insecure: bool, grace: float, dry_run: bool) -> dict:
    from casstore.ops.fetch import open_remotes
    from casstore.ops.remote_gc import collect_remote

    (remote,) = open_remotes(remote_name, insecure=insecure, offline=c.offline)[:1]
    p, r = _run(lambda: collect_remote(remote, grace, dry_run=dry_run), [remote])
    c.info(f"remote gc plan for {remote.url}: {len(p.delete)} of {p.objects} objects that no published version "
           f"uses ({_size(p.bytes_freed)}); {p.young_spared} younger than {grace:.0f}s spared; {p.versions} versions kept")
    for key in p.delete[:50]:
        c.info(f"  - {key}")
    out = {"plan": p.to_json(), "dry_run": dry_run}
    if r is None:
        if p.delete:
            c.info("a dry run: nothing deleted; run again with --yes to delete")
    else:
        c.info(f"remote gc: deleted {r.deleted} objects ({_size(r.bytes_freed)})")
        out["result"] = r.to_json()
    return out


def _auto_gc(c: Ctx, protect) -> None:
    """After fetch/update: say what the library's light GC did, if anything; ``protect``: the
    manifests the command fetched or switched to."""
    from casstore.gc import auto_collect

    done = auto_collect(c.store(), protect)
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


@config.command("set")
@click.argument("key")
@click.argument("value")
@pass_ctx
def config_set(c: Ctx, key, value) -> None:
    """Set KEY to VALUE."""
    from casstore.config import USER_KEYS, load_user_config, parse_user_value, save_user_config
    from casstore.model import values

    typed = parse_user_value(key, value)  # the library's schema: an unknown key or bad value is an error
    if USER_KEYS[key] is values.size:
        typed = value  # kept as written ("500G"), which the reader parses again
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
@click.option("--remote", "-r", "remote_name", metavar="NAME|URL",
              help="Check a remote instead: abort multipart uploads nobody will finish, remove dead lock objects.")
@click.option("--stale-after", type=float, default=86400.0, show_default=True, metavar="SECONDS",
              help="With --remote: an upload older than this is abandoned.")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP to a host that is not loopback.")
@click.option("--fix", is_flag=True, help="Build the views complete versions lack (stores from before add and "
                                          "fetch built them), so that a read-only mount can serve them.")
@pass_ctx
def doctor(c: Ctx, remote_name, stale_after, insecure, fix) -> None:
    """Report wrong permissions, stale locks, orphaned temp files and unknown files in the store."""
    if remote_name:
        from casstore.ops.doctor import diagnose_remote
        from casstore.ops.fetch import open_remotes

        (remote,) = open_remotes(remote_name, insecure=insecure, offline=c.offline)[:1]
        findings = _run(lambda: diagnose_remote(remote, stale_after), [remote])
    else:
        from casstore.ops.doctor import build_views, diagnose

        if fix:
            for label in build_views(c.store()):
                c.info(f"built the view of {label}")
        findings = diagnose(c.store())
    for f in findings:
        c.warn(f"{f.kind}: {f.path}: {f.detail}")
    c.info(f"{len(findings)} finding(s)")
    c.result({"findings": [f.to_json() for f in findings]})
    if findings:
        sys.exit(1)


