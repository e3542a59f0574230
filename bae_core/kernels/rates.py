"""Per-service request-rate buckets and Holt (level + damped trend) smoothing.

Events add into a small ring of event-time buckets per service; buckets are closed
(smoothed, then forgotten) once they are older than the lateness tolerance. Empty buckets
close as zero demand. Events for buckets already closed are counted and dropped.
"""

import numpy as np
from numba import njit

from . import JIT


@njit(**JIT)
def close_until(s, until, ring_ids, ring_counts, closed, level, trend, n_obs,
                alpha, beta, phi, bucket_s, out_slot, out_rate, n_out):
    """Close buckets closed[s]+1 .. until of service ``s``; append (slot, rate) to out."""
    k = ring_ids.shape[1]
    b = closed[s] + 1
    while b <= until:
        idx = b % k
        c = ring_counts[s, idx] if ring_ids[s, idx] == b else 0.0
        rate = c / bucket_s
        if n_obs[s] == 0:
            level[s] = rate
            trend[s] = 0.0
        else:
            prev = level[s]
            level[s] = alpha * rate + (1.0 - alpha) * (prev + phi * trend[s])
            trend[s] = beta * (level[s] - prev) + (1.0 - beta) * phi * trend[s]
        n_obs[s] += 1
        if ring_ids[s, idx] == b:
            ring_counts[s, idx] = 0.0
        if n_out < out_slot.shape[0]:
            out_slot[n_out] = s
            out_rate[n_out] = rate
            n_out += 1
        b += 1
    if until > closed[s]:
        closed[s] = until
    return n_out


@njit(**JIT)
def accumulate(svc, ts, bucket_us, ring_ids, ring_counts, closed, latest,
               level, trend, n_obs, alpha, beta, phi, bucket_s, late_dropped):
    """Add one request per event into its service's bucket ring. Returns events dropped as
    too late (their bucket was already closed)."""
    k = ring_ids.shape[1]
    dropped = 0
    dummy_slot = np.empty(0, np.int64)
    dummy_rate = np.empty(0, np.float64)
    for i in range(svc.shape[0]):
        s = svc[i]
        b = ts[i] // bucket_us
        if closed[s] < 0:
            closed[s] = b - 1
        if b <= closed[s]:
            dropped += 1
            late_dropped[s] += 1
            continue
        if b > latest[s]:
            latest[s] = b
        idx = b % k
        rb = ring_ids[s, idx]
        if rb != b:
            if rb > closed[s]:
                # the ring cell still holds an open older bucket: close up to it first
                close_until(s, b - k, ring_ids, ring_counts, closed, level, trend, n_obs,
                            alpha, beta, phi, bucket_s, dummy_slot, dummy_rate, 0)
            ring_ids[s, idx] = b
            ring_counts[s, idx] = 0.0
        ring_counts[s, idx] += 1.0
    return dropped


@njit(**JIT)
def close_all(n, until, ring_ids, ring_counts, closed, level, trend, n_obs,
              alpha, beta, phi, bucket_s, out_slot, out_rate):
    """Close every service's buckets up to ``until``; returns how many (slot, rate) pairs
    were written to out."""
    n_out = 0
    for s in range(n):
        if closed[s] < 0 or closed[s] >= until:
            continue
        n_out = close_until(s, until, ring_ids, ring_counts, closed, level, trend, n_obs,
                            alpha, beta, phi, bucket_s, out_slot, out_rate, n_out)
    return n_out


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
