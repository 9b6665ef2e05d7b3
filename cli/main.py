"""The `cas` command. Results go to stdout (JSON with --json); messages go to stderr.

The library is imported inside each command, so `cas --help` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone

import click

from .exitcodes import exit_code


class Ctx:
    def __init__(self, store: str | None, as_json: bool, quiet: bool, verbose: int) -> None:
        self.store_arg = store
        self.json = as_json
        self.quiet = quiet
        self.verbose = verbose
        self._store = None

    def store(self, create: bool = True):
        if self._store is None:
            from casstore.config import store_path
            from casstore.store import Store

            self._store = Store.open(store_path(self.store_arg), create=create)
        return self._store

    def info(self, msg: str) -> None:
        if not self.quiet:
            click.echo(msg, err=True)

    def warn(self, msg: str) -> None:
        click.echo(f"warning: {msg}", err=True)

    def result(self, data: dict, human: str | None = None) -> None:
        if self.json:
            click.echo(json.dumps(data, indent=2, sort_keys=True))
        elif human is not None:
            click.echo(human)


pass_ctx = click.make_pass_decorator(Ctx)


def _size(n: int) -> str:
    from casstore.sizes import format_size

    return format_size(n)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ref(text: str):
    from casstore.names import Ref

    return Ref.parse(text)


def _remote_options(f):
    f = click.option("--remote", "-r", "remote_name", metavar="NAME|URL", help="Remote to use (default: all configured, default first).")(f)
    return click.option("--insecure", is_flag=True, help="Allow plain HTTP to a host that is not loopback.")(f)


def _run(coro_fn, remotes):
    import asyncio

    async def go():
        try:
            return await coro_fn()
        finally:
            for r in remotes:
                await r.close()

    return asyncio.run(go())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", metavar="PATH", help="Store directory (default: $CAS_HOME, the config file, or the user cache dir).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable result on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.option("-v", "--verbose", count=True, help="More detail on stderr.")
@click.version_option(package_name="casstore")
@click.pass_context
def cli(ctx: click.Context, store: str | None, as_json: bool, quiet: bool, verbose: int) -> None:
    """casstore: a content-addressed store for large model weights."""
    ctx.obj = Ctx(store, as_json, quiet, verbose)


@cli.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option("--name", "model", required=True, help="Model name.")
@click.option("--version", "version", required=True, help="Version to publish as.")
@click.option("--note", default="", help="Release note stored in the manifest.")
@click.option("--breaking", is_flag=True, help="Flag this version as breaking.")
@click.option("--meta", multiple=True, metavar="K=V", help="Free metadata; repeatable.")
@click.option("--force", is_flag=True, help="Move an existing MODEL@VERSION tag to this content.")
@click.option("--move", is_flag=True, help="Move files into the store, leaving read-only links behind.")
@click.option("--strict", is_flag=True, help="Malformed JSON/safetensors files are errors, not warnings.")
@click.option("--jobs", "-j", default=4, show_default=True, help="Files hashed and copied in parallel.")
@pass_ctx
def add(c: Ctx, path, model, version, note, breaking, meta, force, move, strict, jobs) -> None:
    """Snapshot a directory (or one file) as MODEL@VERSION; prints the manifest digest."""
    from casstore.errors import InvalidInput
    from casstore.ingest import add as do_add

    pairs = {}
    for kv in meta:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise InvalidInput(f"invalid --meta {kv!r}: expected KEY=VALUE")
        pairs[k] = v
    r = do_add(
        c.store(), path, model, version, note=note, breaking=breaking, meta=pairs,
        force=force, move=move, strict=strict, jobs=jobs, warn=c.warn,
    )
    if r.replaced:
        c.warn(f"moved tag {model}@{version} from {r.replaced} to {r.manifest} (--force)")
    c.info(
        f"{model}@{version}: {r.files} files, {_size(r.bytes)}; {r.new_blobs} new blobs ({_size(r.new_bytes)}), "
        f"{'unchanged, ' if r.unchanged else ''}{'now current, ' if r.current else ''}{r.elapsed:.2f}s"
    )
    c.result(r.to_json(), str(r.manifest))


def _usage(c: Ctx, model: str | None = None):
    """Per-version sizes with the GC's view: last use, why each is kept, what gc would free."""
    from casstore.gc import plan, read_state, root_reasons
    from casstore.usage import store_versions, usage

    store = c.store()
    versions, current = store_versions(store, c.warn)
    state = read_state(store)
    policy = _policy(None, None, None, None)
    details = {(v.model, v.version): (v.last_used, root_reasons(v, policy, state.now)) for v in state.versions}
    if model:
        _ref(model)
        versions = {k: v for k, v in versions.items() if k[0] == model}
    return usage(versions, current, details), plan(state, policy), state, policy


