"""Configured remotes: named URLs in the user config file, and in a project's cas.toml.

    default_remote = "team"
    [remotes.team]
    url = "https://models.example.com/cas/"
    token = "..."          # user config only; or CAS_TOKEN / CAS_TOKEN_TEAM in the environment
    [remotes.bucket]
    url = "s3://models/cas"
    endpoint_url = "https://minio.example.com"   # S3-compatible servers; AWS needs none
    region = "eu-west-1"

Tokens are never read from cas.toml: that file is committed and shared. S3 credentials are never
read from either: only from the standard AWS chain (environment, AWS_PROFILE, shared files).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from casstore.config import config_path, load_user_config, save_user_config
from casstore.errors import InvalidInput, NotFound
from casstore.model.names import validate_model


@dataclass(frozen=True)
class RemoteSpec:
    name: str
    url: str
    token: str | None = None
    insecure: bool = False
    endpoint_url: str | None = None  # s3:// only
    region: str | None = None  # s3:// only

    def open(self, *, insecure: bool = False, **http_options):
        from casstore.remotes import open_remote

        return open_remote(self.url, token=self.token, insecure=insecure or self.insecure,
                           endpoint_url=self.endpoint_url, region=self.region, **http_options)


def _project_remotes(cwd: Path) -> dict:
    for d in (cwd, *cwd.parents):
        p = d / "cas.toml"
        if p.is_file():
            try:
                with open(p, "rb") as f:
                    return tomllib.load(f).get("remotes", {})
            except (OSError, tomllib.TOMLDecodeError) as e:
                raise InvalidInput(f"cannot read {p}: {e}") from e
    return {}


def _token(name: str, configured: str | None) -> str | None:
    env = os.environ.get(f"CAS_TOKEN_{name.upper().replace('-', '_').replace('.', '_')}") or os.environ.get("CAS_TOKEN")
    return env or configured


def configured(cwd: Path | None = None) -> tuple[list[RemoteSpec], str | None]:
    """All remotes (user config, then the project's, which wins on a name) and the default's name."""
    user = load_user_config()
    merged: dict[str, dict] = {}
    for name, spec in user.get("remotes", {}).items():
        merged[name] = dict(spec)
    for name, spec in _project_remotes(cwd or Path.cwd()).items():
        merged[name] = {**merged.get(name, {}), **{k: v for k, v in spec.items() if k != "token"}}
    out = []
    for name, spec in merged.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("url"), str):
            raise InvalidInput(f"remote {name!r} in {config_path()} has no url")
        for opt in ("endpoint_url", "region"):
            if not isinstance(spec.get(opt, ""), str):
                raise InvalidInput(f"remote {name!r}: {opt} must be a string")
        out.append(RemoteSpec(name, spec["url"], _token(name, user.get("remotes", {}).get(name, {}).get("token")),
                              bool(spec.get("insecure", False)), spec.get("endpoint_url"), spec.get("region")))
    return out, user.get("default_remote")


def choose(remote: str | None, cwd: Path | None = None) -> list[RemoteSpec]:
    """The remotes to use, in order: the one named (or a URL), else every configured one, default first."""
    specs, default = configured(cwd)
    if remote:
        for s in specs:
            if s.name == remote:
                return [s]
        if "://" in remote or remote.startswith(("/", ".", "~")):
            return [RemoteSpec(remote, remote, _token("", None))]
        raise NotFound(f"no remote named {remote!r} (configured: {', '.join(s.name for s in specs) or 'none'})")
    if not specs:
        raise NotFound("no remote configured: add one with `cas remote add NAME URL --default`")
    return sorted(specs, key=lambda s: s.name != default)


def add(name: str, url: str, *, default: bool = False, insecure: bool = False, force: bool = False,
        endpoint_url: str | None = None, region: str | None = None) -> None:
    validate_model(name)  # same rules: a remote name is a short identifier
    from casstore.remotes import open_remote

    if (endpoint_url or region) and not url.startswith("s3://"):
        raise InvalidInput("--endpoint-url and --region are for s3:// remotes")
    open_remote(url, insecure=insecure, endpoint_url=endpoint_url, region=region)  # validates before saving
    cfg = load_user_config()
    old = cfg.get("remotes", {}).get(name)
    if old is not None and not force and old.get("url") != url:
        from casstore.errors import Conflict

        role = " (the default)" if cfg.get("default_remote") == name else ""
        raise Conflict(f"remote {name}{role} is already {old.get('url')}; replace it with --force, or choose another name")
    cfg.setdefault("remotes", {})[name] = {"url": url, **({"insecure": True} if insecure else {}),
                                           **({"endpoint_url": endpoint_url} if endpoint_url else {}),
                                           **({"region": region} if region else {})}
    if default or "default_remote" not in cfg:
        cfg["default_remote"] = name
    save_user_config(cfg)


def remove(name: str) -> None:
    cfg = load_user_config()
    if name not in cfg.get("remotes", {}):
        raise NotFound(f"no remote named {name!r}")
    del cfg["remotes"][name]
    if cfg.get("default_remote") == name:
        cfg.pop("default_remote")
    save_user_config(cfg)
