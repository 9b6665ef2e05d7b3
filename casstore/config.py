"""Where the store is, from (later wins): built-in default, user config file, CAS_HOME, --store.

The user config file is TOML in the platform config dir (``CAS_CONFIG`` overrides its path):

    store = "/mnt/nas/casstore"
"""

from __future__ import annotations

import os
from pathlib import Path

from casstore.errors import InvalidInput


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
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise InvalidInput(f"cannot read config file {p}: {e}") from e


def default_store() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("casstore")) / "store"


def store_path(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    if env := os.environ.get("CAS_HOME"):
        return Path(env).expanduser()
    if configured := load_user_config().get("store"):
        return Path(str(configured)).expanduser()
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
    return os.environ.get("CAS_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