def _ago(now: float, t: float | None) -> str:
    if not t:
        return "never"
    d = max(0.0, now - t)
    return f"{d / 86400:.0f}d ago" if d >= 86400 else f"{d / 3600:.0f}h ago" if d >= 3600 else f"{d / 60:.0f}m ago"


@cli.command("list")
@click.argument("model", required=False)
@pass_ctx
def list_(c: Ctx, model) -> None:
    """Models and versions in the store, which is current, their sizes, last use and why GC keeps them."""
    models, _, state, _ = _usage(c, model)
    lines = []
    for mu in models:
        lines.append(f"{mu.model}  ({_size(mu.size)}, {_size(mu.unique)} not shared with other models)")
        for v in mu.versions:
            mark = "*" if v.current else " "
            lines.append(
                f"  {mark} {v.version:<16} {v.files:>6} files {_size(v.size):>12}  unique {_size(v.unique):>12}  "
                f"shared {_size(v.shared):>12}  used {_ago(state.now, v.last_used):>9}  "
                + ("kept: " + "; ".join(v.roots) if v.roots else "collectable")
            )
    c.result({"models": [m.to_json() for m in models]}, "\n".join(lines) if lines else None)
    if not lines:
        c.info("no models in the store")


@cli.command()
@click.argument("ref")
@pass_ctx
def show(c: Ctx, ref) -> None:
    """The manifest of MODEL[@VERSION]: files, sizes, digests, metadata."""
    r = _ref(ref)
    version, digest, m = c.store().load(r.model, r.version)
    data = {"manifest": str(digest), **m.to_json()}
    lines = [
        f"{m.name}@{m.version}  manifest {digest}",
        f"created {_when(m.created)}  {len(m.entries)} files  {_size(m.size)}"
        + ("  BREAKING" if m.breaking else ""),
    ]
    if m.note:
        lines.append(f"note: {m.note}")
    for k, v in m.meta.items():
        lines.append(f"meta: {k}={v}")
    for e in m.entries:
        lines.append(f"  {e.mode:o} {e.size:>14}  {e.digest.short}  {e.path}")
    c.result(data, "\n".join(lines))


@cli.command()
@click.argument("ref")
@pass_ctx
def path(c: Ctx, ref) -> None:
    """Print a read-only directory holding the version's files (inside the store)."""
    from casstore.materialize import view

    r = _ref(ref)
    store = c.store()
    version, digest, m = store.load(r.model, r.version)
    p = view(store, digest, m)
    c.result({"model": r.model, "version": version, "manifest": str(digest), "path": str(p)}, str(p))


@cli.command()
@click.argument("ref")
@click.argument("dest", type=click.Path(path_type=str))
@click.option("--link", type=click.Choice(["auto", "reflink", "hardlink", "symlink", "copy"]), default="auto", show_default=True)
@click.option("--clean", is_flag=True, help="Remove files in DEST that the version does not list.")
@pass_ctx
def checkout(c: Ctx, ref, dest, link, clean) -> None:
    """Materialise MODEL[@VERSION]'s files into DEST (read-only)."""
    from casstore.materialize import checkout as do_checkout

    r = _ref(ref)
    store = c.store()
    version, digest, m = store.load(r.model, r.version)
    res = do_checkout(store, m, dest, link=link, clean=clean)
    modes = ", ".join(f"{n} {k}" for k, n in sorted(res.modes.items())) or "nothing new"
    c.info(f"{r.model}@{version} -> {res.dest}: {modes}; {res.unchanged} unchanged, {len(res.removed)} removed")
    c.result({"model": r.model, "version": version, "manifest": str(digest), **res.to_json()}, str(res.dest))


def _switched(c: Ctx, model: str, s) -> None:
    c.info(f"{model}: {s.previous or 'none'} -> {s.version}")
    c.result({"model": model, "version": s.version, "previous": s.previous, "manifest": str(s.manifest), "seq": s.seq})


