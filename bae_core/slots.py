"""Dense slots for sparse ids: users, resources and services index columnar state by slot."""

from __future__ import annotations

import mmap

import numpy as np

from .kernels import hashmap as hm

EMPTY = hm.EMPTY


class SlotMap:
    """u64 id -> int64 slot, with released slots reused lowest first.

    ``ids[slot]`` is the id of a live slot and ``EMPTY`` for a free one (and past
    ``high_water``). ``len()`` counts live ids; ``high_water`` counts the slots ever handed
    out (at most the largest live count so far): per-slot arrays need that many rows, and
    ``capacity`` (= ``len(ids)``) rows always suffice. The id ``EMPTY`` is reserved: it
    gets slot -1 and is never stored.

    Growth never stops the world: once more than half of the table is in use, each
    ``slots_for`` call first fills a piece of a table twice the size (and of a bigger
    ``ids``), then, once that is ready, moves ``max(step, 4 * len(ids))`` cells of the old
    table into it (plus the rest of the last cluster; the fill does four times as many).
    Lookups check both tables meanwhile. Only a batch that fills the table to 3/4 before
    that is done finishes the growth inside its own call. ``last_work`` counts the cells
    the last call filled, copied or moved.
    """

    STEP_PER_ID = 4

    def __init__(self, capacity: int = 1024, step: int = 4096):
        """Room for ``capacity`` ids before the first growth; ``step``: the least work
        (table cells) a ``slots_for`` call puts into a growth in progress."""
        size = 1 << max(4, int(2 * capacity - 1).bit_length())
        self.step = int(step)
        self._keys = np.full(size, EMPTY, np.uint64)
        self._vals = np.full(size, -1, np.int64)
        self.ids = np.full(size * 3 // 4, EMPTY, np.uint64)
        self._free, self._off = _bitmap(len(self.ids))
        self._meta = np.array([0, 0, size * 3 // 4, 0], np.int64)  # live, hw, max live, new
        self._phase = 0  # 0: steady, 1: filling the next table, 2: migrating the old one
        self._okeys = self._ovals = None  # phase 2: the old table, emptied from _start on
        self._start = self._cursor = 0
        self._nkeys = self._nvals = self._nids = None  # phase 1: the next arrays
        self._filled = self._copied = 0
        self._trash: list[list] = []  # [old table array, bytes released so far]
        self.last_new = np.empty(0, np.int64)
        self.last_work = 0

    # ---- sizes --------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._meta[0])

    @property
    def live(self) -> int:
        """Ids held now."""
        return int(self._meta[0])

    @property
    def high_water(self) -> int:
        """Slots ever handed out: every slot in use or free is below it."""
        return int(self._meta[1])

    n = high_water  # the old name

    @property
    def capacity(self) -> int:
        """``len(ids)``: slots available before ``ids`` grows (only inside ``slots_for``)."""
        return self.ids.shape[0]

    @property
    def next_capacity(self) -> int:
        """The capacity a growth in progress is heading for (else ``capacity``), so callers
        can grow per-slot arrays ahead of time."""
        return self._nids.shape[0] if self._phase == 1 else self.capacity

    @property
    def free_count(self) -> int:
        """Slots below ``high_water`` waiting for reuse."""
        return self.high_water - self.live

    # ---- lookups ------------------------------------------------------------------
    def slots_for(self, ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Slots of ``ids``, giving new ids free slots (lowest first) or fresh ones.

        ``last_new`` then holds the slots this call assigned, each once, in order of first
        appearance: reset per-slot state there (``arr[m.last_new] = fill``)."""
        ids = np.asarray(ids)
        if ids.dtype != np.uint64 and ids.dtype != np.uint32:  # the kernel takes both
            ids = ids.astype(np.uint64)
        if out is None:
            out = np.empty(len(ids), np.int64)
        new = np.empty(len(ids), np.int64)
        self._meta[3] = 0
        self.last_work = 0
        self._advance(max(self.step, self.STEP_PER_ID * len(ids)))
        i = 0
        while True:
            i = hm.upsert(*self._tables(), self._free, self._off, self._meta, ids, out, new, i)
            if i == len(ids):
                break
            self._finish()  # full: end the growth in progress, or run a whole one
            if self._meta[0] >= self._meta[2]:
                self._begin()
                self._finish()
        if self._phase == 0 and self._meta[0] > len(self._keys) // 2:
            self._begin()
        self.last_new = new[: self._meta[3]]
        return out

    def find(self, ids: np.ndarray) -> np.ndarray:
        """Slots of ``ids``, -1 for unknown ids; never inserts."""
        ids = np.ascontiguousarray(ids, np.uint64)
        out = np.empty(len(ids), np.int64)
        keys, vals, okeys, ovals, use_old = self._tables()[:5]
        hm.find(keys, vals, okeys, ovals, use_old, ids, out)
        return out

    def find_one(self, id_: int) -> int:
        return int(self.find(np.array([id_], np.uint64))[0])

    def release(self, *, ids: np.ndarray | None = None,
                slots: np.ndarray | None = None) -> np.ndarray:
        """Free the slots of ``ids`` or the given ``slots`` (one of the two); unknown ids
        and slots not in use are skipped. Returns the slots freed. A freed slot's ``ids``
        entry becomes EMPTY; later inserts reuse it (see ``last_new``)."""
        if (ids is None) == (slots is None):
            raise TypeError("release takes ids= or slots=")
        if ids is not None:
            items, by_slot = np.ascontiguousarray(ids, np.uint64), False
        else:
            items, by_slot = np.ascontiguousarray(slots, np.int64), True
        freed = np.empty(len(items), np.int64)
        nf = hm.release(*self._tables(), self._free, self._off, self._meta, items, by_slot,
                        freed)
        return freed[:nf]

    # ---- growth -------------------------------------------------------------------
    def _tables(self):
        k, v = self._keys, self._vals
        ok, ov = (self._okeys, self._ovals) if self._phase == 2 else (k, v)
        ids2, copied = (self._nids, self._copied) if self._phase == 1 else (self.ids, 0)
        return k, v, ok, ov, self._phase == 2, self.ids, ids2, copied

    def _begin(self) -> None:
        size = 2 * len(self._keys)
        self._nkeys = _empty(size, np.uint64)  # untouched: filled a piece per call
        self._nvals = _empty(size, np.int64)
        self._nids = _empty(size * 3 // 4, np.uint64)
        self._filled = self._copied = 0
        self._phase = 1

    def _advance(self, budget: int) -> None:
        """Put about ``budget`` cells of work (four times that while filling) into the
        growth in progress."""
        if self._phase == 1 and self._fill(4 * budget):
            self._switch()
        if self._phase == 2:
            c = hm.migrate(self._okeys, self._ovals, self._keys, self._vals, self._start,
                           self._cursor, budget)
            self.last_work += c - self._cursor
            self._cursor = c
            if c == len(self._okeys):
                self._trash += [[self._okeys, 0], [self._ovals, 0]]
                self._okeys = self._ovals = None
                self._phase = 0
        if self._trash:
            self._sweep(256 * budget)

    def _sweep(self, nbytes: int) -> None:
        """Hand about ``nbytes`` of dropped tables back to the system (unmapping 100 MiB
        at once takes milliseconds)."""
        while self._trash and nbytes > 0:
            a, lo = self._trash[0]
            mm = getattr(a.base, "obj", None)
            if not isinstance(mm, mmap.mmap):
                self._trash.pop(0)
                continue
            hi = min(len(mm), lo + nbytes)
            mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            nbytes -= hi - lo
            self._trash[0][1] = hi
            if hi == len(mm):
                self._trash.pop(0)  # unmapping released pages is quick

    def _fill(self, budget: int) -> bool:
        a, b = self._filled, min(self._filled + budget, len(self._nkeys))
        self._nkeys[a:b] = EMPTY
        self._nvals[a:b] = -1
        old = len(self.ids)
        c, d = self._copied, min(self._copied + budget, len(self._nids))
        if c < old:
            self._nids[c:min(d, old)] = self.ids[c:min(d, old)]
        if d > old:
            self._nids[max(c, old):d] = EMPTY
        self._filled, self._copied = b, d
        self.last_work += (b - a) + (d - c)
        return b == len(self._nkeys) and d == len(self._nids)

    def _switch(self) -> None:
        """The filled table takes the inserts; the old one starts migrating."""
        self._okeys, self._ovals = self._keys, self._vals
        self._keys, self._vals, self.ids = self._nkeys, self._nvals, self._nids
        self._nkeys = self._nvals = self._nids = None
        l0 = self._free[: self._off[1]] if len(self._off) > 1 else self._free
        self._free, self._off = _bitmap(len(self.ids), l0)
        self._meta[2] = len(self._keys) * 3 // 4
        self._start = int(hm.first_empty(self._okeys))
        self._cursor = 0
        self._phase = 2

    def _finish(self) -> None:
        while self._phase:
            self._advance(1 << 62)

    # ---- checkpoints --------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """``ids[:high_water]``, EMPTY at free slots: enough to restore every slot."""
        return {"ids": self.ids[: self.high_water].copy()}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], step: int = 4096) -> "SlotMap":
        """The map ``state()`` saved: same slot for every id, same free slots (and so the
        same slots for later inserts)."""
        ids = np.ascontiguousarray(state["ids"], np.uint64)
        hw = len(ids)
        free = ids == EMPTY
        live = hw - int(np.count_nonzero(free))
        m = cls(max(16, live), step)
        if hw > m.capacity:
            m = cls(max(16, -(-hw * 2 // 3)), step)
        if hm.insert_slots(m._keys, m._vals, ids) >= 0:
            raise ValueError("slot map state holds duplicate ids")
        m.ids[:hw] = ids
        l0 = np.packbits(free, bitorder="little")
        l0 = np.pad(l0, (0, -len(l0) % 8)).view("<u8")
        m._free, m._off = _bitmap(m.capacity, l0)
        m._meta[:2] = live, hw
        return m


def _empty(n: int, dtype) -> np.ndarray:
    """An uninitialised array to be touched a piece at a time. Big ones get a private
    mapping without huge pages, so no first touch pays for 2 MiB at once and ``_sweep``
    can hand the pages back piecemeal."""
    nbytes = n * np.dtype(dtype).itemsize
    if nbytes < 1 << 22 or not hasattr(mmap, "MADV_NOHUGEPAGE"):
        return np.empty(n, dtype)
    mm = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)
    mm.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(mm, dtype)


def _bitmap(cap: int, l0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Free-slot bitmap for ``cap`` slots (see kernels.hashmap), level 0 words from ``l0``."""
    sizes = [max(1, -(-cap // 64))]
    while sizes[-1] > 1:
        sizes.append(-(-sizes[-1] // 64))
    off = np.zeros(len(sizes), np.int64)
    off[1:] = np.cumsum(sizes)[:-1]
    bm = np.zeros(sum(sizes), np.uint64)
    if l0 is not None:
        bm[: len(l0)] = l0
        for lv in range(1, len(sizes)):
            prev = bm[off[lv - 1]: off[lv - 1] + sizes[lv - 1]]
            bits = np.packbits(prev != 0, bitorder="little")
            bits = np.pad(bits, (0, sizes[lv] * 8 - len(bits)))
            bm[off[lv]: off[lv] + sizes[lv]] = bits.view("<u8")
    return bm, off
