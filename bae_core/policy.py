"""The first capacity rule: replicas from a forecast, with scale-down stabilisation.

desired = clamp(ceil(forecast x campaign multiplier x (1 + headroom) / rps per replica)).
Scale-up is published at once; scale-down only after the desired count stayed below the
published one for the whole stabilisation window, and then to the largest count seen in
that window (as Kubernetes' HPA does).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .wire import Reason


class Decision(NamedTuple):
    desired: np.ndarray  # int64 replicas per service
    publish: np.ndarray  # bool: publish a delta for this service now
    reasons: np.ndarray  # uint32 Reason bits


def replicas_for(rps: np.ndarray, per_replica: np.ndarray, headroom: float, lo: int,
                 hi: int) -> np.ndarray:
    need = np.ceil(np.nan_to_num(rps, nan=0.0, posinf=0.0) * (1.0 + headroom) / per_replica)
    return np.clip(need, lo, hi).astype(np.int64)


def decide(base: np.ndarray, mult: np.ndarray, per_replica: np.ndarray, headroom: float,
           lo: int, hi: int, published: np.ndarray, down_since: np.ndarray,
           down_max: np.ndarray, now_us: int, window_us: int, ready: np.ndarray) -> Decision:
    """Vectorised over services. Updates ``down_since`` and ``down_max`` in place."""
    desired = replicas_for(base * mult, per_replica, headroom, lo, hi)
    first = ready & (published < 0)
    up = ready & (published >= 0) & (desired > published)
    lower = ready & (published >= 0) & (desired < published)
    starting = lower & (down_since < 0)
    down_since[starting] = now_us
    down_max[starting] = desired[starting]
    down_max[lower] = np.maximum(down_max[lower], desired[lower])
    not_lower = ~lower
    down_since[not_lower] = -1
    down = lower & (now_us - down_since >= window_us)
    desired = np.where(down, down_max, desired)
    down_since[down] = -1
    reasons = np.zeros(len(base), np.uint32)
    reasons[first] |= np.uint32(Reason.FIRST)
    reasons[up] |= np.uint32(Reason.SCALE_UP)
    reasons[down] |= np.uint32(Reason.SCALE_DOWN)
    return Decision(desired, first | up | down, reasons)
