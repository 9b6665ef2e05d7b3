"""Updates and projects: check-updates, update, lock, sync."""

from __future__ import annotations

import os

import click

from .app import (
    Ctx,
    _delta_option,
    _progress,
    _ref,
    _remote_options,
    _run,
    _select_options,
    _selection,
    _size,
    cli,
    pass_ctx,
)
from .gc_commands import _auto_gc


@cli.command("check-updates")
@click.argument("models", nargs=-1)
@_remote_options
@click.option("--pre", is_flag=True, help="Consider pre-releases.")
@pass_ctx
def check_updates(c: Ctx, models, remote_name, insecure, pre) -> None:
    """For each local model, whether the remote has a newer version, and whether it is breaking."""
    from casstore.ops.fetch import open_remotes
    from casstore.ops.update import check_updates as do_check

    names = [_ref(m).model for m in models] or None
    remotes = open_remotes(remote_name, insecure=insecure, offline=c.offline)
    infos = _run(lambda: do_check(c.store(), remotes, names, prereleases=pre), remotes)
    lines = []
    for i in infos:
        if i.error:
            lines.append(f"{i.model:<24} {i.current:>12}    cannot check: {i.error}")
            continue
        line = (f"{i.model:<24} {i.current:>12} -> {i.latest if i.available else '(up to date)'}"
                + ("  BREAKING" if i.breaking else "")
                + (f"  needs: {'; '.join(i.unmet)}" if i.unmet else ""))
        if i.available and i.recommended != i.latest:
            line += f"  (`cas update` takes {i.recommended})" if i.recommended else "  (no update runs here)"
        lines.append(line)
        lines += [f"{'':<24} {'':>12}    skipped {v}: {why}" for v, why in i.skipped]
    c.result({"models": [i.to_json() for i in infos]}, "\n".join(lines) or None)


def _print_plan(c: Ctx, p) -> None:
    if p.up_to_date:
        c.info(f"{p.model} is up to date ({p.current})")
        return
    c.info(f"update {p.model}: {p.current} -> {p.target} ({p.strategy}{', BREAKING' if p.breaking else ''})")
    local = f" ({_size(p.from_local)} of {_size(p.new_bytes)} new from local chunks)" if p.from_local else ""
    local += f", copy {_size(p.copy_bytes)} within this filesystem" if p.copy_bytes else ""
    c.info(f"  download {_size(p.download_bytes)}{local}; {len(p.added)} files added, {len(p.changed)} changed, "
           f"{len(p.removed)} removed")
    for label, paths in (("~", p.changed), ("+", p.added), ("-", p.removed)):  # changes first: they matter most
        for path in paths[:50]:
            c.info(f"  {label} {path}")
        if len(paths) > 50:
            c.info(f"  {label} and {len(paths) - 50} more (--json lists them all)")


@cli.command()
@click.argument("model")
@click.option("--to", "to", metavar="VERSION", help="Target version (default: the latest release).")
@click.option("--allow-breaking", is_flag=True, help="Allow a major bump or a version flagged breaking.")
@click.option("--strategy", type=click.Choice(["conservative", "aggressive", "parallel"]), default="conservative", show_default=True)
@click.option("--dry-run", is_flag=True, help="Print the plan and stop.")
@click.option("--pre", is_flag=True, help="Consider pre-releases.")
@click.option("--jobs", "-j", default=8, show_default=True)
@click.option("--limit-rate", metavar="RATE")
@click.option("--ignore-requirements", is_flag=True, help="Take a version whose runtime requirements are not met here.")
@_delta_option
@_remote_options
@_select_options
@pass_ctx
def update(c: Ctx, model, to, allow_breaking, strategy, dry_run, pre, jobs, limit_rate, ignore_requirements, delta,
           remote_name, insecure, include, exclude) -> None:
    """Fetch a newer version completely, then switch current to it in one step. A partial
    current version (fetched with --include/--exclude) keeps its selection unless given another."""
    from casstore.model.sizes import parse_size
    from casstore.ops.fetch import open_remotes
    from casstore.ops.update import execute_update, plan_update
    from casstore.transfer.download import Settings
    from casstore.transfer.settings import delta_mode

    r = _ref(model)
    store = c.store()
    remotes = open_remotes(remote_name, insecure=insecure, offline=c.offline)
    settings = Settings.from_env(jobs=jobs, rate=parse_size(limit_rate) if limit_rate else None)
    if delta:
        settings.delta = delta_mode(delta)

    async def go():
        plan = await plan_update(store, remotes, r.model, to=to, strategy=strategy, allow_breaking=allow_breaking,
                                 prereleases=pre, ignore_requirements=ignore_requirements,
                                 selection=_selection(include, exclude), settings=settings)
        _print_plan(c, plan)
        if dry_run or plan.up_to_date:
            return plan, None
        with _progress(c, f"update {r.model} to {plan.target}") as progress:
            return plan, await execute_update(store, remotes, plan, settings=settings, progress=progress)

    plan, done = _run(go, remotes)
    out = plan.to_json() | {"dry_run": dry_run, "switched": done is not None}
    if done is not None:
        c.info(f"{r.model}: {plan.current} -> {plan.target}; `cas rollback {r.model}` goes back")
        st = done[0].stats
        out |= {"bytes_downloaded": st.bytes_downloaded, "bytes_from_local": st.bytes_from_local,
                "bytes_maps": st.bytes_maps, "bytes_copied": st.bytes_copied}
        c.info(f"  {_size(st.bytes_downloaded)} downloaded, {_size(st.bytes_from_local)} from local chunks, "
               + (f"{_size(st.bytes_copied)} copied within this filesystem, " if st.bytes_copied else "")
               + f"{_size(st.bytes_reused)} already here")
    c.result(out)
    if done is not None:
        _auto_gc(c, [done[0].manifest])


