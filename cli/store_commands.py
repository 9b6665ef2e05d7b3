"""Commands on the local store: add, list, show, path, checkout, use, rollback, log, verify, du."""

from __future__ import annotations

import click

from .app import Ctx, _policy, _progress, _ref, _remote_options, _run, _size, _when, cli, pass_ctx


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
@click.option("--requires", multiple=True, metavar="REQ",
              help='What the version needs to run, e.g. "diffusers>=0.31" or "python>=3.10"; repeatable.')
@click.option("--jobs", "-j", default=4, show_default=True, help="Files hashed and copied in parallel.")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="Leave out matching paths; repeatable. 'NAME' matches at any depth, 'DIR/NAME' the whole "
                   "path, a trailing '/' directories only.")
@click.option("--no-default-excludes", is_flag=True,
              help="Keep .git/, .cache/huggingface/ and editor/OS litter, left out by default.")
@click.option("--allow-lfs-pointers", is_flag=True, help="Store Git LFS pointer files as they are instead of refusing.")
@click.option("--sha256/--no-sha256", default=None,
              help="Record each file's SHA-256 too (what HF, Git LFS and OCI name files by); costs CPU. "
                   "Default: [add] sha256 in the user config, else off.")
@pass_ctx
def add(c: Ctx, path, model, version, note, breaking, meta, requires, force, move, strict, jobs, exclude,
        no_default_excludes, allow_lfs_pointers, sha256) -> None:
    """Snapshot a directory (or one file) as MODEL@VERSION; prints the manifest digest."""
    from casstore.errors import InvalidInput
    from casstore.ops.add import add as do_add

    if sha256 is None:
        from casstore.config import user_setting

        sha256 = user_setting("add.sha256", False)
    pairs = {}
    for kv in meta:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise InvalidInput(f"invalid --meta {kv!r}: expected KEY=VALUE")
        pairs[k] = v
    with _progress(c, f"add {model}@{version}") as progress:
        r = do_add(
            c.store(), path, model, version, note=note, breaking=breaking, meta=pairs, requires=list(requires),
            force=force, move=move, strict=strict, jobs=jobs, exclude=exclude,
            default_excludes=not no_default_excludes, allow_lfs_pointers=allow_lfs_pointers, sha256=sha256,
            warn=c.warn, progress=progress,
        )
    if r.replaced:
        c.warn(f"moved tag {model}@{version} from {r.replaced} to {r.manifest} (--force)")
    if r.excluded:
        c.info(f"left out {len(r.excluded)} paths: {', '.join(r.excluded[:5])}"
               + (f" and {len(r.excluded) - 5} more (--json lists all)" if len(r.excluded) > 5 else ""))
    c.info(
        f"{model}@{version}: {r.files} files, {_size(r.bytes)}; {r.new_blobs} new blobs ({_size(r.new_bytes)}), "
        f"{'unchanged, ' if r.unchanged else ''}{'now current, ' if r.current else ''}{r.elapsed:.2f}s"
    )
    c.result(r.to_json(), str(r.manifest))


def _has_store(c: Ctx) -> bool:
    """False (with a line saying so, and an empty result) when no store exists yet."""
    from casstore.errors import NotFound

    try:
        c.store()
        return True
    except NotFound as e:
        c.info(str(e))
        c.result({"models": []})
        return False


