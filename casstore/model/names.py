"""Model names, version names and ``MODEL[@VERSION]`` references.

Both become path components inside the store, so they are validated before any path is built.
A model name may carry an organisation, ``ORG/NAME`` as on the Hugging Face hub; it is still one
path component on disk and in a remote's keys (``ORG~NAME``: ``~`` is never part of a name, so the
spelling cannot collide with another name, and a name without an organisation is unchanged).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from casstore.errors import InvalidName

_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_NAME = re.compile(rf"(?:{_SEGMENT}/)?{_SEGMENT}")
_IDENT = re.compile(_SEGMENT)
ORG_SEP_ON_DISK = "~"
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def _validate(kind: str, pattern: re.Pattern, extra: str, text: str) -> str:
    if not isinstance(text, str) or pattern.fullmatch(text) is None or ".." in text:
        raise InvalidName(
            f"invalid {kind} {text!r}: use letters, digits, {extra} "
            "(starting with a letter or digit, at most 128 characters, no '..')"
        )
    return text


def validate_model(name: str) -> str:
    return _validate("model name", _NAME, "'.', '_', '-' and one '/' after an organisation", name)


def validate_identifier(kind: str, name: str) -> str:
    """A short name without an organisation (a remote's, for one)."""
    return _validate(kind, _IDENT, "'.', '_', '-'", name)


def model_part(name: str) -> str:
    """The one path component (and key component) that stands for model ``name``."""
    return validate_model(name).replace("/", ORG_SEP_ON_DISK)


def model_from_part(part: str) -> str:
    """The model a path component names (``model_part``'s inverse); InvalidName if none."""
    if not isinstance(part, str) or "/" in part or part.count(ORG_SEP_ON_DISK) > 1:
        raise InvalidName(f"{part!r} does not name a model")
    return validate_model(part.replace(ORG_SEP_ON_DISK, "/"))


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