@cli.command()
@click.argument("ref")
@click.option("--expect", metavar="VERSION", help="Switch only if the current version is still VERSION.")
@pass_ctx
def use(c: Ctx, ref, expect) -> None:
    """Switch the current pointer to MODEL@VERSION (present in the store)."""
    from casstore.current import use as do_use
    from casstore.errors import InvalidInput

    r = _ref(ref)
    if r.version is None:
        raise InvalidInput(f"`cas use` needs MODEL@VERSION, got {ref!r}")
    _switched(c, r.model, do_use(c.store(), r.model, r.version, expect=expect))


@cli.command()
@click.argument("model")
@click.argument("version", required=False)
@click.option("--fetch", "refetch", is_flag=True, help="Fetch the target version first if its blobs were collected.")
@_remote_options
@pass_ctx
def rollback(c: Ctx, model, version, refetch, remote_name, insecure) -> None:
    """Switch current back: to the previous version, or to VERSION."""
    from casstore.current import rollback as do_rollback
    from casstore.errors import NotFound
    from casstore.history import rollback_target

    r = _ref(model if version is None else f"{model}@{version}")
    store = c.store()
    try:
        _switched(c, r.model, do_rollback(store, r.model, r.version))
    except NotFound:
        if not refetch:
            raise
        from casstore.fetching import fetch as do_fetch, open_remotes

        target, _ = rollback_target(store.refs.history(r.model), r.version)
        remotes = open_remotes(remote_name, insecure=insecure)
        _run(lambda: do_fetch(store, remotes, r.model, target), remotes)
        _switched(c, r.model, do_rollback(store, r.model, r.version))


@cli.command()
@click.argument("model")
@pass_ctx
def log(c: Ctx, model) -> None:
    """The history of MODEL's current-pointer switches, newest first."""
    r = _ref(model)
    hist = c.store().refs.history(r.model)
    if not hist:
        c.store().resolve(r.model)
    lines = [
        f"{s.seq:>5}  {_when(s.time)}  {s.action:<8} {s.previous or '-':>12} -> {s.version:<12} {s.user}@{s.host}"
        for s in reversed(hist)
    ]
    data = [
        {**{k: getattr(s, k) for k in ("seq", "version", "previous", "action", "time", "host", "pid", "user")},
         "manifest": str(s.manifest)}
        for s in reversed(hist)
    ]
    c.result({"model": r.model, "history": data}, "\n".join(lines))


@cli.command()
@click.argument("ref", required=False)
@click.option("--fast", is_flag=True, help="Check sizes only, without re-hashing.")
@click.option("--jobs", "-j", default=2, show_default=True, help="Blobs hashed in parallel.")
@click.option("--repair", is_flag=True, help="Fetch good copies of corrupt or missing blobs from the remotes.")
@_remote_options
@pass_ctx
def verify(c: Ctx, ref, fast, jobs, repair, remote_name, insecure) -> None:
    """Re-hash blobs; quarantine corrupt ones and name the versions that use them."""
    from casstore.errors import IntegrityError
    from casstore.verify import verify as do_verify

    r = _ref(ref) if ref else None
    rep = do_verify(c.store(), r.model if r else None, r.version if r else None, fast=fast, jobs=jobs)
    wants = {p.what: p.size for p in rep.problems if p.repairable}
    if repair and wants:
        from casstore.digest import Digest
        from casstore.download import Downloader, Settings
        from casstore.fetching import open_remotes

        remotes = open_remotes(remote_name, insecure=insecure)
        dl = Downloader(c.store(), remotes, Settings.from_env())
        stats = _run(lambda: dl.fetch({Digest.parse(k): v for k, v in wants.items()}), remotes)
        c.info(f"repaired {len(wants)} blob(s): {_size(stats.bytes_downloaded)} downloaded")
        rep = do_verify(c.store(), r.model if r else None, r.version if r else None, fast=fast, jobs=jobs)
    for p in rep.problems:
        (c.warn if p.kind == "format" else c.info)(f"{p.kind}: {p.what}: {p.detail}")
        for u in p.used_by[:20]:
            c.info(f"    used by {u}")
    c.info(
        f"checked {rep.blobs} blobs ({_size(rep.bytes)}) and {rep.manifests} manifests in {rep.elapsed:.2f}s: "
        + ("ok" if rep.ok else f"{sum(p.kind != 'format' for p in rep.problems)} problem(s)")
    )
    c.result(rep.to_json())
    if not rep.ok:
        raise IntegrityError(
            f"verify found {sum(p.kind != 'format' for p in rep.problems)} problem(s); "
            f"corrupt blobs moved to {c.store().layout.quarantine}"
        )


