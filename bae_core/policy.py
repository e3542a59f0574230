"""The allocation policy, vectorised over services.

- ``tier_split``: replicas from each SLA tier's forecast quantile and headroom, weighted
  by the tier's share of requests; when the upper bound caps them, gold is served first,
  then silver, then bronze.
- ``decide``: a need within ``tolerance`` of the published count changes nothing (HPA's
  tolerance); scale-up
  at once (at most to ``max_up``, the rate limit); scale-down to the largest count
  desired within the stabilisation window (as Kubernetes' HPA does), no lower than
  ``min_down``.
- ``prewarm_idle``: from each service's histogram of idle times (Azure Functions' hybrid
  policy), when an idle service's traffic is expected back.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .kernels.rates import idle_quantile
from .wire import Reason

TIERS = (0, 1, 2)  # bronze, silver, gold (wire.Tier)


class Decision(NamedTuple):
    desired: np.ndarray  # int64 replicas per service
    publish: np.ndarray  # bool: publish a delta for this service now
    reasons: np.ndarray  # uint32 Reason bits


def replicas_for(rps: np.ndarray, per_replica: np.ndarray, headroom: float, lo: int,
                 hi: int) -> np.ndarray:
    need = np.ceil(np.nan_to_num(rps, nan=0.0, posinf=0.0) * (1.0 + headroom) / per_replica)
    return np.clip(need, lo, hi).astype(np.int64)


def tier_split(rps_q: np.ndarray, share: np.ndarray, per_replica: np.ndarray,
               headroom: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """``rps_q[s, t]``: the forecast at tier t's quantile; ``share[s, t]``: tier t's share
    of the service's requests (rows sum to 1); ``headroom[t]``. Returns (desired (n,),
    replicas per tier (n, 3), both int64, the tiers' replicas summing to desired; and the
    replicas needed before rounding (n,) float)."""
    n = len(rps_q)
    need = np.nan_to_num(rps_q, nan=0.0, posinf=0.0).clip(0) * share * (1.0 + headroom)
    need = need / per_replica[:, None]
    raw = need.sum(1)
    total = np.clip(np.ceil(raw - 1e-9), lo, hi).astype(np.int64)
    reps = np.zeros((n, 3), np.int64)
    left = total.copy()
    for t in TIERS[::-1]:  # gold first
        r = np.minimum(np.ceil(need[:, t] - 1e-9).astype(np.int64), left)
        reps[:, t] = r
        left -= r
    top = np.where(share[:, 2] > 0, 2, np.where(share[:, 1] > 0, 1, 0))
    reps[np.arange(n), top] += left  # the floor and rounding go to the top tier served
    return total, reps, raw


WINDOW_SLOTS = 16  # the stabilisation window is kept as this many slot maxima


def decide(base: np.ndarray, mult: np.ndarray, per_replica: np.ndarray, headroom: float,
           lo: int, hi: int, published: np.ndarray, ring: np.ndarray, ring_slot: np.ndarray,
           now_us: int, window_us: int, ready: np.ndarray,
           want: np.ndarray | None = None, max_up: np.ndarray | None = None,
           min_down: np.ndarray | None = None, tolerance: float = 0.0,
           need: np.ndarray | None = None) -> Decision:
    """Vectorised over services; ``want`` (replicas) replaces the rule from ``base``.
    ``ring``/``ring_slot`` (n, WINDOW_SLOTS) hold the largest desired count of each
    slot of the stabilisation window (updated in place): a scale-down goes to the
    largest count desired within the window, as Kubernetes' HPA does."""
    desired = replicas_for(base * mult, per_replica, headroom, lo, hi) if want is None \
        else np.asarray(want, np.int64).copy()
    had = published >= 0
    if max_up is not None:
        desired = np.where(had, np.minimum(desired, np.maximum(max_up, published)), desired)
    # need within the tolerance band of the published count: no change (HPA's rule)
    if need is None:
        need = np.nan_to_num(base * mult, nan=0.0, posinf=0.0) * (1.0 + headroom) / per_replica
    quiet = had & (published > 0) & (np.abs(need / np.maximum(published, 1) - 1.0) <= tolerance)
    desired = np.where(quiet, published, desired)
    slot_us = max(1, window_us // WINDOW_SLOTS)
    cur = now_us // slot_us
    k = cur % WINDOW_SLOTS
    fresh = ring_slot[:, k] != cur
    ring[:, k] = np.where(fresh, desired, np.maximum(ring[:, k], desired))
    ring_slot[:, k] = cur
    live = ring_slot > cur - (WINDOW_SLOTS if window_us > 0 else 1)
    window_max = np.where(live, ring, np.iinfo(np.int64).min).max(1)
    first = ready & ~had
    up = ready & had & (desired > published)
    target = window_max if min_down is None else np.maximum(window_max, min_down)
    down = ready & had & (desired < published) & (target < published)
    desired = np.where(down, target, desired)
    reasons = np.zeros(len(desired), np.uint32)
    reasons[first] |= np.uint32(Reason.FIRST)
    reasons[up] |= np.uint32(Reason.SCALE_UP)
    reasons[down] |= np.uint32(Reason.SCALE_DOWN)
    return Decision(desired, first | up | down, reasons)


def rate_limits(published: np.ndarray, last_up_us: np.ndarray, last_down_us: np.ndarray,
                now_us: int, up_period_us: int, down_period_us: int, down_fraction: float,
                hi: int) -> tuple[np.ndarray, np.ndarray]:
    """(max_up, min_down) per service: at most one scale-up per ``up_period_us``, to
    ``max(2 x, + 4)`` replicas (HPA's default), and one scale-down per
    ``down_period_us`` by at most ``down_fraction`` of the replicas (at least one)."""
    up_ok = now_us - last_up_us >= up_period_us
    max_up = np.where(up_ok, np.minimum(hi, published + np.maximum(4, published)), published)
    down_ok = now_us - last_down_us >= down_period_us
    step = np.maximum(1, (published * down_fraction).astype(np.int64))
    min_down = np.where(down_ok, published - step, published)
    return max_up, min_down


def prewarm_idle(last_req_us: np.ndarray, idle_hist: np.ndarray, now_us: int,
                 min_idle_us: int, quantile: float, min_samples: int):
    """Services idle now whose idle-time histogram has ``min_samples`` gaps: (mask, when
    traffic is expected back (the ``quantile`` of the idle times, at least now),
    confidence = the share of past idle times at least as long as the current one)."""
    idle_for = now_us - last_req_us
    seen = idle_hist.sum(1)
    cand = (last_req_us > 0) & (idle_for > min_idle_us) & (seen >= min_samples)
    back_s = idle_quantile(idle_hist, quantile)
    at = np.maximum(last_req_us + np.nan_to_num(back_s, nan=0.0) * 1e6, now_us).astype(np.int64)
    k = np.floor(np.log2(np.maximum(idle_for, 1) / 1e6)).clip(0, idle_hist.shape[1] - 1)
    longer = np.where(np.arange(idle_hist.shape[1])[None, :] >= k[:, None], idle_hist, 0.0)
    conf = longer.sum(1) / np.where(seen > 0, seen, 1.0)
    return cand, at, conf
