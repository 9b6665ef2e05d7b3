"""What a version needs to run (`cas add --requires "diffusers>=0.31"`), checked against the
running environment with ``packaging``, as the weight manager this replaces did.

Stored in the manifest's metadata under ``requires`` (one PEP 508 requirement per line), so
manifests keep their schema and older clients show it as plain metadata. ``python`` names the
interpreter; any other name is an installed distribution (``importlib.metadata``).
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping

from casstore.errors import InvalidInput, RequirementsUnmet

META_KEY = "requires"


def parse(specs: Iterable[str]) -> list[str]:
    """Validate ``--requires`` strings; returns them normalised (``packaging``'s spelling)."""
    specs = list(specs)
    if not specs:
        return []
    from packaging.requirements import InvalidRequirement, Requirement

    out = []
    for text in specs:
        try:
            out.append(str(Requirement(text)))
        except InvalidRequirement as e:
            raise InvalidInput(f"--requires {text!r} is not a requirement like 'torch>=2.4': {e}") from e
    return out


def of(meta: Mapping[str, str]) -> list[str]:
    return [line for line in meta.get(META_KEY, "").splitlines() if line.strip()]


def encode(specs: list[str]) -> str:
    return "\n".join(sorted(specs))


def unmet(meta: Mapping[str, str], installed=None) -> list[str]:
    """Each requirement the running environment does not satisfy, with what it has instead.
    ``installed``: name -> version (tests); by default the interpreter and its distributions."""
    if not of(meta):
        return []
    from packaging.requirements import InvalidRequirement, Requirement

    problems = []
    for text in of(meta):
        try:
            req = Requirement(text)
        except InvalidRequirement:
            problems.append(f"{text} (not a valid requirement)")
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        have = _version(req.name, installed)
        if have is None:
            problems.append(f"{text} (not installed)")
        elif not req.specifier.contains(have, prereleases=True):
            problems.append(f"{text} (found {have})")
    return problems


def check(name: str, version: str, meta: Mapping[str, str], *, ignore: bool = False) -> None:
    """Raise ``RequirementsUnmet`` naming what does not fit, unless ``ignore``."""
    problems = unmet(meta)
    if problems and not ignore:
        raise RequirementsUnmet(f"{name}@{version} needs what this environment lacks: {'; '.join(problems)} "
                                f"(--ignore-requirements to go ahead anyway)")


def _version(name: str, installed) -> str | None:
    if installed is not None:
        return installed.get(name.lower())
    if name.lower() == "python":
        return platform.python_version()
    import importlib.metadata  # 15 ms to import: only for a version that requires a distribution

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
