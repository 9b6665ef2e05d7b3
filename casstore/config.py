"""Where the store is, and every setting read from the user config file or a ``CAS_*`` variable,
typed: a bad value is one ``InvalidInput`` naming the variable or key, its value and what is
expected (never a traceback; the CLI renders it with exit 2).

Where the store is, from (later wins): built-in default, user config file, CAS_HOME, --store.
The user config file is TOML in the platform config dir (``CAS_CONFIG`` overrides its path):

    store = "/mnt/nas/casstore"
    [gc]
    max_size = "500G"   retention_days = 30   keep_last = 2   grace = 3600
    [add]
    sha256 = true
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from casstore.errors import InvalidInput
from casstore.model import values

T = TypeVar("T")

# Every key of the user config file outside [remotes.*] (remotes/config.py checks those), and its type.
USER_KEYS: dict[str, Callable[[Any], Any]] = {
    "store": values.text,
    "default_remote": values.text,
    "gc.max_size": values.size,
    "gc.retention_days": values.days,
    "gc.keep_last": values.count,
    "gc.grace": values.seconds,
    "add.sha256": values.flag,  # `cas add` records SHA-256s by default (docs/cli.md: the CPU it costs)
}


def env(name: str, parse: Callable[[Any], T], default: T) -> T:
    """``CAS_*`` variable ``name`` parsed by ``parse``, or ``default`` when unset or empty."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return parse(raw.strip())
    except InvalidInput as e:
        raise InvalidInput(f"environment variable {name}={raw[:80]!r}: {e}") from None


def user_setting(key: str, default: T, cfg: dict | None = None) -> Any:
    """A typed value of the user config file (``gc.keep_last``), or ``default`` when absent."""
    section, _, name = key.rpartition(".")
    cfg = load_user_config() if cfg is None else cfg
    table = cfg.get(section, {}) if section else cfg
    if not isinstance(table, dict):
        raise InvalidInput(f"{config_path()}: [{section}] must be a table, not {type(table).__name__}")
    if name not in table:
        return default
    return parse_user_value(key, table[name])


def parse_user_value(key: str, value: Any) -> Any:
    if key not in USER_KEYS:
        raise InvalidInput(f"unknown config key {key!r}; known: {', '.join(USER_KEYS)}")
    try:
        return USER_KEYS[key](value)
    except InvalidInput as e:
        raise InvalidInput(f"{config_path()}: {key} = {str(value)[:80]!r}: {e}") from None


PROJECT_FILE = "cas.toml"


def project_dir(start: Path | None = None) -> Path | None:
    """The directory of the project ``start`` is in: the nearest one up with a cas.toml, looking
    no further than the repository root (a directory holding ``.git``) and never into a directory
    another user owns (git's ``safe.directory`` rule: a cas.toml someone else wrote in a shared
    parent must not choose this user's remotes). ``safe_directories`` in the user config (or
    ``CAS_SAFE_DIRECTORIES``, ``:``-separated; ``*`` for any) lists exceptions."""
    start = (start or Path.cwd()).absolute()
    me = os.geteuid() if hasattr(os, "geteuid") else None
    safe: set[str] | None = None
    for d in (start, *start.parents):
        try:
            st = d.stat()
        except OSError:
            return None
        if me is not None and st.st_uid != me:
            if safe is None:
                safe = _safe_directories()
            if "*" not in safe and str(d) not in safe:
                return None
        if (d / PROJECT_FILE).is_file():
            return d
        if (d / ".git").exists():
            return None
    return None


def _safe_directories() -> set[str]:
    listed: list[str] = env("CAS_SAFE_DIRECTORIES", lambda v: [x for x in str(v).split(":") if x], [])
    cfg = load_user_config().get("safe_directories", [])
    if not isinstance(cfg, list) or not all(isinstance(x, str) for x in cfg):
        raise InvalidInput(f"{config_path()}: safe_directories must be a list of paths")
    return {str(Path(x).expanduser().absolute()) if x != "*" else x for x in [*listed, *cfg]}


def config_path() -> Path:
    env = os.environ.get("CAS_CONFIG")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir("casstore")) / "config.toml"


def load_user_config() -> dict:
    import tomllib  # only for a run that reads the config

    p = config_path()
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except RecursionError:
        raise InvalidInput(f"cannot read config file {p}: nested too deeply") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise InvalidInput(f"cannot read config file {p}: {e}") from e


def default_store() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("casstore")) / "store"


def store_path(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    if env := os.environ.get("CAS_HOME"):
        return Path(env).expanduser()
    if configured := user_setting("store", None):
        return Path(configured).expanduser()
    return default_store()


def save_user_config(cfg: dict) -> None:
    """Write the user config file atomically, readable by its owner only (it may hold tokens)."""
    import tomlkit

    p = config_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(tomlkit.dumps(cfg))
    os.chmod(tmp, 0o600)
    os.replace(tmp, p)


def offline(explicit: bool | None = None) -> bool:
    """Never contact a remote: ``--offline``/``offline=True``, else ``CAS_OFFLINE=1``."""
    if explicit is not None:
        return explicit
    return env("CAS_OFFLINE", values.flag, False)
