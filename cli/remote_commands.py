"""Commands that talk to remotes: remote, push, fetch, versions, serve."""

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
    _when,
    cli,
    pass_ctx,
)
from .gc_commands import _auto_gc


@cli.group()
def remote() -> None:
    """Configure remotes: a directory (or another store, read-only), file://, http(s)://, s3://BUCKET/PREFIX."""


@remote.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--default", "make_default", is_flag=True, help="Make it the default remote.")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP to a host that is not loopback.")
@click.option("--force", is_flag=True, help="Replace a remote of the same name.")
@click.option("--endpoint-url", metavar="URL", help="s3:// only: an S3-compatible server (MinIO, Ceph, R2); AWS needs none.")
@click.option("--region", metavar="REGION", help="s3:// only: the bucket's region (default: AWS_REGION, else us-east-1).")
@pass_ctx
def remote_add(c: Ctx, name, url, make_default, insecure, force, endpoint_url, region) -> None:
    """Add remote NAME at URL (replacing one of that name only with --force).

    URL: a directory, file://, http(s):// (a static server or `cas serve`), or s3://BUCKET/PREFIX
    (credentials from the standard AWS chain only)."""
    from casstore.remotes import config as remoteconfig

    remoteconfig.add(name, url, default=make_default, insecure=insecure, force=force, endpoint_url=endpoint_url,
                     region=region)
    c.info(f"remote {name} -> {url}")
    c.result({"name": name, "url": url})


@remote.command("list")
@pass_ctx
def remote_list(c: Ctx) -> None:
    """Configured remotes, the default first."""
    from casstore.remotes import config as remoteconfig

    specs, default = remoteconfig.configured()
    rows = [{"name": s.name, "url": s.url, "default": s.name == default, "token": bool(s.token),
             **({"endpoint_url": s.endpoint_url} if s.endpoint_url else {}), **({"region": s.region} if s.region else {})}
            for s in specs]
    c.result({"remotes": rows}, "\n".join(f"{'*' if r['default'] else ' '} {r['name']:<16} {r['url']}" for r in rows) or None)


@remote.command("remove")
@click.argument("name")
@pass_ctx
def remote_remove(c: Ctx, name) -> None:
    """Remove remote NAME."""
    from casstore.remotes import config as remoteconfig

    remoteconfig.remove(name)
    c.result({"removed": name})


@cli.command()
@click.argument("ref")
@_remote_options
@click.option("--force", is_flag=True, help="Move the remote's tag if it names other content.")
@click.option("--jobs", "-j", default=8, show_default=True, help="Objects uploaded in parallel.")
@click.option("--backfill-chunks", is_flag=True,
              help="Also publish chunk maps for large blobs the remote already has (for delta updates).")
@click.option("--limit-rate", metavar="RATE", help="Total upload bandwidth, e.g. 50M (bytes per second).")
@pass_ctx
def push(c: Ctx, ref, remote_name, insecure, force, jobs, backfill_chunks, limit_rate) -> None:
    """Publish MODEL@VERSION: only blobs the remote lacks, then the manifest, then the index."""
    from casstore.model.sizes import parse_size
    from casstore.ops.fetch import open_remotes
    from casstore.ops.push import push as do_push

    rate = parse_size(limit_rate) if limit_rate else None
    r = _ref(ref)
    store = c.store()
    remotes = open_remotes(remote_name, insecure=insecure, offline=c.offline)
    with _progress(c, f"push {ref}") as progress:
        res = _run(lambda: do_push(store, remotes[0], r.model, r.version, force=force, jobs=jobs, progress=progress,
                                     backfill_chunks=backfill_chunks, limit_rate=rate),
                   remotes)
    c.info(f"{r.model}@{res.version} -> {remotes[0].url}: {res.blobs_sent} blobs sent ({_size(res.bytes_sent)}), "
           f"{res.blobs_present} already there, {res.maps_sent} chunk maps, {res.elapsed:.2f}s")
    c.result(res.to_json(), res.manifest)


@cli.command()
@click.argument("ref")
@_remote_options
@click.option("--jobs", "-j", default=8, show_default=True, help="Parallel connections.")
@click.option("--limit-rate", metavar="RATE", help="Total bandwidth, e.g. 50M (bytes per second).")
@_delta_option
@click.option("--print-path", is_flag=True,
              help="Print the version's read-only directory instead of its manifest digest: DIR=$(cas fetch M --print-path).")
