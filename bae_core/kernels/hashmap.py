"""Open-addressing hash map from u64 ids to int64 slots (linear probing), and the bitmap
of free slots.

``keys`` holds ids (``EMPTY`` marks an empty cell, so the id ``EMPTY`` cannot be stored),
``vals`` the slot of each id; sizes are powers of two. Deletion shifts the rest of the
cluster back (no tombstones), so probe chains stay as short as the load allows.

While a map grows, every id lives in exactly one of two tables: the new one (``keys``)
and the old one (``okeys``, looked at when ``use_old``). ``migrate`` empties the old table
whole clusters at a time, so each cluster left there is intact and probes in it stay right.

``ids`` maps slots back to ids. While the slot arrays are being copied into bigger ones,
writes to slots below ``copied`` also go to ``ids2`` (pass ``ids`` and 0 otherwise).

``free`` is a bitmap of free slots with summary levels: level l starts at word ``off[l]``,
bit b of level l+1 is set when word b of level l is non-zero, and the top level is one
word, so the lowest free slot is found reading one word per level.
"""

import numpy as np
from numba import njit

from . import JIT

EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)

_DEBRUIJN = np.uint64(0x03F79D71B4CB0A89)
_CTZ = np.zeros(64, np.int64)
for _i in range(64):
    _CTZ[((1 << _i) * 0x03F79D71B4CB0A89 & 0xFFFFFFFFFFFFFFFF) >> 58] = _i


@njit(**JIT)
def mix64(x):
    """splitmix64 finaliser: spreads sequential and clustered ids over the table."""
    x = np.uint64(x)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


@njit(**JIT)
def home(k, mask):
    """The cell where the probe for ``k`` starts (``mask`` = size - 1)."""
    return np.int64(mix64(k) & np.uint64(mask))


@njit(**JIT)
def probe(keys, k):
    """Index of ``k`` in ``keys``, or of the empty cell that ends its probe (k != EMPTY)."""
    mask = keys.shape[0] - 1
    h = home(k, mask)
    while True:
        kk = keys[h]
        if kk == k or kk == EMPTY:
            return h
        h = (h + 1) & mask


@njit(**JIT)
def _remove(keys, vals, k):
    """Delete ``k`` by backward shift; returns its slot, -1 when absent."""
    i = probe(keys, k)
    if keys[i] != k:
        return -1
    s = vals[i]
    mask = keys.shape[0] - 1
    j = i
    while True:
        j = (j + 1) & mask
        kk = keys[j]
        if kk == EMPTY:
            break
        # kk may fill the hole at i unless its home lies cyclically in (i, j]
        if ((j - home(kk, mask)) & mask) >= ((j - i) & mask):
            keys[i] = kk
            vals[i] = vals[j]
            i = j
    keys[i] = EMPTY
    vals[i] = -1
    return s


@njit(**JIT)
def ctz(x):
    """Index of the lowest set bit of a non-zero u64."""
    return _CTZ[((x & (~x + np.uint64(1))) * _DEBRUIJN) >> np.uint64(58)]


@njit(**JIT)
def bm_pop(bm, off):
    """Clear and return the lowest set bit of the bitmap, -1 when none is set."""
    top = off.shape[0] - 1
    if bm[off[top]] == 0:
        return -1
    i = 0
    for lv in range(top, -1, -1):
        i = i * 64 + ctz(bm[off[lv] + i])
    s = i
    for lv in range(top + 1):
        w = off[lv] + (i >> 6)
        word = bm[w] & ~(np.uint64(1) << np.uint64(i & 63))
        bm[w] = word
        if word != 0:
            break
        i >>= 6
    return s


@njit(**JIT)
def bm_push(bm, off, s):
    """Set bit ``s`` of the bitmap."""
    i = s
    for lv in range(off.shape[0]):
        w = off[lv] + (i >> 6)
        old = bm[w]
        bm[w] = old | (np.uint64(1) << np.uint64(i & 63))
        if old != 0:
            break
        i >>= 6


