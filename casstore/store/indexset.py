"""A set of a report's blob keys held as two masks, one byte per key: table indices 0..n-1 of
the manifest summaries' table (store/summaries.py) and the listing's other blobs, -1..-m.

At 1M blobs a Python set of these keys took 32 MiB and ~80 ms to build, and `cas du` built
several (the blobs present, the union of every version's, the plan's candidates and what the
fresh marks show old). A mask is 1 MB; union, difference, count and the sum of sizes run in C
over it, and a version's blobs, numbered in a row as the table met them, are marked by one slice
(docs/benchmarks.md, "`cas du` over masks")."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableSet, Sequence
from itertools import compress
from typing import Any

_ONE = b"\x01"


class IndexSet(MutableSet[int]):
    __slots__ = ("_pos", "_neg")

    def __init__(self, pos: bytearray, neg: bytearray) -> None:
        self._pos = pos  # pos[i]: table index i is in the set
        self._neg = neg  # neg[k]: other -k-1 is

    @classmethod
    def empty(cls, n: int, m: int = 0) -> IndexSet:
        return cls(bytearray(n), bytearray(m))

    @classmethod
    def full(cls, n: int, m: int = 0) -> IndexSet:
        return cls(bytearray(_ONE) * n, bytearray(_ONE) * m)

    @classmethod
    def _from_iterable(cls, it: Iterable[Any]) -> set:
        return set(it)  # what the Set mixins build against a foreign set: a plain one

    @property
    def dims(self) -> tuple[int, int]:
        return len(self._pos), len(self._neg)

    def copy(self) -> IndexSet:
        return IndexSet(bytearray(self._pos), bytearray(self._neg))

    def grown(self, n: int) -> IndexSet:
        """This set over ``n`` table indices (a table that grew), the added ones absent."""
        assert n >= len(self._pos)
        return IndexSet(self._pos + bytes(n - len(self._pos)), bytearray(self._neg))

    def with_others(self, m: int) -> IndexSet:
        """This set's table indices, and every one of ``m`` others."""
        return IndexSet(bytearray(self._pos), bytearray(_ONE) * m)

    def __len__(self) -> int:
        return self._pos.count(_ONE) + self._neg.count(_ONE)

    def __contains__(self, k: object) -> bool:
        if type(k) is not int:
            return False
        if k >= 0:
            return k < len(self._pos) and self._pos[k] == 1
        return -k <= len(self._neg) and self._neg[-k - 1] == 1

    def __iter__(self) -> Iterator[int]:
        yield from compress(range(len(self._pos)), self._pos)
        yield from compress(range(-1, -len(self._neg) - 1, -1), self._neg)

    def add(self, k: int) -> None:
        if k >= 0:
            self._pos[k] = 1
        else:
            self._neg[-k - 1] = 1

    def discard(self, k: object) -> None:
        if k in self:
            assert isinstance(k, int)
            if k >= 0:
                self._pos[k] = 0
            else:
                self._neg[-k - 1] = 0

    def mark(self, groups: Iterable[Sequence[int]]) -> None:
        """Add every table index of ``groups`` (a manifest's blobs each): a group that is a run
        of consecutive indices, compared whole, by one slice."""
        pos = self._pos
        for g in groups:
            if not g:
                continue
            first, n = g[0], len(g)
            if g[-1] - first == n - 1 and tuple(g) == tuple(range(first, first + n)):
                pos[first:first + n] = _ONE * n  # a run: what one version brought in, as the table numbered it
            elif min(g) < 0:
                raise ValueError("a negative key among a manifest's blobs")
            else:
                for i in g:
                    pos[i] = 1

    def negatives(self) -> list[int]:
        return list(compress(range(-1, -len(self._neg) - 1, -1), self._neg))

    def drop_negatives(self) -> None:
        self._neg = bytearray(len(self._neg))

    def total(self, pos_sizes: Sequence[int], neg_sizes: Sequence[int]) -> int:
        """The sum of the sizes of the keys in the set: ``pos_sizes[i]`` of table index i,
        ``neg_sizes[k]`` of other -k-1."""
        return sum(compress(pos_sizes, self._pos)) + sum(compress(neg_sizes, self._neg))

    def _same(self, other: object) -> bool:
        return isinstance(other, IndexSet) and other.dims == self.dims

    def _combine(self, other: IndexSet, op) -> None:
        """Both masks combined with ``other``'s as big integers: one C-level operation each."""
        self._pos, self._neg = _bitwise(self._pos, other._pos, op), _bitwise(self._neg, other._neg, op)

    def __isub__(self, other: Iterable[Any]) -> IndexSet:
        if self._same(other):
            assert isinstance(other, IndexSet)
            self._combine(other, lambda a, b: a & ~b)
        else:
            for k in other:
                self.discard(k)
        return self

    def __sub__(self, other: Iterable[Any]) -> IndexSet:
        return self.copy().__isub__(other)

    def update(self, other: Iterable[int]) -> None:
        if self._same(other):
            assert isinstance(other, IndexSet)
            self._combine(other, lambda a, b: a | b)
        else:
            for k in other:
                self.add(k)

    def __ior__(self, other: Iterable[int]) -> IndexSet:  # type: ignore[override,misc]
        self.update(other)
        return self

    def intersection(self, other: Iterable[Any]) -> IndexSet:
        if self._same(other):
            assert isinstance(other, IndexSet)
            out = self.copy()
            out._combine(other, lambda a, b: a & b)
            return out
        out = IndexSet.empty(*self.dims)
        for k in other:
            if k in self:
                out.add(k)
        return out

    def __and__(self, other: Iterable[Any]) -> IndexSet:
        return self.intersection(other)

    def __repr__(self) -> str:
        return f"IndexSet({len(self)} of {len(self._pos)} + {len(self._neg)})"


def _bitwise(a: bytearray, b: bytearray, op) -> bytearray:
    return bytearray(op(int.from_bytes(a, "little"), int.from_bytes(b, "little")).to_bytes(len(a), "little"))
