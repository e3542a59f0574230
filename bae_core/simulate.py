"""Backtest simulator: replay a demand trace through the engine in simulated time and
compare the predictive policy with a reactive (Kubernetes HPA) autoscaler on the same
cluster model. Pure logic: no files, no sockets, no clocks.

Cluster model (both policies)
    Per service, the policy sets the *ordered* replica count. A replica added at time t
    serves from t + ``startup_s``; scale-down is immediate and removes the youngest
    replicas first (those still starting), so ready(t) = min of ordered over
    [t - startup_s, t]. Capacity = ready x ``rps_per_replica`` (C, the throughput of one
    replica at 100 % CPU). Both clusters start right-sized for the first ``startup_s`` of
    demand at the target utilisation (the trace starts on a running system).

Time
    A fine grid of ``cell`` seconds (the gcd of the step, the HPA sync period and the
    start-up delay) carries the demand and the replica counts; metrics are summed per
    simulation step of ``step_s`` (= model.bucket_s). The engine ticks as often as the HPA
    syncs (the daemon ticks every second), so several times per step when the step is
    longer: at each tick it sees the requests since the last one, with the clock at the
    tick's last microsecond (now - 1), then ``tick(now)``; allocations take effect from
    that instant. At the step's last tick, one METRIC record per service comes first
    (replicas = ready now, cpu = demand over the last ``metric_window_s`` / (ready x C),
    capped at 1.0). With ``model.late_buckets`` = 0 (the backtest's default: nothing is
    late in simulated time), the tick at the step's end closes its bucket.

Predictive policy
    ordered = the last ALLOCATION.desired_replicas of the service; PREWARM records (when
    the engine emits them, via ``take_outputs``) raise the order to ``replicas`` from
    ``at_us - startup_s`` (so they are ready at ``at_us``) until ``at_us +
    prewarm_window_s``. The engine is told rps_per_replica = C x target_utilisation (what
    its METRIC learning converges to: requests per replica at the target utilisation),
    the METRIC window and a lead time of at least ``startup_s``.

Reactive policy (HPA target tracking)
    Every ``sync_s``: observed = the request rate over the sync period just ended;
    raw = ceil(observed / (C x target)), kept at the current count when observed / (current
    x C x target) is within ``tolerance`` of 1; the order is the largest raw recommendation
    of the last ``hpa_window_s`` (scale-down stabilisation; scale-up is immediate), clamped
    to [min_replicas, max_replicas]. The rate form is used, not CPU capped at 100 %, so an
    overloaded HPA is not slowed by the cap (generous to the baseline).

Metrics (per policy, summed over services and steps)
    under_provisioned_requests  sum max(0, demand - capacity x dt)
    under_provisioned_s         service-seconds of steps whose demand exceeded capacity
    over_provisioned_replica_hours  sum max(0, ready - ceil(demand rate / C)) x dt / 3600
    replica_hours               ordered replicas (starting ones are paid for) x time
    ready_replica_hours         ready replicas x time
    scaling_actions             changes of the ordered count
    prewarm_hits / _misses      a PREWARM is a hit when requests for its service arrive in
                                [at_us, at_us + prewarm_window_s); null without PREWARM
    prefetch_hit_rate           share of requests whose resource was in the service's latest
                                PREFETCH list (lists published by earlier ticks); null
                                without PREFETCH or with synthetic resources
    lru_hit_rate                an LRU cache per service, as large as the service's longest
                                PREFETCH list (``cache_size`` when the engine emits none),
                                over the same requests; null with synthetic resources.
    The reactive side has no prediction, so its ``prefetch_hit_rate`` is the LRU one (a
    reactive cache of the same size).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from numba import njit

from . import wire
from .errors import ConfigError
from .kernels import JIT

_MIX = np.uint64(0x9E3779B97F4A7C15)


# ----------------------------------------------------------------------------- settings

@dataclass
class SimSettings:
    step_s: float = 10.0  # simulation step (= model.bucket_s)
    rps_per_replica: float = 50.0  # C: requests/s one replica serves at 100 % CPU
    target_utilisation: float = 0.7
    min_replicas: int = 1
    max_replicas: int = 1000
    startup_s: float = 60.0  # order -> serving
    sync_s: float = 15.0  # HPA sync period
    tolerance: float = 0.1  # HPA tolerance band
    hpa_window_s: float = 300.0  # HPA scale-down stabilisation window
    metric_window_s: float = 60.0  # CPU utilisation averaging window of METRIC records
    cache_size: int = 20  # LRU size when the engine publishes no prefetch list
    prewarm_window_s: float = 300.0

    def check(self, labels: dict[str, str] | None = None) -> None:
        """Raise ConfigError for a value out of range; ``labels`` names the setting as the
        caller exposes it (a command-line flag, say)."""
        def bad(name, problem, fix):
            raise ConfigError((labels or {}).get(name, name),
                              f"{getattr(self, name)!r} {problem}", fix)

        for name in ("step_s", "rps_per_replica", "target_utilisation", "sync_s"):
            if not getattr(self, name) > 0:
                bad(name, "must be > 0", "give a positive number")
        for name in ("startup_s", "hpa_window_s", "metric_window_s", "prewarm_window_s",
                     "tolerance"):
            if not getattr(self, name) >= 0:
                bad(name, "must be >= 0", "give zero or a positive number")
        if self.cache_size < 1:
            bad("cache_size", "must be >= 1", "give a positive cache size")
        if self.min_replicas > self.max_replicas:
            bad("min_replicas", "exceeds max_replicas", "fix the bounds")

    def ticks_per_step(self, cells_per_step: int) -> int:
        """Engine ticks per step: as often as the HPA syncs (the daemon ticks every second),
        when whole cells divide the step that way; else once per step."""
        t = max(1, int(round(self.step_s / self.sync_s)))
        return t if cells_per_step % t == 0 else 1

    @property
    def cell_s(self) -> float:
        """The fine grid: the largest width dividing the step, the sync period and the
        start-up delay (milliseconds resolution)."""
        ms = [int(round(x * 1000)) for x in (self.step_s, self.sync_s, self.startup_s)]
        g = 0
        for m in ms:
            g = math.gcd(g, m)
        return max(g, 1) / 1000.0


def engine_overrides(s: SimSettings) -> dict:
    """Config values the backtest imposes on the engine (merge over the user's config):
    the step as bucket width, the capacity the METRIC records will teach and the window
    they average over."""
    return {"model": {"bucket_s": s.step_s},
            "policy": {"rps_per_replica": s.rps_per_replica * s.target_utilisation,
                       "metric_window_s": s.metric_window_s}}


def apply_overrides(doc: dict, s: SimSettings) -> dict:
    """A copy of the config document ``doc`` with the backtest's overrides merged in
    (lead time raised to at least ``startup_s``)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in (doc or {}).items()}
    for sec, kv in engine_overrides(s).items():
        out.setdefault(sec, {}).update(kv)
    # events are never late in simulated time: buckets close at the step's end
    out["model"].setdefault("late_buckets", 0)
    pol = out.setdefault("policy", {})
    pol["lead_time_s"] = max(float(pol.get("lead_time_s", 60.0)), s.startup_s)
    # seasonal width must stay a multiple of the bucket width
    model = out["model"]
    sb = float(model.get("seasonal_bucket_s", 300.0))
    ratio = sb / s.step_s
    if abs(ratio - round(ratio)) > 1e-6 * max(ratio, 1) or round(ratio) < 1:
        model["seasonal_bucket_s"] = s.step_s * max(1, round(ratio))
    return out


