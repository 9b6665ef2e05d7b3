"""The current-pointer history of a model (its reflog), as plain values.

Each switch is one immutable record. ``rollback`` walks the history like an undo stack: a
rollback pops the version it leaves, so repeated rollbacks keep going back rather than toggling.
An ``rm`` record (`cas rm --force` of the current version) leaves the model with no current
version: the removed version leaves the stack, and a rollback goes to the one below it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from casstore.errors import InvalidInput, NotFound
from casstore.model import strictjson
from casstore.model.digest import Digest
from casstore.model.names import validate_version

ACTIONS = ("add", "fetch", "use", "rollback", "update", "rm")
UNSET = "rm"  # the record of a current version removed: no current version after it


@dataclass(frozen=True, slots=True)
class Switch:
    seq: int
    version: str
    manifest: Digest
    previous: str | None
    action: str
    time: float
    host: str
    pid: int
    user: str

    def encode(self) -> bytes:
        d = asdict(self)
        d["manifest"] = str(self.manifest)
        return (json.dumps(d, sort_keys=True) + "\n").encode()

    @classmethod
    def decode(cls, data: bytes, source: str) -> Switch:
        d = strictjson.parse(data, source=source, what="history record", max_bytes=64 << 10,
                             max_containers=1, floats=True)
        if not isinstance(d, dict) or set(d) != set(cls.__slots__):
            raise InvalidInput(f"corrupt history record {source}: expected the fields {', '.join(cls.__slots__)}")
        try:
            f = {k: strictjson.field(d, k, t, where=f"history record {source}") for k, t in _FIELDS.items()}
            f["manifest"] = Digest.parse(f["manifest"])
            validate_version(f["version"])
            s = cls(**f)
        except InvalidInput as e:
            raise InvalidInput(f"corrupt history record {source}: {e}") from e
        if s.action not in ACTIONS:
            raise InvalidInput(f"corrupt history record {source}: unknown action {s.action!r}")
        return s


_FIELDS: dict[str, type | tuple[type, ...]] = {"seq": int, "version": str, "manifest": str, "previous": (str, type(None)), "action": str,
           "time": (int, float), "host": str, "pid": int, "user": str}


def current_of(history: list[Switch]) -> Switch | None:
    """The current switch: the newest record, unless it unset the current version."""
    return history[-1] if history and history[-1].action != UNSET else None


def undo_stack(history: list[Switch]) -> list[Switch]:
    """Replay the history into the stack that rollback walks back through.

    A switch pushes its version (a repeat of the version on top only replaces it, so the stack
    holds distinct neighbours); a rollback to a version on the stack pops back to it, undoing
    what was above; a rollback to a version no longer on the stack is a switch to it.
    """
    stack: list[Switch] = []
    for s in history:
        if s.action == UNSET:
            stack = [x for x in stack if x.version != s.version]
            continue
        if s.action == "rollback":
            at = next((i for i in range(len(stack) - 1, -1, -1) if stack[i].version == s.version), None)
            if at is not None:
                del stack[at + 1 :]
                stack[at] = s
                continue
        if stack and stack[-1].version == s.version:
            stack[-1] = s
        else:
            stack.append(s)
    return stack


def rollback_target(history: list[Switch], version: str | None = None) -> tuple[str, Digest]:
    """Which version (and manifest) ``rollback`` switches to."""
    stack = undo_stack(history)
    if not stack:
        raise NotFound("nothing to roll back: the model has no history")
    if version is None:
        if current_of(history) is None:  # the current version was removed: back to the one before it
            if not stack:
                raise NotFound("nothing to roll back to: no version before the removed one is in the history")
            return stack[-1].version, stack[-1].manifest
        if len(stack) < 2:
            raise NotFound(f"nothing to roll back to: {stack[-1].version} is the earliest version in the history")
        target = stack[-2]
        return target.version, target.manifest
    for s in reversed(history):
        if s.version == version and s.action != UNSET:
            return s.version, s.manifest
    raise NotFound(f"version {version} was never current; use `cas use` to switch to it")