@cli.command()
@pass_ctx
def du(c: Ctx) -> None:
    """What uses space: per model and version, unique and shared bytes, and what gc would free."""
    models, p, state, policy = _usage(c)
    referenced = {b for v in state.versions for b in v.blobs}
    total = sum(size for size, _ in state.blobs.values())
    unreferenced = sum(size for d, (size, _) in state.blobs.items() if d not in referenced)
    lines = [f"{'model/version':<32} {'size':>11} {'unique':>11} {'shared':>11} {'used':>9}  kept because"]
    for mu in models:
        lines.append(f"{mu.model:<32} {_size(mu.size):>11} {_size(mu.unique):>11}")
        for v in mu.versions:
            lines.append(f"  {v.version + (' *' if v.current else ''):<30} {_size(v.size):>11} {_size(v.unique):>11} "
                         f"{_size(v.shared):>11} {_ago(state.now, v.last_used):>9}  {'; '.join(v.roots) or '-'}")
    limit = f" (limit {_size(policy.max_size)})" if policy.max_size is not None else ""
    lines.append(f"blobs in store: {_size(total)}{limit}; referenced by no version: {_size(unreferenced)}; "
                 f"`cas gc` would free {_size(p.bytes_freed)}")
    c.result({"models": [m.to_json() for m in models], "blob_bytes": total, "unreferenced_bytes": unreferenced,
              "gc_would_free": p.bytes_freed, "max_size": policy.max_size}, "\n".join(lines))


@cli.group()
def remote() -> None:
    """Configure remotes: a directory, file://, http(s)://."""


@remote.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--default", "make_default", is_flag=True, help="Make it the default remote.")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP to a host that is not loopback.")
@pass_ctx
def remote_add(c: Ctx, name, url, make_default, insecure) -> None:
    """Add (or replace) remote NAME at URL."""
    from casstore import remoteconfig

    remoteconfig.add(name, url, default=make_default, insecure=insecure)
    c.info(f"remote {name} -> {url}")
    c.result({"name": name, "url": url})


@remote.command("list")
@pass_ctx
def remote_list(c: Ctx) -> None:
    """Configured remotes, the default first."""
    from casstore import remoteconfig

    specs, default = remoteconfig.configured()
    rows = [{"name": s.name, "url": s.url, "default": s.name == default, "token": bool(s.token)} for s in specs]
    c.result({"remotes": rows}, "\n".join(f"{'*' if r['default'] else ' '} {r['name']:<16} {r['url']}" for r in rows) or None)


@remote.command("remove")
@click.argument("name")
@pass_ctx
def remote_remove(c: Ctx, name) -> None:
    """Remove remote NAME."""
    from casstore import remoteconfig

    remoteconfig.remove(name)
    c.result({"removed": name})


@cli.command()
@click.argument("ref")
@_remote_options
@click.option("--force", is_flag=True, help="Move the remote's tag if it names other content.")
@click.option("--jobs", "-j", default=8, show_default=True, help="Objects uploaded in parallel.")
@pass_ctx
def push(c: Ctx, ref, remote_name, insecure, force, jobs) -> None:
    """Publish MODEL@VERSION: only blobs the remote lacks, then the manifest, then the index."""
    from casstore.fetching import open_remotes
    from casstore.publish import push as do_push

    r = _ref(ref)
    store = c.store()
    remotes = open_remotes(remote_name, insecure=insecure)
    res = _run(lambda: do_push(store, remotes[0], r.model, r.version, force=force, jobs=jobs), remotes)
    c.info(f"{r.model}@{res.version} -> {remotes[0].url}: {res.blobs_sent} blobs sent ({_size(res.bytes_sent)}), "
           f"{res.blobs_present} already there, {res.elapsed:.2f}s")
    c.result(res.to_json(), res.manifest)


