"""Dense slots for sparse ids: users, resources and services index columnar state by slot."""

from __future__ import annotations

import numpy as np

from .kernels import hashmap as hm


class SlotMap:
    """u64 id -> dense slot 0..n-1, growing by doubling (load factor at most 1/2).

    ``ids`` maps slots back to ids. Slots are never reused, so arrays indexed by slot only
    ever grow.
    """

    def __init__(self, capacity: int = 1024):
        cap = 1 << max(4, int(capacity - 1).bit_length())
        self._keys = np.full(cap * 2, hm.EMPTY, np.uint64)
        self._vals = np.full(cap * 2, -1, np.int64)
        self.ids = np.zeros(cap, np.uint64)
        self.n = 0

    def __len__(self) -> int:
        return self.n

    @property
    def capacity(self) -> int:
        """Slots available before the next growth."""
        return self._keys.shape[0] // 2

    def slots_for(self, ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Slots of ``ids``, creating slots for new ids. Grows as needed."""
        if out is None:
            out = np.empty(len(ids), np.int64)
        i, n0 = 0, self.n
        while True:
            i, self.n = hm.upsert(self._keys, self._vals, self.n, self.capacity, ids, out, i)
            if i == len(ids):
                break
            self._grow()
        if self.n > n0:
            self.ids[n0:self.n] = ids_from_out(ids, out, n0, self.n)
        return out

    def find(self, ids: np.ndarray) -> np.ndarray:
        """Slots of ``ids``, -1 for unknown ids; never inserts."""
        out = np.empty(len(ids), np.int64)
        hm.find(self._keys, self._vals, np.ascontiguousarray(ids, np.uint64), out)
        return out

    def find_one(self, id_: int) -> int:
        return int(self.find(np.array([id_], np.uint64))[0])

    def _grow(self) -> None:
        cap = self._keys.shape[0] * 2
        keys = np.full(cap, hm.EMPTY, np.uint64)
        vals = np.full(cap, -1, np.int64)
        hm.rehash(self._keys, self._vals, keys, vals)
        self._keys, self._vals = keys, vals
        ids = np.zeros(cap // 2, np.uint64)
        ids[: self.n] = self.ids[: self.n]
        self.ids = ids

    def state(self) -> dict[str, np.ndarray]:
        return {"ids": self.ids[: self.n].copy()}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> "SlotMap":
        ids = np.ascontiguousarray(state["ids"], np.uint64)
        m = cls(max(1024, len(ids)))
        got = m.slots_for(ids)
        if not np.array_equal(got, np.arange(len(ids))):
            raise ValueError("slot map state holds duplicate ids")
        return m


def ids_from_out(ids: np.ndarray, out: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The ids that received the new slots lo..hi-1 (first occurrence of each)."""
    new = (out >= lo) & (out < hi)
    s = out[new]
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    first = np.ones(len(s_sorted), bool)
    first[1:] = s_sorted[1:] != s_sorted[:-1]
    return np.asarray(ids)[new][order][first]