# ----------------------------------------------------------------------------- demand

@dataclass
class Demand:
    """What the simulator replays. ``fine[s, m]``: requests of service ``s`` in grid cell
    ``m`` (``cells_per_step`` cells per step). ``events(k)`` gives the REQUEST records of
    step ``k`` in time order. ``requests`` (time-sorted) is set when users and resources
    are real (prefetch and LRU are scored on it); ``step_index`` bounds it per step."""

    service_ids: np.ndarray  # uint32, ascending
    names: list[str]
    t0_us: int
    step_us: int
    cells_per_step: int
    fine: np.ndarray  # float64 (S, n_steps * cells_per_step)
    events: Callable[[int], np.ndarray]
    requests: np.ndarray | None = None
    bounds: np.ndarray | None = None  # requests[bounds[k]:bounds[k+1]] is step k
    synthetic: bool = False

    @property
    def n_steps(self) -> int:
        return self.fine.shape[1] // self.cells_per_step

    @property
    def steps(self) -> np.ndarray:
        """Requests per service per step, (S, n_steps)."""
        S = len(self.service_ids)
        return self.fine.reshape(S, self.n_steps, self.cells_per_step).sum(-1)


def _grid(s: SimSettings) -> tuple[int, int, int]:
    step_us = int(round(s.step_s * 1e6))
    cell_us = int(round(s.cell_s * 1e6))
    r = max(1, step_us // cell_us)
    return step_us, cell_us, r


def demand_from_requests(recs: np.ndarray, s: SimSettings,
                         service_names: dict[int, str] | None = None) -> Demand:
    """Demand from real REQUEST records (any order; stable-sorted by time here)."""
    if len(recs) == 0:
        raise ConfigError("trace", "holds no requests", "give a trace with requests")
    recs = recs[np.argsort(recs["ts_us"], kind="stable")]
    step_us, cell_us, r = _grid(s)
    ts = recs["ts_us"]
    t0 = int(ts[0]) // step_us * step_us
    n_steps = int((int(ts[-1]) - t0) // step_us) + 1
    sids, inv = np.unique(recs["service"], return_inverse=True)
    cell = (ts - t0) // cell_us
    fine = np.zeros((len(sids), n_steps * r))
    np.add.at(fine, (inv, cell), 1.0)
    edges = t0 + np.arange(n_steps + 1, dtype=np.int64) * step_us
    bounds = np.searchsorted(ts, edges, side="left")
    names = [(service_names or {}).get(int(x), str(int(x))) for x in sids]

    def events(k: int) -> np.ndarray:
        return recs[bounds[k]:bounds[k + 1]]

    return Demand(sids.astype(np.uint32), names, t0, step_us, r, fine, events, recs, bounds)


def demand_from_series(values: np.ndarray, row_s: float, s: SimSettings, mean_rps: float,
                       start_us: int, service_id: int, name: str) -> Demand:
    """Demand of one service from a regular series: rate proportional to the value, scaled
    so the mean is ``mean_rps``; each row's requests are spread evenly over its interval
    (the cumulative count crosses n + 1/2 at the n-th event). One user, one resource."""
    v = np.asarray(values, float)
    if len(v) == 0 or not np.isfinite(v).all():
        raise ConfigError("trace", "holds no usable value", "check the value column")
    mean = float(v.mean())
    if mean <= 0:
        raise ConfigError("trace", "is all zeros: there is no demand to scale",
                          "pick a column with non-zero values")
    rate = v * (mean_rps / mean)
    step_us, cell_us, r = _grid(s)
    dur = len(v) * row_s
    n_steps = int(math.ceil(dur / s.step_s - 1e-9))
    edges_s = np.arange(n_steps * r + 1) * (cell_us / 1e6)
    row_edges = np.arange(len(v) + 1) * row_s
    cum_rows = np.concatenate([[0.0], np.cumsum(rate * row_s)])
    lam = np.interp(edges_s, row_edges, cum_rows)
    n_at = np.floor(lam + 0.5)
    fine = np.diff(n_at)[None, :]
    per_step = fine[0].reshape(n_steps, r).sum(-1).astype(np.int64)
    buf = np.zeros(int(per_step.max()) if len(per_step) else 0, wire.REQUEST)
    buf["service"] = service_id
    buf["user"] = 1
    buf["resource"] = 1
    buf["status"] = 200
    t0 = int(start_us) // step_us * step_us

    def events(k: int) -> np.ndarray:
        n = int(per_step[k])
        if n == 0:
            return buf[:0]
        out = buf[:n]
        out["ts_us"] = t0 + k * step_us + ((np.arange(n) + 0.5) * (step_us / n)).astype(
            np.int64)
        return out

    return Demand(np.array([service_id], np.uint32), [name], t0, step_us, r, fine, events,
                  None, None, synthetic=True)


# ----------------------------------------------------------------------------- kernels

@njit(**JIT)
def _hpa(obs, initial, per_replica_target, tol, window, lo, hi, out):
    """HPA orders per sync: ``obs[s, j]`` the rate observed at sync j (j = 0: none yet)."""
    S, J = obs.shape
    recs = np.zeros(J, np.int64)
    for s in range(S):
        cur = initial[s]
        for j in range(J):
            if j == 0:
                out[s, 0] = cur
                continue
            x = obs[s, j]
            raw = int(math.ceil(x / per_replica_target - 1e-9))
            if cur > 0 and abs(x / (cur * per_replica_target) - 1.0) <= tol:
                raw = cur
            recs[j] = raw
            m = raw
            for i in range(max(1, j - window + 1), j):
                if recs[i] > m:
                    m = recs[i]
            cur = min(max(m, lo), hi)
            out[s, j] = cur


@njit(**JIT)
def _sliding_min(x, w, initial, out):
    """out[s, m] = min(x[s, m-w .. m]) with x[s, <0] = initial[s]."""
    S, M = x.shape
    for s in range(S):
        for m in range(M):
            v = x[s, m]
            for i in range(m - w, m):
                y = x[s, i] if i >= 0 else initial[s]
                if y < v:
                    v = y
            out[s, m] = v


@njit(**JIT)
def _lru(keys, seg, sizes, hits):
    """LRU hits by stack distance: a request hits when fewer than ``size`` distinct keys
    were used since the previous use of its key (Fenwick tree over positions). ``seg``
    bounds the per-service streams; keys are unique across services."""
    n = len(keys)
    nk = 0
    for i in range(n):
        if keys[i] + 1 > nk:
            nk = keys[i] + 1
    last = np.full(nk, -1, np.int64)
    tree = np.zeros(n + 1, np.int64)
    for g in range(len(seg) - 1):
        size = sizes[g]
        for i in range(seg[g], seg[g + 1]):
            p = last[keys[i]]
            if p >= 0:
                # marks in (p, i): prefix(i - 1) - prefix(p)
                d = 0
                j = i  # prefix over positions < i  (1-based index i)
                while j > 0:
                    d += tree[j]
                    j -= j & (-j)
                j = p + 1
                while j > 0:
                    d -= tree[j]
                    j -= j & (-j)
                hits[i] = d < size
                j = p + 1
                while j <= n:
                    tree[j] -= 1
                    j += j & (-j)
            j = i + 1
            while j <= n:
                tree[j] += 1
                j += j & (-j)
            last[keys[i]] = i


def lru_hits(services: np.ndarray, resources: np.ndarray,
             sizes: dict[int, int] | int) -> np.ndarray:
    """Per request (in stream order), whether a per-service LRU cache held its resource.
    ``sizes``: one size for all services, or service id -> size (0: no cache)."""
    n = len(services)
    if n == 0:
        return np.zeros(0, bool)
    order = np.argsort(services, kind="stable")
    svc = services[order]
    pairs = np.stack([svc.astype(np.uint64), resources[order].astype(np.uint64)], 1)
    _, keys = np.unique(pairs, axis=0, return_inverse=True)
    keys = keys.reshape(-1).astype(np.int64)
    starts = np.flatnonzero(np.concatenate([[True], svc[1:] != svc[:-1]]))
    seg = np.concatenate([starts, [n]]).astype(np.int64)
    if isinstance(sizes, dict):
        sz = np.array([sizes.get(int(svc[a]), 0) for a in starts], np.int64)
    else:
        sz = np.full(len(starts), int(sizes), np.int64)
    hits = np.zeros(n, np.bool_)
    _lru(keys, seg, sz, hits)
    out = np.empty(n, bool)
    out[order] = hits
    return out


def _pair_keys(services: np.ndarray, resources: np.ndarray) -> np.ndarray:
    return resources.astype(np.uint64) ^ (services.astype(np.uint64) * _MIX)


# ----------------------------------------------------------------------------- metrics

def provisioning_metrics(demand: np.ndarray, ready_s: np.ndarray, ordered_s: np.ndarray,
                         rps_per_replica: float, step_s: float) -> dict:
    """Scores of one policy from per-step arrays (S, K): requests, ready replica-seconds
    and ordered replica-seconds."""
    cap = ready_s * rps_per_replica
    short = demand - cap
    needed = np.ceil(demand / (step_s * rps_per_replica) - 1e-9)
    over = np.maximum(0.0, ready_s / step_s - needed) * step_s / 3600.0
    total = float(demand.sum())
    under = float(np.maximum(0.0, short).sum())
    return {
        "under_provisioned_requests": round(under, 3),
        "under_provisioned_s": float((short > 1e-9).sum() * step_s),
        "over_provisioned_replica_hours": round(float(over.sum()), 4),
        "replica_hours": round(float(ordered_s.sum()) / 3600.0, 4),
        "ready_replica_hours": round(float(ready_s.sum()) / 3600.0, 4),
        "served_fraction": round(1.0 - under / total, 6) if total > 0 else None,
    }


def _ready_steps(ordered_fine: np.ndarray, initial: np.ndarray, s: SimSettings,
                 r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ready replica-seconds per step, ordered replica-seconds per step, ready fine)."""
    cell_s = s.cell_s
    w = int(round(s.startup_s / cell_s))
    ready = np.empty_like(ordered_fine)
    _sliding_min(ordered_fine, w, initial.astype(ordered_fine.dtype), ready)
    S, M = ordered_fine.shape
    K = M // r
    rs = ready.reshape(S, K, r).sum(-1) * cell_s
    os_ = ordered_fine.reshape(S, K, r).sum(-1) * cell_s
    return rs.astype(float), os_.astype(float), ready


def initial_replicas(demand: Demand, s: SimSettings) -> np.ndarray:
    """Right-sized for the first ``startup_s`` (at least one step) of demand."""
    cells = max(demand.cells_per_step, int(round(max(s.startup_s, s.step_s) / s.cell_s)))
    rate = demand.fine[:, :cells].sum(1) / (cells * s.cell_s)
    need = np.ceil(rate / (s.rps_per_replica * s.target_utilisation) - 1e-9)
    return np.clip(need, s.min_replicas, s.max_replicas).astype(np.int64)


# ----------------------------------------------------------------------------- policies

def run_reactive(demand: Demand, s: SimSettings) -> dict:
    """The HPA baseline on ``demand``: metrics plus per-step series."""
    t = time.perf_counter()
    cell_s = s.cell_s
    q = max(1, int(round(s.sync_s / cell_s)))
    fine = demand.fine
    S, M = fine.shape
    J = -(-M // q)
    padded = np.zeros((S, J * q))
    padded[:, :M] = fine
    per_sync = padded.reshape(S, J, q).sum(-1) / s.sync_s
    obs = np.zeros((S, J))
    obs[:, 1:] = per_sync[:, :-1]  # the period just ended
    init = initial_replicas(demand, s)
    orders = np.zeros((S, J), np.int64)
    window = max(1, int(round(s.hpa_window_s / s.sync_s)))
    _hpa(obs, init, s.rps_per_replica * s.target_utilisation, s.tolerance, window,
         s.min_replicas, s.max_replicas, orders)
    ordered_fine = np.repeat(orders, q, axis=1)[:, :M]
    ready_s, ordered_s, _ = _ready_steps(ordered_fine, init, s, demand.cells_per_step)
    m = provisioning_metrics(demand.steps, ready_s, ordered_s, s.rps_per_replica, s.step_s)
    m["scaling_actions"] = int((np.diff(orders, axis=1) != 0).sum())
    m["seconds"] = round(time.perf_counter() - t, 3)
    return {"metrics": m, "ready_s": ready_s, "ordered_steps": ordered_s / s.step_s}


def run_predictive(cfg, demand: Demand, s: SimSettings, engine=None,
                   contexts: np.ndarray | None = None) -> dict:
    """Drive ``engine`` (default: a new ``Engine(cfg)``) through ``demand``."""
    t_start = time.perf_counter()
    if engine is None:
        from .engine import Engine
        engine = Engine(cfg)
    sids = demand.service_ids
    S, K, r = len(sids), demand.n_steps, demand.cells_per_step
    step_us = demand.step_us
    t0 = demand.t0_us
    D = demand.steps
    csum = np.concatenate([np.zeros((S, 1)), np.cumsum(D, axis=1)], axis=1)
    mw = max(1, int(round(s.metric_window_s / s.step_s)))
    C = s.rps_per_replica
    init = initial_replicas(demand, s)
    T = s.ticks_per_step(r)
    ct = r // T  # cells per tick
    tick_us = step_us // T
    O = np.empty((K * T + 1, S), np.int64)  # O[t]: ordered during tick interval t
    O[0] = init
    desired = init.copy()
    predicted = np.full(S, np.nan)
    pred_series = np.full((S, K), np.nan, np.float32)
    w_cells = int(round(s.startup_s / s.cell_s))
    take = getattr(engine, "take_outputs", None)
    nav = "markov" in getattr(engine, "models", {})
    met = np.zeros(S, wire.METRIC)
    met["service"] = sids
    startup_us = int(round(s.startup_s * 1e6))
    pw_window_us = int(round(s.prewarm_window_s * 1e6))
    pw_rep = np.zeros(S, np.int64)
    pw_from = np.full(S, np.iinfo(np.int64).max)
    pw_until = np.full(S, np.iinfo(np.int64).min)
    prewarms: list[np.ndarray] = []
    tiers = 0
    allocations = 0
    # prefetch scoring: dense ids of the (service, resource) pairs of the trace
    score_pf = take is not None and demand.requests is not None and not demand.synthetic
    pf_seen = False
    pf_hits = 0
    pf_max_len = np.zeros(S, np.int64)
    if score_pf:
        req = demand.requests
        req_keys = _pair_keys(req["service"], req["resource"])
        ukeys, req_pair = np.unique(req_keys, return_inverse=True)
        req_pair = req_pair.reshape(-1)
        pair_svc = np.zeros(len(ukeys), np.int64)
        pair_svc[req_pair] = np.searchsorted(sids, req["service"])
        in_list = np.zeros(len(ukeys), bool)
        bounds = demand.bounds
    if contexts is not None and len(contexts):
        engine.apply(wire.MsgType.CONTEXT, contexts, t0)
    t_engine = 0.0
    for k in range(K):
        recs = demand.events(k)
        step_start = t0 + k * step_us
        cuts = np.searchsorted(recs["ts_us"], step_start + tick_us * np.arange(1, T))
        edges = np.concatenate([[0], cuts, [len(recs)]])
        for j in range(T):
            t = k * T + j
            now = step_start + (j + 1) * tick_us
            part = recs[edges[j]:edges[j + 1]]
            if score_pf and pf_seen and len(part):
                a0 = bounds[k] + edges[j]
                pf_hits += int(in_list[req_pair[a0:a0 + len(part)]].sum())
            te = time.perf_counter()
            engine.apply(wire.MsgType.REQUEST, part, now - 1)  # the tick's last instant
            t_engine += time.perf_counter() - te
            if j == T - 1:  # one METRIC record per service and step
                # ready just before now: orders in effect over [now - startup, now)
                lo = max(0, ((t + 1) * ct - 1 - w_cells) // ct)
                ready = O[lo:t + 1].min(axis=0)
                a = max(0, k + 1 - mw)
                rate = (csum[:, k + 1] - csum[:, a]) / ((k + 1 - a) * s.step_s)
                cpu = np.where(ready > 0, np.minimum(1.0, rate / (np.maximum(ready, 1) * C)),
                               (rate > 0).astype(float))
                met["ts_us"] = now
                met["replicas"] = ready
                met["cpu"] = cpu
                te = time.perf_counter()
                # services report metrics once they exist (have had a request)
                engine.apply(wire.MsgType.METRIC, met[csum[:, k + 1] > 0], now)
                if nav:
                    engine.learn_navigation()
                t_engine += time.perf_counter() - te
            te = time.perf_counter()
            allocs = engine.tick(now)
            outs = take() if take is not None else None
            t_engine += time.perf_counter() - te
            if len(allocs):
                idx = np.searchsorted(sids, allocs["service"])
                ok = (idx < S) & (sids[np.minimum(idx, S - 1)] == allocs["service"])
                idx = idx[ok]
                desired[idx] = allocs["desired_replicas"][ok]
                predicted[idx] = allocs["predicted_rps"][ok]
                allocations += int(ok.sum())
            if outs:
                pw = outs.get("prewarm")
                if pw is not None and len(pw):
                    prewarms.append(np.array(pw, copy=True))
                    idx = np.searchsorted(sids, pw["service"])
                    ok = (idx < S) & (sids[np.minimum(idx, S - 1)] == pw["service"])
                    i = idx[ok]
                    pw_rep[i] = pw["replicas"][ok]
                    pw_from[i] = pw["at_us"][ok] - startup_us - tick_us
                    pw_until[i] = pw["at_us"][ok] + pw_window_us
                tr = outs.get("tier")
                if tr is not None:
                    tiers += len(tr)
                pf = outs.get("prefetch")
                if score_pf and pf is not None and len(pf):
                    pf_seen = True
                    idx = np.searchsorted(sids, pf["service"])
                    ok = (idx < S) & (sids[np.minimum(idx, S - 1)] == pf["service"])
                    upd = np.unique(idx[ok])
                    lens = np.bincount(idx[ok], minlength=S)
                    pf_max_len[upd] = np.maximum(pf_max_len[upd], lens[upd])
                    in_list[np.isin(pair_svc, upd)] = False
                    keys = _pair_keys(pf["service"][ok], pf["resource"][ok])
                    jj = np.searchsorted(ukeys, keys)
                    hit = (jj < len(ukeys)) & (ukeys[np.minimum(jj, len(ukeys) - 1)] == keys)
                    in_list[jj[hit]] = True
            o = desired
            active = (now >= pw_from) & (now < pw_until)
            if active.any():
                o = np.maximum(o, np.where(active, pw_rep, 0))
            O[t + 1] = np.clip(o, 0, s.max_replicas)
        pred_series[:, k] = predicted
    loop_s = time.perf_counter() - t_start
    ordered_fine = np.repeat(O[:K * T].T, ct, axis=1)
    ready_s, ordered_s, _ = _ready_steps(ordered_fine, init, s, r)
    m = provisioning_metrics(D, ready_s, ordered_s, C, s.step_s)
    m["scaling_actions"] = int((np.diff(O, axis=0) != 0).sum())
    m["ticks_per_step"] = T
    m["allocations_published"] = allocations
    m["tier_records"] = tiers if take is not None else None
    # pre-warm
    if prewarms:
        pw = np.concatenate(prewarms)
        idx = np.searchsorted(sids, pw["service"])
        ok = (idx < S) & (sids[np.minimum(idx, S - 1)] == pw["service"])
        a = np.clip((pw["at_us"] - t0) // step_us, 0, K)
        b = np.clip(-(-(pw["at_us"] + pw_window_us - t0) // step_us), 0, K)
        got = np.zeros(len(pw), bool)
        got[ok] = csum[idx[ok], b[ok]] > csum[idx[ok], a[ok]]
        m["prewarm_hits"] = int(got.sum())
        m["prewarm_misses"] = int(len(pw) - got.sum())
    else:
        m["prewarm_hits"] = m["prewarm_misses"] = None
    # prefetch vs LRU
    total_req = float(D.sum())
    if demand.synthetic or demand.requests is None:
        m["prefetch_hit_rate"] = m["lru_hit_rate"] = None
        m["cache_sizes"] = None
    else:
        req = demand.requests
        if pf_seen:
            m["prefetch_hit_rate"] = round(pf_hits / total_req, 6)
            sizes = {int(sids[i]): int(pf_max_len[i]) for i in range(S)}
            m["cache_sizes"] = {demand.names[i]: int(pf_max_len[i]) for i in range(S)
                                if pf_max_len[i] > 0}
        else:
            m["prefetch_hit_rate"] = None
            sizes = s.cache_size
            m["cache_sizes"] = s.cache_size
        hits = lru_hits(req["service"], req["resource"], sizes)
        m["lru_hit_rate"] = round(float(hits.mean()), 6) if len(hits) else None
    m["engine_seconds"] = round(t_engine, 3)
    m["seconds"] = round(time.perf_counter() - t_start, 3)
    m["loop_seconds"] = round(loop_s, 3)
    return {"metrics": m, "ready_s": ready_s, "ordered_steps": ordered_s / s.step_s,
            "predicted_rps": pred_series}


@dataclass
class BacktestResult:
    predictive: dict
    reactive: dict
    series: dict = field(default_factory=dict)


def backtest(cfg, demand: Demand, s: SimSettings, engine=None,
             contexts: np.ndarray | None = None, by_service: int = 5) -> BacktestResult:
    """Both policies on the same demand and cluster model; ``by_service``: how many of the
    busiest services get their own figures."""
    s.check()
    pred = run_predictive(cfg, demand, s, engine=engine, contexts=contexts)
    react = run_reactive(demand, s)
    rp = dict(pred["metrics"])
    rr = dict(react["metrics"])
    rr["prefetch_hit_rate"] = rp.get("lru_hit_rate")  # a reactive cache: LRU
    step_s = s.step_s
    D = demand.steps
    top = np.argsort(-D.sum(1), kind="stable")[:by_service]
    for side, out in ((rp, pred), (rr, react)):
        side["by_service"] = {}
        for i in top:
            m = provisioning_metrics(D[i:i + 1], out["ready_s"][i:i + 1],
                                     out["ordered_steps"][i:i + 1] * step_s,
                                     s.rps_per_replica, step_s)
            side["by_service"][demand.names[i]] = {
                "requests": int(D[i].sum()),
                "under_provisioned_requests": m["under_provisioned_requests"],
                "replica_hours": m["replica_hours"],
                "over_provisioned_replica_hours": m["over_provisioned_replica_hours"]}
    series = {
        "t_s": (np.arange(demand.n_steps) + 1) * step_s,
        "demand_rps": demand.steps / step_s,
        "predicted_rps": pred["predicted_rps"],
        "capacity_predictive_rps": pred["ready_s"] * s.rps_per_replica / step_s,
        "capacity_reactive_rps": react["ready_s"] * s.rps_per_replica / step_s,
        "ordered_predictive": pred["ordered_steps"],
        "ordered_reactive": react["ordered_steps"],
    }
    return BacktestResult(rp, rr, series)