def _usage(c: Ctx, model: str | None = None, *, totals: bool = False):
    """Per-version sizes with the GC's view: last use, why each is kept, what gc would free."""
    from casstore.ops.usage import report

    if model:
        _ref(model)
    rep = report(c.store(), model, _policy(None, None, None, None), totals=totals)
    for problem in rep.broken:
        c.warn(problem)
    return rep


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
    if model is None and not _has_store(c):
        return
    rep = _usage(c, model)
    lines = []
    for mu in rep.models:
        lines.append(f"{mu.model}  ({_size(mu.size)}, {_size(mu.unique)} not shared with other models)")
        for v in mu.versions:
            mark = "*" if v.current else " "
            lines.append(
                f"  {mark} {v.version + (' (part)' if v.partial else ''):<16} {v.files:>6} files {_size(v.size):>12}  "
                f"unique {_size(v.unique):>12}  "
                f"shared {_size(v.shared):>12}  used {_ago(rep.now, v.last_used):>9}  "
                + ("kept: " + "; ".join(v.roots) if v.roots else "collectable")
            )
    c.result(lambda: {"models": [m.to_json() for m in rep.models]}, "\n".join(lines) if lines else None)
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
        (f"created {_when(m.created)}  " if m.created else "") + f"{len(m.entries)} files  {_size(m.size)}"
        + ("  BREAKING" if m.breaking else ""),
    ]
    if m.note:
        lines.append(f"note: {m.note}")
    from casstore.model import runtime

    for req in runtime.of(m.meta):
        problems = runtime.unmet({runtime.META_KEY: req})
        lines.append(f"requires {req}" + (f"  -- not met here: {problems[0]}" if problems else ""))
    data["requires"] = runtime.of(m.meta)
    for k, v in m.meta.items():
        if k == runtime.META_KEY:
            continue
        lines.append(f"meta: {k}={v}")
    for e in m.entries:
        lines.append(f"  {e.mode:o} {e.size:>14}  {e.digest.short}  {e.path}")
    c.result(data, "\n".join(lines))


@cli.command()
@click.argument("ref")
@pass_ctx
def path(c: Ctx, ref) -> None:
    """Print a read-only directory holding the version's files (inside the store)."""
    from casstore.ops.checkout import view

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
    from casstore.ops.checkout import checkout as do_checkout

    r = _ref(ref)
    store = c.store()
    version, digest, m = store.load(r.model, r.version)
    res = do_checkout(store, m, dest, link=link, clean=clean)
    modes = ", ".join(f"{n} {k}" for k, n in sorted(res.modes.items())) or "nothing new"
    c.info(f"{r.model}@{version} -> {res.dest}: {modes}; {res.unchanged} unchanged, {len(res.removed)} removed")
    c.result({"model": r.model, "version": version, "manifest": str(digest), **res.to_json()}, str(res.dest))


def _switched(c: Ctx, model: str, s, before) -> None:
    """What a use or rollback did; ``before`` is the current record it started from."""
    changed = before is None or s.seq != before.seq
    c.info(f"{model}: {s.previous or 'none'} -> {s.version}" if changed
           else f"{model}: {s.version} is already current; nothing recorded")
    c.result({"model": model, "version": s.version, "previous": s.previous if changed else s.version,
              "manifest": str(s.manifest), "seq": s.seq, "changed": changed})


@cli.command()
@click.argument("ref")
@click.option("--expect", metavar="VERSION", help="Switch only if the current version is still VERSION.")
@click.option("--ignore-requirements", is_flag=True, help="Switch even if this environment lacks what the version requires.")
@pass_ctx
def use(c: Ctx, ref, expect, ignore_requirements) -> None:
    """Switch the current pointer to MODEL@VERSION (present in the store)."""
    from casstore.errors import InvalidInput
    from casstore.ops.switch import use as do_use

    r = _ref(ref)
    if r.version is None:
        raise InvalidInput(f"`cas use` needs MODEL@VERSION, got {ref!r}")
    before = c.store().refs.current(r.model)
    _switched(c, r.model, do_use(c.store(), r.model, r.version, expect=expect, ignore_requirements=ignore_requirements),
              before)


@cli.command()
@click.argument("model")
@click.argument("version", required=False)
@click.option("--fetch", "refetch", is_flag=True, help="Fetch the target version first if its blobs were collected.")
@_remote_options
@pass_ctx
def rollback(c: Ctx, model, version, refetch, remote_name, insecure) -> None:
    """Switch current back: to the previous version, or to VERSION."""
    from casstore.ops.switch import rollback as do_rollback

    r = _ref(model if version is None else f"{model}@{version}")
    store = c.store()
    before = store.refs.current(r.model)
    if not refetch:
        _switched(c, r.model, do_rollback(store, r.model, r.version), before)
        return
    from casstore.ops.fetch import open_remotes
    from casstore.ops.switch import rollback_fetching

    remotes = open_remotes(remote_name, insecure=insecure, offline=c.offline)
    _switched(c, r.model, _run(lambda: rollback_fetching(store, remotes, r.model, r.version), remotes), before)