@cli.command()
@click.argument("ref")
@_remote_options
@click.option("--jobs", "-j", default=8, show_default=True, help="Parallel connections.")
@click.option("--limit-rate", metavar="RATE", help="Total bandwidth, e.g. 50M (bytes per second).")
@pass_ctx
def fetch(c: Ctx, ref, remote_name, insecure, jobs, limit_rate) -> None:
    """Download MODEL[@VERSION] (latest if none) into the store, verifying every byte."""
    from casstore.download import Settings
    from casstore.fetching import fetch as do_fetch, open_remotes
    from casstore.sizes import parse_size

    r = _ref(ref)
    store = c.store()
    settings = Settings.from_env(jobs=jobs, rate=parse_size(limit_rate) if limit_rate else None)
    remotes = open_remotes(remote_name, insecure=insecure, stall_timeout=float(os.environ.get("CAS_STALL_TIMEOUT", 30)))
    with _progress(c, f"fetch {ref}") as progress:
        res = _run(lambda: do_fetch(store, remotes, r.model, r.version, settings=settings, progress=progress), remotes)
    from casstore.project import Project

    project = Project.find()
    if project is not None:
        from casstore.sync import record_fetch

        if record_fetch(project, r.model, res.version, res.manifest, store.get_manifest(res.manifest)):
            c.info(f"recorded {r.model}@{res.version} in {project.lock_path}")
    st = res.stats
    c.info(f"{r.model}@{res.version}: {_size(st.bytes_downloaded)} downloaded, {_size(st.bytes_reused)} already here, "
           f"{_size(st.bytes_resumed)} resumed, {st.retries} retries, {res.elapsed:.2f}s"
           + (" (now current)" if res.current else ""))
    c.result(res.to_json(), str(res.manifest))
    _auto_gc(c)


@cli.command()
@click.argument("model")
@_remote_options
@pass_ctx
def versions(c: Ctx, model, remote_name, insecure) -> None:
    """Versions of MODEL published on the remote, newest first."""
    from casstore.fetching import open_remotes, versions as do_versions
    from casstore.versioning import sort_key

    r = _ref(model)
    remotes = open_remotes(remote_name, insecure=insecure)
    idx = _run(lambda: do_versions(remotes, r.model), remotes)
    rows = sorted(idx.versions.items(), key=lambda kv: sort_key(kv[0]), reverse=True)
    lines = [f"{v:<16} {_when(e.created)}  {e.files:>6} files {_size(e.size):>12}" + ("  BREAKING" if e.breaking else "")
             for v, e in rows]
    c.result({"model": r.model, "versions": [{"version": v, **e.to_json()} for v, e in rows]}, "\n".join(lines))


@cli.command("check-updates")
@click.argument("models", nargs=-1)
@_remote_options
@click.option("--pre", is_flag=True, help="Consider pre-releases.")
@pass_ctx
def check_updates(c: Ctx, models, remote_name, insecure, pre) -> None:
    """For each local model, whether the remote has a newer version, and whether it is breaking."""
    from casstore.fetching import open_remotes
    from casstore.updates import check_updates as do_check

    names = [_ref(m).model for m in models] or None
    remotes = open_remotes(remote_name, insecure=insecure)
    infos = _run(lambda: do_check(c.store(), remotes, names, prereleases=pre), remotes)
    lines = [f"{i.model:<24} {i.current:>12} -> {i.latest if i.available else '(up to date)'}"
             + ("  BREAKING" if i.breaking else "")
             + (f" (non-breaking: {i.compatible})" if i.breaking and i.compatible else "") for i in infos]
    c.result({"models": [i.to_json() for i in infos]}, "\n".join(lines) or None)


def _print_plan(c: Ctx, p) -> None:
    if p.up_to_date:
        c.info(f"{p.model} is up to date ({p.current})")
        return
    c.info(f"update {p.model}: {p.current} -> {p.target} ({p.strategy}{', BREAKING' if p.breaking else ''})")
    c.info(f"  download {_size(p.download_bytes)}; {len(p.added)} files added, {len(p.changed)} changed, "
           f"{len(p.removed)} removed")
    for label, paths in (("+", p.added), ("~", p.changed), ("-", p.removed)):
        for path in paths[:50]:
            c.info(f"  {label} {path}")


