"""Model names, version names and ``MODEL[@VERSION]`` references.

Both become path components inside the store, so they are validated before any path is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidName

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def validate_model(name: str) -> str:
    if not isinstance(name, str) or _NAME.fullmatch(name) is None or ".." in name:
        raise InvalidName(
            f"invalid model name {name!r}: use letters, digits, '.', '_', '-' "
            "(starting with a letter or digit, at most 128 characters)"
        )
    return name


def validate_version(version: str) -> str:
    if not isinstance(version, str) or _VERSION.fullmatch(version) is None or ".." in version:
        raise InvalidName(
            f"invalid version {version!r}: use letters, digits, '.', '_', '+', '-' "
            "(starting with a letter or digit, at most 128 characters)"
        )
    return version


@dataclass(frozen=True, slots=True)
class Ref:
    model: str
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Ref":
        model, sep, version = text.partition("@")
        validate_model(model)
        if sep:
            validate_version(version)
            return cls(model, version)
        return cls(model)

    def __str__(self) -> str:
        return self.model if self.version is None else f"{self.model}@{self.version}"
