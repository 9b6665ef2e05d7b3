"""Bringing models in from the tools a team already uses, and handing them back: import, export."""

from __future__ import annotations

import click

from .app import Ctx, _progress, _ref, _size, cli, pass_ctx


@cli.command("import")
@click.argument("source")
@click.option("--name", "model", help="Model name (default: the repo id of an hf:// source).")
@click.option("--version", "version", required=True, help="Version to publish as.")
@click.option("--revision", help="Branch, tag or commit of an HF cache repo or git repository (default: main / HEAD).")
@click.option("--hf-cache", type=click.Path(file_okay=False), help="Hub cache to read hf:// from (default: HF_HUB_CACHE, HF_HOME).")
@click.option("--ollama-models", type=click.Path(file_okay=False), help="Ollama store (default: OLLAMA_MODELS, ~/.ollama/models).")
@click.option("--move", is_flag=True, help="A --local-dir or git checkout's files become read-only links to the store.")
@click.option("--note", default="", help="Release note stored in the manifest.")
@click.option("--requires", multiple=True, metavar="REQ", help="What the version needs to run; repeatable.")
@click.option("--force", is_flag=True, help="Move an existing MODEL@VERSION tag to this content.")
@click.option("--jobs", "-j", default=4, show_default=True, help="Files hashed in parallel.")
@pass_ctx
def import_(c: Ctx, source, model, version, revision, hf_cache, ollama_models, move, note, requires, force, jobs) -> None:
    """Import hf://ORG/NAME[@REV], ollama://NAME[:TAG], an HF cache repo or snapshot, an HF
    --local-dir folder or a git-lfs repository as MODEL@VERSION, checking every file against the
    SHA-256 (or git SHA-1) its source publishes."""
    from casstore.ops.importer import import_model

    with _progress(c, f"import {source}") as progress:
        r = import_model(c.store(), source, model, version, revision=revision, hf_cache=hf_cache,
                         ollama_models=ollama_models, move=move, note=note, requires=list(requires), force=force,
                         jobs=jobs, warn=c.warn, progress=progress)
    a = r.added
    how = ", ".join(f"{n} {m}" for m, n in sorted(a.methods.items())) or "no new blobs"
    c.info(f"{a.model}@{a.version} from {r.origin} ({r.kind}): {a.files} files, {_size(a.bytes)}, every SHA-256 "
           f"checked; {a.new_blobs} new blobs ({how}){', unchanged' if a.unchanged else ''}, {a.elapsed:.2f}s")
    c.result(r.to_json(), str(a.manifest))


@cli.group()
def export() -> None:
    """Hand a version to tools that expect another layout (hard links, no second copy)."""


@export.command("hf-cache")
@click.argument("ref")
@click.option("--repo", "repo_id", help="HF repo id ORG/NAME (default: the model name, if it has an organisation).")
@click.option("--revision", help="Ref to write (default main), or a 40-hex commit.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False), help="Hub cache (default: HF_HUB_CACHE, HF_HOME).")
@pass_ctx
def export_hf_cache(c: Ctx, ref, repo_id, revision, cache_dir) -> None:
    """Make MODEL[@VERSION] a repo of the HF hub cache: from_pretrained("ORG/NAME") then loads it
    offline (HF_HUB_OFFLINE=1), and nothing HF deletes can remove a casstore blob."""
    from casstore.ops.export import export_hf_cache as do_export

    r = _ref(ref)
    res = do_export(c.store(), r.model, r.version, repo_id, revision=revision, cache_dir=cache_dir)
    for w in res.warnings:
        c.warn(w)
    c.info(f"{res.model}@{res.version} -> {res.path} (refs/{res.revision} = {res.commit}): {res.files} files, "
           f"{_size(res.bytes)}; {res.linked} hard links, {res.copied} copies, {_size(res.hashed_bytes)} hashed")
    c.result(res.to_json(), res.path)


@export.command("oci")
@click.argument("ref")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--tag", help="Name in index.json (default: the version).")
@pass_ctx
def export_oci(c: Ctx, ref, dest, tag) -> None:
    """Write MODEL[@VERSION] as an OCI image layout (a CNCF ModelPack artifact, one layer per
    file), for `oras cp --from-oci-layout DEST:TAG REGISTRY/REPO:TAG` or any registry client."""
    from casstore.ops.export import export_oci as do_export

    r = _ref(ref)
    res = do_export(c.store(), r.model, r.version, dest, tag=tag)
    c.info(f"{res.model}@{res.version} -> {res.path}:{res.revision}: {res.files} layers, {_size(res.bytes)}; "
           f"{res.linked} hard links, {res.copied} copies, {_size(res.hashed_bytes)} hashed")
    c.result(res.to_json(), res.path)