@cli.command()
@click.argument("model")
@pass_ctx
def log(c: Ctx, model) -> None:
    """The history of MODEL's current-pointer switches, newest first."""
    r = _ref(model)
    hist = c.store().refs.history(r.model)
    if not hist:
        c.store().resolve(r.model)
    lines = [  # an rm record unset the current version: from it to none
        f"{s.seq:>5}  {_when(s.time)}  {s.action:<8} {(s.version if s.action == 'rm' else s.previous) or '-':>12} -> "
        f"{'-' if s.action == 'rm' else s.version:<12} {s.user}@{s.host}"
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
@click.option("--sha256", is_flag=True, help="Also check the SHA-256 each manifest records (costs CPU).")
@_remote_options
@pass_ctx
def verify(c: Ctx, ref, fast, jobs, repair, sha256, remote_name, insecure) -> None:
    """Re-hash blobs; quarantine corrupt ones and name the versions that use them."""
    from casstore.errors import IntegrityError
    from casstore.ops.verify import verify as do_verify

    r = _ref(ref) if ref else None
    with _progress(c, "verify") as progress:
        rep = do_verify(c.store(), r.model if r else None, r.version if r else None, fast=fast, jobs=jobs,
                        sha256=sha256, progress=progress)
    wants = sum(p.repairable for p in rep.problems)
    if repair and wants:
        from casstore.ops.fetch import open_remotes
        from casstore.ops.verify import repair as do_repair

        remotes = open_remotes(remote_name, insecure=insecure, offline=c.offline)
        with _progress(c, "repair") as progress:
            stats = _run(lambda: do_repair(c.store(), remotes, rep, progress=progress), remotes)
        c.info(f"repaired {wants} blob(s): {_size(stats.bytes_downloaded)} downloaded")
        rep = do_verify(c.store(), r.model if r else None, r.version if r else None, fast=fast, jobs=jobs,
                        sha256=sha256)
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
    if not _has_store(c):
        return
    rep = _usage(c, totals=True)
    t = rep.totals
    assert t is not None
    lines = [f"{'model/version':<32} {'size':>11} {'unique':>11} {'shared':>11} {'used':>9}  kept because"]
    for mu in rep.models:
        lines.append(f"{mu.model:<32} {_size(mu.size):>11} {_size(mu.unique):>11}")
        for v in mu.versions:
            lines.append(f"  {v.version + (' *' if v.current else ''):<30} {_size(v.size):>11} {_size(v.unique):>11} "
                         f"{_size(v.shared):>11} {_ago(rep.now, v.last_used):>9}  {'; '.join(v.roots) or '-'}")
    limit = f" (limit {_size(rep.policy.max_size)})" if rep.policy.max_size is not None else ""
    lines.append(f"blobs in store: {_size(t.blob_bytes)}{limit}; referenced by no version: "
                 f"{_size(t.unreferenced_bytes)}; quarantined and abandoned partial files: {_size(t.junk_bytes)}; "
                 f"`cas gc` would free {_size(t.plan.bytes_freed)}")
    c.result(lambda: {"models": [m.to_json() for m in rep.models], "blob_bytes": t.blob_bytes,  # 10k versions: 0.07 s
                      "unreferenced_bytes": t.unreferenced_bytes, "junk_bytes": t.junk_bytes,
                      "gc_would_free": t.plan.bytes_freed, "max_size": rep.policy.max_size}, "\n".join(lines))




@cli.command("rm")
@click.argument("ref")
@click.option("--force", is_flag=True, help="Also the current or a pinned version.")
@pass_ctx
def rm(c: Ctx, ref, force) -> None:
    """Drop MODEL@VERSION from the store; its blobs go at the next `cas gc`."""
    from casstore.ops.remove import remove

    r = _ref(ref)
    if r.version is None:
        raise click.UsageError("name the version to remove: cas rm MODEL@VERSION")
    res = remove(c.store(), r.model, r.version, force=force)
    c.info(f"removed {r.model}@{res.version}" + (f" (it was current: {r.model} has no current version now; "
                                                 f"`cas use` or `cas rollback {r.model}` picks one)"
                                                 if res.was_current else "") + "; `cas gc` frees its blobs")
    c.result(res.to_json())