def _project(create: bool = False):
    """The project around the current directory; with ``create`` (`cas lock M@V` in a fresh
    repository), a new one here."""
    from pathlib import Path

    from casstore.errors import NotFound
    from casstore.ops.project import Project

    p = Project.find()
    if p is None and create:
        p = Project.create(Path.cwd())
        click.echo(f"created {p.toml_path}", err=True)
    if p is None:
        raise NotFound(f"no cas.toml in {os.getcwd()} or its parents: `cas init` starts a project here")
    return p


@cli.command()
@click.argument("models", nargs=-1)
@_remote_options
@click.option("--pre", is_flag=True, help="Allow pre-releases.")
@pass_ctx
def lock(c: Ctx, models, remote_name, insecure, pre) -> None:
    """Resolve cas.toml into cas.lock. MODEL re-resolves it; MODEL@REQ also sets its requirement."""
    from casstore.ops.fetch import open_remotes
    from casstore.ops.project import lock as do_lock

    project = _project(create=any("@" in m for m in models))
    upgrade = []
    for text in models:
        name, sep, req = text.partition("@")
        _ref(name)
        if sep:
            project.set_requirement(name, req)
        elif name not in project.models:
            project.set_requirement(name, "latest")
        upgrade.append(name)
    remotes = open_remotes(remote_name, project_remote=project.remote, insecure=insecure, offline=c.offline)
    lockf, changes = _run(lambda: do_lock(project, c.store(), remotes, upgrade=upgrade, prereleases=pre), remotes)
    for ch in changes:
        c.info(f"{ch.model}: {ch.old or '(new)'} -> {ch.new or '(removed)'}")
    if not changes:
        c.info("cas.lock is up to date")
    c.result({"lock": str(project.lock_path), "changes": [ch.to_json() for ch in changes],
              "models": {n: lk.version for n, lk in sorted(lockf.models.items())}})


@cli.command()
@click.option("--frozen", is_flag=True, help="Fail if cas.lock is stale or a remote's version moved; never re-lock.")
@click.option("--offline", is_flag=True, help="Use only the local store; list what is missing.")
@click.option("--jobs", "-j", default=8, show_default=True)
@click.option("--ignore-requirements", is_flag=True, help="Materialise versions whose runtime requirements are not met here.")
@click.option("--limit-rate", metavar="RATE", help="Total download bandwidth, e.g. 50M (bytes per second).")
@_remote_options
@pass_ctx
def sync(c: Ctx, frozen, offline, jobs, ignore_requirements, limit_rate, remote_name, insecure) -> None:
    """Fetch and materialise exactly what cas.lock says."""
    from casstore.model.sizes import parse_size
    from casstore.ops.project import sync as do_sync
    from casstore.transfer.download import Settings

    project = _project()
    remotes = []
    offline = offline or c.offline
    if not offline:
        from casstore.ops.fetch import open_remotes

        remotes = open_remotes(remote_name, project_remote=project.remote, insecure=insecure, offline=c.offline)
    with _progress(c, "sync") as progress:
        res = _run(lambda: do_sync(project, c.store(), remotes, frozen=frozen, offline=offline,
                                   settings=Settings.from_env(jobs=jobs, rate=parse_size(limit_rate) if limit_rate else None),
                                   ignore_requirements=ignore_requirements,
                                   progress=progress), remotes)
    for name, v in res.models.items():
        c.info(f"{name}@{v} -> {project.root / project.models[name].path}")
    if res.gitignored:
        c.info(f"added {', '.join(res.gitignored)} to {project.root / '.gitignore'} (the weights stay out of git)")
    c.result(res.to_json())


