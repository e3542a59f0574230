"""``predictResourceNeeds`` (the concept's pseudocode), vectorised over users:

    needs = (base + contextual adjustment) * anomaly multiplier

- base: the user's expected requests in the next interval, from their light Holt-Winters
  tier (level, trend and hour-of-day profile: the time of day is in the base);
- contextual adjustment: base * (lift - 1), where lift is the product of the current lift
  of the user's geography and device (their share of requests in the last minutes
  against their share over a day; clipped to [0.5, 3] together) and the multiplier of
  campaigns active for the user's segment;
- anomaly multiplier: ``anomaly_multiplier`` for a user flagged as surging this hour.

Per service the needs go through the navigation model (each user's next-step
distribution, ``Markov.expected_requests``) and the resource-to-service map; per segment
they are summed.
"""

from __future__ import annotations

import numpy as np

from .kernels import holt_winters as hw

LIFT_MIN, LIFT_MAX = 0.5, 3.0


def context_lift(fast: np.ndarray, slow: np.ndarray, min_slow: float) -> np.ndarray:
    """Each geography's (or device's) recent share of all requests against its long-run
    share, clipped: the mix shifting towards it. Overall traffic rising lifts nothing (the
    users' own forecasts carry the time of day). 1 where the long-run rate is too small."""
    ft, st = fast.sum(), slow.sum()
    ok = (slow > min_slow) & (ft > 0) & (st > 0)
    ratio = (fast / max(ft, 1e-300)) / np.where(ok, slow / max(st, 1e-300), 1.0)
    return np.where(ok, np.clip(ratio, LIFT_MIN, LIFT_MAX), 1.0)


def predict_needs(slots: np.ndarray, rate: np.ndarray, geo: np.ndarray, device: np.ndarray,
                  segment: np.ndarray, now_us: int, interval_s: float, geo_lift: np.ndarray,
                  device_lift: np.ndarray, segment_mult: dict[int, float],
                  anomaly_multiplier: float, phi: float) -> dict[str, np.ndarray]:
    """Needs of the users in ``slots`` over the next ``interval_s``: ``base``,
    ``context_adjustment``, ``anomaly_multiplier`` and ``needs`` (expected requests)."""
    f = np.zeros((len(slots), 1), np.float32)
    hw.user_rate_forecast(slots, now_us, rate, phi, f)
    base = f[:, 0].astype(np.float64) * (interval_s / 3600.0)
    lift = np.clip(geo_lift[geo[slots]] * device_lift[device[slots]], LIFT_MIN, LIFT_MAX)
    if segment_mult:
        seg = segment[slots]
        for g, mult in segment_mult.items():
            lift = np.where(seg == g, lift * mult, lift)
    hour = now_us // hw.HOUR_US
    surging = rate[slots, hw.R_SURGE_HOUR] == hour
    amult = np.where(surging, anomaly_multiplier, 1.0)
    ctx = base * (lift - 1.0)
    return {"base": base, "context_adjustment": ctx, "anomaly_multiplier": amult,
            "needs": (base + ctx) * amult}
