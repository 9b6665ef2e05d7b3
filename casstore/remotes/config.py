"""Configured remotes: named URLs in the user config file, and in a project's cas.toml.

    default_remote = "team"
    [remotes.team]
    url = "https://models.example.com/cas/"
    token = "..."          # user config only; or CAS_TOKEN / CAS_TOKEN_TEAM in the environment
    [remotes.bucket]
    url = "s3://models/cas"
    endpoint_url = "https://minio.example.com"   # S3-compatible servers; AWS needs none
    region = "eu-west-1"

Tokens and ``insecure`` are never read from cas.toml: that file is committed and shared, so it may
add remotes but not rebind the user's (``configured``). S3 credentials are never read from
either: only from the standard AWS chain (environment, AWS_PROFILE, shared files).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from casstore.config import PROJECT_FILE, config_path, load_user_config, project_dir, save_user_config
from casstore.errors import InvalidInput, NotFound
from casstore.model.names import validate_identifier
from casstore.model.strictjson import read_file


@dataclass(frozen=True)
class RemoteSpec:
    name: str
    url: str
    token: str | None = None
    insecure: bool = False
    endpoint_url: str | None = None  # s3:// only
    region: str | None = None  # s3:// only

    def open(self, *, insecure: bool = False, tuning=None, **http_options):
        from casstore.remotes import open_remote

        return open_remote(self.url, token=self.token, insecure=insecure or self.insecure,
                           endpoint_url=self.endpoint_url, region=self.region, tuning=tuning, **http_options)


def _project_remotes(cwd: Path) -> tuple[dict, Path | None]:
    """The ``[remotes]`` table of the project ``cwd`` is in (casstore.config.project_dir), and its file."""
    d = project_dir(cwd)
    if d is None:
        return {}, None
    p = d / PROJECT_FILE
    try:
        doc = tomllib.loads(read_file(p, max_bytes=1 << 20).decode("utf-8"))
    except RecursionError:
        raise InvalidInput(f"cannot read {p}: nested too deeply") from None
    except (OSError, UnicodeDecodeError, InvalidInput, tomllib.TOMLDecodeError) as e:
        raise InvalidInput(f"cannot read {p}: {e}") from e
    remotes = doc.get("remotes", {})
    if not isinstance(remotes, dict):
        raise InvalidInput(f"{p}: remotes must be a table of [remotes.NAME] tables, not {type(remotes).__name__}")
    return remotes, p


def _token(name: str, configured: str | None) -> str | None:
    env = os.environ.get(f"CAS_TOKEN_{name.upper().replace('-', '_').replace('.', '_')}") or os.environ.get("CAS_TOKEN")
    return env or configured


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def _spec(name: str, spec: object, where: str) -> dict:
    if not isinstance(spec, dict) or not isinstance(spec.get("url"), str):
        raise InvalidInput(f"remote {name!r} in {where} has no url (expected [remotes.{name}] url = \"...\")")
    for opt in ("endpoint_url", "region"):
        if not isinstance(spec.get(opt, ""), str):
            raise InvalidInput(f"remote {name!r} in {where}: {opt} must be a string")
    if not isinstance(spec.get("insecure", False), bool) or not isinstance(spec.get("token", ""), str):
        raise InvalidInput(f"remote {name!r} in {where}: insecure must be true or false, token a string")
    return spec


def configured(cwd: Path | None = None) -> tuple[list[RemoteSpec], str | None]:
    """All remotes (the user's, then the project's) and the default's name.

    Credentials and ``insecure`` bind to the URL the *user* configured (docs/security.md): a
    project file is committed and cloned, so it may add remotes but never rebind a user's remote
    name to another URL, set ``insecure`` or carry a token; a project remote gets a token only if
    its URL is one the user configured (that remote's token), never ``CAS_TOKEN``."""
    user = load_user_config()
    user_remotes = user.get("remotes", {})
    if not isinstance(user_remotes, dict):
        raise InvalidInput(f"{config_path()}: remotes must be a table of [remotes.NAME] tables")
    out = []
    for name, spec in user_remotes.items():
        spec = _spec(name, spec, str(config_path()))
        out.append(RemoteSpec(name, spec["url"], _token(name, spec.get("token")), spec.get("insecure", False),
                              spec.get("endpoint_url"), spec.get("region")))
    project, where = _project_remotes(cwd or Path.cwd())
    for name, spec in project.items():
        spec = _spec(name, spec, str(where))
        for opt in ("token", "insecure"):
            if opt in spec:
                raise InvalidInput(f"{where}: remote {name!r} sets {opt}, which only the user config "
                                   f"({config_path()}) or the environment may set: a project file is shared")
        if name in user_remotes:
            mine = user_remotes[name].get("url", "")
            if not _same_url(mine, spec["url"]):
                raise InvalidInput(f"{where} names remote {name!r} as {spec['url']}, but your {config_path()} has "
                                   f"{name!r} as {mine}: a project cannot rebind your remote (your token goes to "
                                   "your URL only); rename one of them")
            continue
        out.append(RemoteSpec(name, spec["url"], token_for_url(spec["url"], out), False,
                              spec.get("endpoint_url"), spec.get("region")))
    return out, user.get("default_remote")


def token_for_url(url: str, specs: list[RemoteSpec]) -> str | None:
    """The token of the user-configured remote at ``url``, if any."""
    return next((s.token for s in specs if s.token and _same_url(s.url, url)), None)


def choose(remote: str | None, cwd: Path | None = None, *, trusted: bool = True) -> list[RemoteSpec]:
    """The remotes to use, in order: the one named (or a URL), else every configured one, default
    first. ``trusted=False``: ``remote`` comes from a project file, not the user, so a URL there
    gets no ``CAS_TOKEN`` (only the token of a user remote with that very URL)."""
    specs, default = configured(cwd)
    if remote:
        for s in specs:
            if s.name == remote:
                return [s]
        if "://" in remote or remote.startswith(("/", ".", "~")):
            token = token_for_url(remote, specs) or (_token("", None) if trusted else None)
            return [RemoteSpec(remote, remote, token)]
        raise NotFound(f"no remote named {remote!r} (configured: {', '.join(s.name for s in specs) or 'none'})")
    if not specs:
        raise NotFound("no remote configured: add one with `cas remote add NAME URL --default`")
    return sorted(specs, key=lambda s: s.name != default)


def add(name: str, url: str, *, default: bool = False, insecure: bool = False, force: bool = False,
        endpoint_url: str | None = None, region: str | None = None) -> None:
    validate_identifier("remote name", name)
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