@cli.command()
@click.argument("model")
@click.option("--to", "to", metavar="VERSION", help="Target version (default: the latest release).")
@click.option("--allow-breaking", is_flag=True, help="Allow a major bump or a version flagged breaking.")
@click.option("--strategy", type=click.Choice(["conservative", "aggressive", "parallel"]), default="conservative", show_default=True)
@click.option("--dry-run", is_flag=True, help="Print the plan and stop.")
@click.option("--pre", is_flag=True, help="Consider pre-releases.")
@click.option("--jobs", "-j", default=8, show_default=True)
@click.option("--limit-rate", metavar="RATE")
@_remote_options
@pass_ctx
def update(c: Ctx, model, to, allow_breaking, strategy, dry_run, pre, jobs, limit_rate, remote_name, insecure) -> None:
    """Fetch a newer version completely, then switch current to it in one step."""
    from casstore.download import Settings
    from casstore.fetching import open_remotes
    from casstore.sizes import parse_size
    from casstore.updates import execute_update, plan_update

    r = _ref(model)
    store = c.store()
    remotes = open_remotes(remote_name, insecure=insecure)
    settings = Settings.from_env(jobs=jobs, rate=parse_size(limit_rate) if limit_rate else None)

    async def go():
        plan = await plan_update(store, remotes, r.model, to=to, strategy=strategy, allow_breaking=allow_breaking,
                                 prereleases=pre)
        _print_plan(c, plan)
        if dry_run or plan.up_to_date:
            return plan, None
        return plan, await execute_update(store, remotes, plan, settings=settings)

    plan, done = _run(go, remotes)
    out = plan.to_json() | {"dry_run": dry_run, "switched": done is not None}
    if done is not None:
        c.info(f"{r.model}: {plan.current} -> {plan.target}; `cas rollback {r.model}` goes back")
        out["bytes_downloaded"] = done[0].stats.bytes_downloaded
    c.result(out)
    if done is not None:
        _auto_gc(c)


def _project():
    from casstore.errors import NotFound
    from casstore.project import Project

    p = Project.find()
    if p is None:
        raise NotFound(f"no cas.toml in {os.getcwd()} or its parents")
    return p


@cli.command()
@click.argument("models", nargs=-1)
@_remote_options
@click.option("--pre", is_flag=True, help="Allow pre-releases.")
@pass_ctx
def lock(c: Ctx, models, remote_name, insecure, pre) -> None:
    """Resolve cas.toml into cas.lock. MODEL re-resolves it; MODEL@REQ also sets its requirement."""
    from casstore.fetching import open_remotes
    from casstore.sync import lock as do_lock

    project = _project()
    upgrade = []
    for text in models:
        name, sep, req = text.partition("@")
        _ref(name)
        if sep:
            project.set_requirement(name, req)
        elif name not in project.models:
            project.set_requirement(name, "latest")
        upgrade.append(name)
    remotes = open_remotes(remote_name or project.remote, insecure=insecure)
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
@_remote_options
@pass_ctx
def sync(c: Ctx, frozen, offline, jobs, remote_name, insecure) -> None:
    """Fetch and materialise exactly what cas.lock says."""
    from casstore.download import Settings
    from casstore.sync import sync as do_sync

    project = _project()
    remotes = []
    if not offline:
        from casstore.fetching import open_remotes

        remotes = open_remotes(remote_name or project.remote, insecure=insecure)
    res = _run(lambda: do_sync(project, c.store(), remotes, frozen=frozen, offline=offline,
                               settings=Settings.from_env(jobs=jobs)), remotes)
    for name, v in res.models.items():
        c.info(f"{name}@{v} -> {project.root / project.models[name].path}")
    c.result(res.to_json())


def _policy(max_size, retention_days, keep_last, grace):
    from casstore.config import load_user_config
    from casstore.gc import DEFAULT_GRACE, Policy
    from casstore.sizes import parse_size

    cfg = load_user_config().get("gc", {})
    ms = max_size if max_size is not None else cfg.get("max_size")
    return Policy(
        max_size=parse_size(str(ms)) if ms is not None else None,
        retention_days=float(retention_days if retention_days is not None else cfg.get("retention_days", 30)),
        keep_last=int(keep_last if keep_last is not None else cfg.get("keep_last", 2)),
        grace=float(grace if grace is not None else cfg.get("grace", DEFAULT_GRACE)),
    )


def _gc(c: Ctx, policy, dry_run: bool, quiet_plan: bool = False) -> dict:
    from casstore.gc import execute, plan, read_state

    store = c.store()
    p = plan(read_state(store), policy)
    say = (lambda m: None) if quiet_plan else c.info
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
    """After fetch/update: a light GC when a configured gc.max_size is exceeded."""
    from casstore.config import load_user_config
    from casstore.gc import store_size

    if load_user_config().get("gc", {}).get("max_size") is None:
        return
    policy = _policy(None, None, None, None)
    if store_size(c.store()) <= policy.max_size:
        return
    out = _gc(c, policy, dry_run=False, quiet_plan=True)
    r = out["result"]
    c.info(f"auto gc (over gc.max_size {_size(policy.max_size)}): freed {_size(r['bytes_freed'])}")


