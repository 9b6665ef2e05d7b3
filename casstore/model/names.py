"""Model names, version names and ``MODEL[@VERSION]`` references.

Both become path components inside the store, so they are validated before any path is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from casstore.errors import InvalidName

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def _validate(kind: str, pattern: re.Pattern, extra: str, text: str) -> str:
    if not isinstance(text, str) or pattern.fullmatch(text) is None or ".." in text:
        raise InvalidName(
            f"invalid {kind} {text!r}: use letters, digits, {extra} "
            "(starting with a letter or digit, at most 128 characters, no '..')"
        )
    return text


def validate_model(name: str) -> str:
    return _validate("model name", _NAME, "'.', '_', '-'", name)


def validate_version(version: str) -> str:
    return _validate("version", _VERSION, "'.', '_', '+', '-'", version)


@dataclass(frozen=True, slots=True)
class Ref:
    model: str
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> Ref:
        model, sep, version = text.partition("@")
        validate_model(model)
        if sep:
            validate_version(version)
            return cls(model, version)
        return cls(model)

    def __str__(self) -> str:
        return self.model if self.version is None else f"{self.model}@{self.version}"
