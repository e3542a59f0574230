"""Per-service request-rate buckets and Holt (level + damped trend) smoothing; the level
is a rate, so it never goes below zero.

Events add into a small ring of event-time buckets per service; buckets are closed
(smoothed, recorded in the history ring, then forgotten) once they are older than the
lateness tolerance. Empty buckets close as zero demand, except before a service's first
non-empty bucket. Events for buckets already closed are counted and dropped; events
stamped after ``max_bucket`` (the caller's clock) count in that bucket.
"""

import numpy as np
from numba import njit

from . import JIT


@njit(**JIT)
def close_until(s, until, ring_ids, ring_counts, closed, level, trend, n_obs, hist,
                alpha, beta, phi, bucket_s):
    """Close buckets closed[s]+1 .. until of service ``s``."""
    k = ring_ids.shape[1]
    h = hist.shape[1]
    for b in range(closed[s] + 1, until + 1):
        idx = b % k
        c = 0.0
        if ring_ids[s, idx] == b:
            c = ring_counts[s, idx]
            ring_counts[s, idx] = 0.0
        if n_obs[s] == 0 and c == 0.0:
            continue  # the series starts at its first non-empty bucket
        rate = c / bucket_s
        if n_obs[s] == 0:
            level[s] = rate
            trend[s] = 0.0
        else:
            prev = level[s]
            level[s] = max(0.0, alpha * rate + (1.0 - alpha) * (prev + phi * trend[s]))
            trend[s] = beta * (level[s] - prev) + (1.0 - beta) * phi * trend[s]
        hist[s, n_obs[s] % h] = rate
        n_obs[s] += 1
    if until > closed[s]:
        closed[s] = until


@njit(**JIT)
def accumulate(svc, ts, bucket_us, max_bucket, late, ring_ids, ring_counts, closed,
               level, trend, n_obs, hist, alpha, beta, phi, bucket_s, late_dropped):
    """Add one request per event into its service's bucket ring. A new service accepts
    events down to ``late`` buckets before ``max_bucket``. Returns events dropped as late."""
    k = ring_ids.shape[1]
    dropped = 0
    lo = hi = 0  # events of a batch mostly share a bucket: divide only when it changes
    b = idx = 0
    for i in range(svc.shape[0]):
        s = svc[i]
        t = ts[i]
        if t < lo or t >= hi:
            b = t // bucket_us
            lo = b * bucket_us
            hi = lo + bucket_us
            if b > max_bucket:
                b = max_bucket
            idx = b % k
        if closed[s] < 0:
            closed[s] = max_bucket - late - 1
        if b <= closed[s]:
            dropped += 1
            late_dropped[s] += 1
            continue
        if b - k > closed[s]:
            # keep open buckets within one ring: close the oldest ones first
            close_until(s, b - k, ring_ids, ring_counts, closed, level, trend, n_obs, hist,
                        alpha, beta, phi, bucket_s)
        if ring_ids[s, idx] != b:
            ring_ids[s, idx] = b
            ring_counts[s, idx] = 0.0
        ring_counts[s, idx] += 1.0
    return dropped


@njit(**JIT)
def close_all(n, until, ring_ids, ring_counts, closed, level, trend, n_obs, hist,
              alpha, beta, phi, bucket_s):
    """Close every service's buckets up to ``until``."""
    for s in range(n):
        if closed[s] >= 0 and closed[s] < until:
            close_until(s, until, ring_ids, ring_counts, closed, level, trend, n_obs, hist,
                        alpha, beta, phi, bucket_s)


@njit(**JIT)
def forecast(level, trend, phi, h, out):
    """Rate h buckets ahead with damped trend, never below zero."""
    damp = 0.0
    p = 1.0
    for _ in range(h):
        p *= phi
        damp += p
    for s in range(level.shape[0]):
        f = level[s] + damp * trend[s]
        out[s] = f if f > 0.0 else 0.0


@njit(**JIT)
def touch_users(slots, ts, requests, last_seen):
    for i in range(slots.shape[0]):
        u = slots[i]
        requests[u] += 1
        if ts[i] > last_seen[u]:
            last_seen[u] = ts[i]


@njit(**JIT)
def service_totals(svc, status, nbytes, latency, requests, errors, total_bytes, latency_ewma):
    """Running totals per service and an exponentially weighted mean latency."""
    for i in range(svc.shape[0]):
        s = svc[i]
        requests[s] += 1
        if status[i] >= 500:
            errors[s] += 1
        total_bytes[s] += nbytes[i]
        if requests[s] == 1:
            latency_ewma[s] = latency[i]
        else:
            latency_ewma[s] += 0.01 * (latency[i] - latency_ewma[s])


def closed_since(fed, n_obs, hist):
    """(slots, rates) of the buckets closed since ``fed`` (per-service counts of closed
    buckets already handed on), oldest first per service, at most one history ring each."""
    h = hist.shape[1]
    new = np.minimum(n_obs - fed, h)
    which = np.flatnonzero(new > 0)
    if len(which) == 0:
        return np.empty(0, np.int64), np.empty(0)
    counts = new[which]
    slots = np.repeat(which, counts)
    start = np.repeat(n_obs[which] - counts, counts)
    offset = np.arange(len(slots)) - np.repeat(np.cumsum(counts) - counts, counts)
    return slots.astype(np.int64), hist[slots, (start + offset) % h]


IDLE_BINS = 24  # idle-time histogram: bin k holds gaps of [2**k, 2**(k+1)) seconds


@njit(**JIT)
def service_activity(svc, ts, tier, last_req_us, idle_hist, tier_counts, min_gap_us):
    """Per request: count it under its user's SLA tier, and when its service had been
    idle for more than ``min_gap_us`` record the idle time in the service's histogram
    (log2 bins of seconds)."""
    nb = idle_hist.shape[1]
    for i in range(svc.shape[0]):
        s = svc[i]
        t = ts[i]
        tier_counts[s, tier[i]] += 1.0
        last = last_req_us[s]
        if last > 0 and t - last > min_gap_us:
            k = int(np.log2((t - last) / 1e6))
            idle_hist[s, min(max(k, 0), nb - 1)] += 1.0
        if t > last:
            last_req_us[s] = t


def idle_quantile(hist: np.ndarray, q: float) -> np.ndarray:
    """Per row of an idle-time histogram, the lower edge (seconds) of the bin holding the
    q-quantile (NaN where the row is empty)."""
    tot = hist.sum(1)
    cum = np.cumsum(hist, 1) / np.where(tot > 0, tot, 1)[:, None]
    k = (cum < q).sum(1)
    return np.where(tot > 0, 2.0 ** np.minimum(k, hist.shape[1] - 1), np.nan)