@click.option("--dry-run", is_flag=True, help="Say what the fetch would download (reads the index and manifest only).")
@_select_options
@pass_ctx
def fetch(c: Ctx, ref, remote_name, insecure, jobs, limit_rate, delta, print_path, dry_run, include, exclude) -> None:
    """Download MODEL[@VERSION] (latest if none) into the store, verifying every byte."""
    from casstore.model.sizes import parse_size
    from casstore.ops.fetch import fetch as do_fetch
    from casstore.ops.fetch import remotes_for_fetch
    from casstore.transfer.download import Settings
    from casstore.transfer.settings import delta_mode

    r = _ref(ref)
    selection = _selection(include, exclude)
    store = c.store()
    settings = Settings.from_env(jobs=jobs, rate=parse_size(limit_rate) if limit_rate else None)
    if delta:
        settings.delta = delta_mode(delta)
    remotes = remotes_for_fetch(remote_name, insecure=insecure, offline=c.offline)
    if dry_run:
        from casstore.ops.fetch import plan_fetch

        plan = _run(lambda: plan_fetch(store, remotes, r.model, r.version, settings=settings, selection=selection),
                    remotes)
        c.info(f"{r.model}@{plan.version}: {plan.files} files, {_size(plan.bytes)}; {_size(plan.bytes_here)} already "
               f"here; would download {_size(plan.bytes_download)} of {plan.blobs_missing} missing blobs"
               + (f" ({_size(plan.bytes_from_local)} of their {_size(plan.bytes_missing)} from local chunks)"
                  if plan.bytes_from_local else "")
               + (f", copy {_size(plan.bytes_copied)} within this filesystem" if plan.bytes_copied else ""))
        c.result({**plan.to_json(), "dry_run": True}, str(plan.manifest))
        return
    with _progress(c, f"fetch {ref}") as progress:
        res = _run(lambda: do_fetch(store, remotes, r.model, r.version, settings=settings, progress=progress,
                                    offline=c.offline, selection=selection), remotes)
    from casstore.ops.project import Project

    project = Project.find()
    if project is not None and res.selected is not None:
        c.warn(f"{project.lock_path} is unchanged: a partial fetch locks nothing (cas.toml's include = [...] "
               "selects files for `cas sync`)")
    elif project is not None:
        from casstore.ops.project import record_fetch

        changed, kept = record_fetch(project, r.model, res.version, res.manifest, store.get_manifest(res.manifest))
        if kept is not None:
            c.warn(f"{project.lock_path} keeps {r.model}@{kept}; `cas lock {r.model}@{res.version}` records this "
                   "version instead")
        elif changed:
            c.info(f"recorded {r.model}@{res.version} in {project.lock_path}")
    st = res.stats
    c.info(f"{r.model}@{res.version}: {_size(st.bytes_downloaded)} downloaded, "
           + (f"{_size(st.bytes_copied)} copied within this filesystem, " if st.bytes_copied else "")
           + f"{_size(st.bytes_reused)} already here, "
           f"{_size(st.bytes_from_local)} from local chunks, {_size(st.bytes_resumed)} resumed, {st.retries} retries, "
           f"{res.elapsed:.2f}s"
           + (f"; {res.selected} selected files of {res.files if res.files is not None else 'its'}"
              if res.selected is not None else "")
           + (" (now current)" if res.current else ""))
    if print_path:
        from casstore.ops.checkout import view

        c.result({**res.to_json(), "path": str(view(store, res.manifest, store.get_manifest(res.manifest)))},
                 str(store.layout.view(res.manifest)))
    else:
        c.result(res.to_json(), str(res.manifest))
    _auto_gc(c, [res.manifest])


@cli.command()
@click.argument("model")
@_remote_options
@pass_ctx
def versions(c: Ctx, model, remote_name, insecure) -> None:
    """Versions of MODEL published on the remote, newest first."""
    from casstore.model.versioning import sort_key
    from casstore.ops.fetch import open_remotes
    from casstore.ops.fetch import versions as do_versions

    r = _ref(model)
    remotes = open_remotes(remote_name, insecure=insecure, offline=c.offline)
    idx = _run(lambda: do_versions(remotes, r.model), remotes)
    rows = sorted(idx.versions.items(), key=lambda kv: sort_key(kv[0]), reverse=True)
    lines = [f"{v:<16} {_when(e.created)}  {e.files:>6} files {_size(e.size):>12}" + ("  BREAKING" if e.breaking else "")
             for v, e in rows]
    c.result({"model": r.model, "versions": [{"version": v, **e.to_json()} for v, e in rows]}, "\n".join(lines))



@cli.command()
@click.option("--root", type=click.Path(path_type=str), required=True, help="Remote directory to serve (or a store: served read-only, its versions from its tags).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback unless told otherwise).")
@click.option("--port", default=8700, show_default=True, help="Port (0: any free port).")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False), help="File holding the push token (or $CAS_SERVE_TOKEN).")
@click.option("--max-object-size", default="1T", show_default=True, help="Largest object accepted by push.")
@click.option("--max-connections", default=512, show_default=True,
              help="Open connections at most; the one idle longest is dropped for a new one.")
@click.option("--max-connections-per-client", default=64, show_default=True,
              help="Open connections per client address at most; its own oldest idle one goes for a new one.")
@click.option("--header-timeout", default=10.0, show_default=True, help="Seconds a new connection has to send a request.")
@click.option("--send-timeout", default=60.0, show_default=True,
              help="Seconds a response may wait for a client that reads nothing before the connection is closed.")
@pass_ctx
def serve(c: Ctx, root, host, port, token_file, max_object_size, max_connections, max_connections_per_client,
          header_timeout, send_timeout) -> None:
    """Serve a remote directory over HTTP: reads for all, push with the token."""
    import asyncio
    from pathlib import Path

    from casstore.model.sizes import parse_size
    from casstore.remotes.server import Limits, start

    token = Path(token_file).read_text().strip() if token_file else os.environ.get("CAS_SERVE_TOKEN")

    async def run():
        limits = Limits(max_connections=max_connections, max_connections_per_client=max_connections_per_client,
                        header_timeout=header_timeout, send_timeout=send_timeout)
        srv = await start(Path(root), host, port, token, parse_size(max_object_size), limits)
        click.echo(f"serving {root} on http://{host}:{srv.port}/ ({'push enabled' if token else 'read-only'})", err=True)
        try:
            await asyncio.Event().wait()
        finally:
            await srv.close()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