@cli.command()
@click.argument("ref")
@pass_ctx
def pin(c: Ctx, ref) -> None:
    """Pin MODEL@VERSION: GC never collects it."""
    from casstore.gc import mark

    r = _ref(ref)
    store = c.store()
    version, _ = store.resolve(r.model, r.version)
    mark(store, r.model, version, "pins")
    c.result({"pinned": f"{r.model}@{version}"})


@cli.command()
@click.argument("ref")
@pass_ctx
def unpin(c: Ctx, ref) -> None:
    """Remove a pin."""
    from casstore.errors import NotFound
    from casstore.gc import unmark

    r = _ref(ref)
    version, _ = c.store().resolve(r.model, r.version)
    if not unmark(c.store(), r.model, version, "pins"):
        raise NotFound(f"{r.model}@{version} is not pinned")
    c.result({"unpinned": f"{r.model}@{version}"})


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
    from casstore.config import load_user_config
    from casstore.errors import InvalidInput
    from casstore.remoteconfig import _save
    from casstore.sizes import parse_size

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
    _save(cfg)
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
@click.option("--shared", is_flag=True, help="Group-shared store: group-writable directories, setgid, umask 002.")
@pass_ctx
def init(c: Ctx, shared) -> None:
    """Create the store (or turn on group-shared mode for an existing one)."""
    from casstore.shared import make_shared

    store = c.store()
    if shared:
        make_shared(store)
    c.result({"store": str(store.root), "shared": shared}, str(store.root))


@cli.command()
@pass_ctx
def doctor(c: Ctx) -> None:
    """Report wrong permissions, stale locks, orphaned temp files and unknown files in the store."""
    from casstore.doctor import diagnose

    findings = diagnose(c.store())
    for f in findings:
        c.warn(f"{f.kind}: {f.path}: {f.detail}")
    c.info(f"{len(findings)} finding(s)")
    c.result({"findings": [f.to_json() for f in findings]})
    if findings:
        sys.exit(1)


@cli.command()
@click.option("--root", type=click.Path(path_type=str), required=True, help="Remote directory to serve.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback unless told otherwise).")
@click.option("--port", default=8700, show_default=True, help="Port (0: any free port).")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False), help="File holding the push token (or $CAS_SERVE_TOKEN).")
@click.option("--max-object-size", default="1T", show_default=True, help="Largest object accepted by push.")
@pass_ctx
def serve(c: Ctx, root, host, port, token_file, max_object_size) -> None:
    """Serve a remote directory over HTTP: reads for all, push with the token."""
    import asyncio
    from pathlib import Path

    from casstore.serve import start
    from casstore.sizes import parse_size

    token = Path(token_file).read_text().strip() if token_file else os.environ.get("CAS_SERVE_TOKEN")

    async def run():
        runner, bound = await start(Path(root), host, port, token, parse_size(max_object_size))
        click.echo(f"serving {root} on http://{host}:{bound}/ ({'push enabled' if token else 'read-only'})", err=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


class _progress:
    """A rich progress bar on a TTY; nothing otherwise (or with -q / --json)."""

    def __init__(self, c: Ctx, label: str) -> None:
        self.on = not (c.quiet or c.json) and sys.stderr.isatty()
        self.label = label

    def __enter__(self):
        if not self.on:
            return None
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

        self.bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), TimeRemainingColumn(), transient=True)
        self.bar.__enter__()
        self.task = self.bar.add_task(self.label, total=None)
        return lambda done, total: self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc):
        if self.on:
            self.bar.__exit__(*exc)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="cas", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except Exception as e:
        from casstore.errors import CasError

        if not isinstance(e, (CasError, OSError)):
            raise
        code = exit_code(e)
        click.echo(f"cas: error: {e}", err=True)
        if "--json" in (argv if argv is not None else sys.argv[1:]):
            click.echo(json.dumps({"ok": False, "error": {"type": type(e).__name__, "message": str(e), "exit_code": code}}))
        sys.exit(code)


if __name__ == "__main__":
    main()
