"""Per-user kernels: counting requests into each user's hour-of-day profile, and choosing
and folding idle users into their segment before eviction."""

import numpy as np
from numba import njit

from . import JIT

US_PER_HOUR = 3_600_000_000


@njit(**JIT)
def touch(slots, ts, last_seen, hourly, dirty, chunk_shift):
    """Count each request in its user's hour-of-day profile (the profile's sum is the
    user's request count) and mark the user's checkpoint chunk dirty."""
    for i in range(slots.shape[0]):
        u = slots[i]
        if ts[i] > last_seen[u]:
            last_seen[u] = ts[i]
        hourly[u, (ts[i] // US_PER_HOUR) % 24] += 1.0
        dirty[u >> chunk_shift] = 1


@njit(**JIT)
def idle(ids, last_seen, empty_id, cutoff_us, out):
    """Slots of live users last seen before ``cutoff_us`` into ``out``; returns the count."""
    n = 0
    for u in range(ids.shape[0]):
        if ids[u] != empty_id and last_seen[u] < cutoff_us and n < out.shape[0]:
            out[n] = u
            n += 1
    return n


@njit(**JIT)
def fold(users, user_seg_slot, hourly, seg_requests, seg_evicted, seg_hourly):
    """Add each user's hour-of-day profile (and so its request count) to its segment's
    aggregates."""
    for i in range(users.shape[0]):
        u = users[i]
        g = user_seg_slot[i]
        seg_evicted[g] += 1
        for h in range(hourly.shape[1]):
            seg_hourly[g, h] += hourly[u, h]
            seg_requests[g] += np.int64(hourly[u, h])


@njit(**JIT)
def context_counts(slots, geo, device, user_geo, user_device, geo_count, device_count):
    """Remember each user's latest geography and device, and count requests by both."""
    for i in range(slots.shape[0]):
        u = slots[i]
        user_geo[u] = geo[i]
        user_device[u] = device[i]
        geo_count[geo[i]] += 1.0
        device_count[device[i]] += 1.0