@njit(**JIT)
def upsert(keys, vals, okeys, ovals, use_old, ids, ids2, copied, free, off, meta, batch,
           out, new, start):
    """Slot of every id in ``batch[start:]`` into ``out`` (-1 for EMPTY). A new id takes
    the lowest free slot, else slot ``high_water``; its slot is appended to ``new``.
    ``meta`` = [live, high_water, max_live, n_new], updated in place. Stops before
    inserting when live reaches max_live; returns the index it stopped at (len when done).
    """
    live, hw, max_live, nnew = meta[0], meta[1], meta[2], meta[3]
    n = batch.shape[0]
    i = start
    while i < n:
        k = np.uint64(batch[i])
        if k == EMPTY:
            out[i] = -1
            i += 1
            continue
        h = probe(keys, k)
        if keys[h] == k:
            out[i] = vals[h]
            i += 1
            continue
        if use_old:
            g = probe(okeys, k)
            if okeys[g] == k:
                out[i] = ovals[g]
                i += 1
                continue
        if live >= max_live:
            break
        s = bm_pop(free, off)
        if s < 0:
            s = hw
            hw += 1
        keys[h] = k
        vals[h] = s
        ids[s] = k
        if s < copied:
            ids2[s] = k
        live += 1
        new[nnew] = s
        nnew += 1
        out[i] = s
        i += 1
    meta[0], meta[1], meta[3] = live, hw, nnew
    return i


@njit(**JIT)
def find(keys, vals, okeys, ovals, use_old, batch, out):
    """Slot of every id into ``out``, -1 where the id is unknown (or EMPTY)."""
    for i in range(batch.shape[0]):
        k = np.uint64(batch[i])
        out[i] = -1
        if k == EMPTY:
            continue
        h = probe(keys, k)
        if keys[h] == k:
            out[i] = vals[h]
        elif use_old:
            g = probe(okeys, k)
            if okeys[g] == k:
                out[i] = ovals[g]


@njit(**JIT)
def release(keys, vals, okeys, ovals, use_old, ids, ids2, copied, free, off, meta, items,
            by_slot, freed):
    """Free the slots of ``items`` (slots when ``by_slot``, else ids), skipping unknown ids
    and slots that are not live. Freed slots go to ``freed``; returns how many."""
    live, hw = meta[0], meta[1]
    nf = 0
    for i in range(items.shape[0]):
        if by_slot:
            s = np.int64(items[i])
            if s < 0 or s >= hw:
                continue
            k = ids[s]
            if k == EMPTY:
                continue
        else:
            k = np.uint64(items[i])
            if k == EMPTY:
                continue
        s = _remove(keys, vals, k)
        if s < 0 and use_old:
            s = _remove(okeys, ovals, k)
        if s < 0:
            continue
        ids[s] = EMPTY
        if s < copied:
            ids2[s] = EMPTY
        bm_push(free, off, s)
        live -= 1
        freed[nf] = s
        nf += 1
    meta[0] = live
    return nf


@njit(**JIT)
def migrate(okeys, ovals, keys, vals, start, cursor, budget):
    """Move old cells ``start + cursor`` onwards (mod size) into ``keys``/``vals``: at
    least ``budget`` cells while any are left, then to the end of the current cluster, so
    the last cell moved is an empty one. Returns the new cursor (size when done)."""
    n = okeys.shape[0]
    omask = n - 1
    done = 0
    while cursor < n:
        j = (start + cursor) & omask
        k = okeys[j]
        cursor += 1
        done += 1
        if k == EMPTY:
            if done >= budget:
                break
            continue
        h = probe(keys, k)
        keys[h] = k
        vals[h] = ovals[j]
        okeys[j] = EMPTY
    return cursor


@njit(**JIT)
def first_empty(keys):
    """Index of the first empty cell, -1 when the table is full."""
    for j in range(keys.shape[0]):
        if keys[j] == EMPTY:
            return j
    return -1


@njit(**JIT)
def insert_slots(keys, vals, ids):
    """Insert every non-EMPTY ``ids[s]`` with slot s; returns the first slot whose id was
    already present, -1 when all are distinct."""
    for s in range(ids.shape[0]):
        k = ids[s]
        if k == EMPTY:
            continue
        h = probe(keys, k)
        if keys[h] == k:
            return s
        keys[h] = k
        vals[h] = s
    return -1


@njit(**JIT)
def cached_slots(ids, cache_ids, cache_slots, out):
    """Slots of ``ids`` from a direct-mapped cache; returns how many missed (out = -1)."""
    mask = cache_ids.shape[0] - 1
    miss = 0
    for i in range(ids.shape[0]):
        h = np.int64(ids[i]) & mask
        if cache_ids[h] == ids[i]:
            out[i] = cache_slots[h]
        else:
            out[i] = -1
            miss += 1
    return miss
