"""Open-addressing hash map from u64 ids to dense int64 slots (linear probing).

``keys`` holds ids (``EMPTY`` marks a free cell), ``vals`` the slot of each id. The
capacity is a power of two; the caller grows the table when an insert reports it is full.
"""

import numpy as np
from numba import njit

from . import JIT

EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)


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
def upsert(keys, vals, n_used, max_used, ids, out, start):
    """Slot of every id in ``ids[start:]`` into ``out``, inserting new ids with the next
    free slot. Stops before inserting past ``max_used``; returns (next index, n_used)."""
    mask = np.uint64(keys.shape[0] - 1)
    for i in range(start, ids.shape[0]):
        k = ids[i]
        h = mix64(k) & mask
        while True:
            kk = keys[h]
            if kk == k:
                out[i] = vals[h]
                break
            if kk == EMPTY:
                if n_used >= max_used:
                    return i, n_used
                keys[h] = k
                vals[h] = n_used
                out[i] = n_used
                n_used += 1
                break
            h = (h + np.uint64(1)) & mask
    return ids.shape[0], n_used


@njit(**JIT)
def find(keys, vals, ids, out):
    """Slot of every id into ``out``, -1 where the id is unknown."""
    mask = np.uint64(keys.shape[0] - 1)
    for i in range(ids.shape[0]):
        k = ids[i]
        h = mix64(k) & mask
        out[i] = -1
        while True:
            kk = keys[h]
            if kk == k:
                out[i] = vals[h]
                break
            if kk == EMPTY:
                break
            h = (h + np.uint64(1)) & mask


@njit(**JIT)
def rehash(old_keys, old_vals, keys, vals):
    mask = np.uint64(keys.shape[0] - 1)
    for j in range(old_keys.shape[0]):
        k = old_keys[j]
        if k == EMPTY:
            continue
        h = mix64(k) & mask
        while keys[h] != EMPTY:
            h = (h + np.uint64(1)) & mask
        keys[h] = k
        vals[h] = old_vals[j]
