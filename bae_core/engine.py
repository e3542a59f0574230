"""The engine: columnar state for users, segments and services, fed by decoded record
arrays; per-service request-rate buckets feeding a Holt smoother (which drives the capacity
rule and the deltas) and the online models (ARIMA, Holt-Winters, anomaly detector).

Pure logic: callers pass ``now_us``; nothing here reads clocks, sockets or files.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from statistics import NormalDist

import numpy as np

from . import needs, policy, wire
from .errors import BAEError
from .kernels import holt_winters as hw_kernels
from .kernels import rates, residuals
from .kernels import users as user_kernels
from .models.anomaly import AnomalyDetector
from .models.arima import OnlineARIMA
from .models.holt_winters import HoltWinters
from .models.ensemble import Ensemble
from .models.markov import Markov
from ext.ringbuf import RingBuffer

from .slots import EMPTY
from .state import CHUNK_SHIFT, Segments, Services, Users

MAX_CAMPAIGNS = 4096
MEMBERS = ("holt_winters", "arima", "lstm", "prophet")  # the ensemble's forecasters
MODEL_REASONS = (wire.Reason.MODEL_HOLT_WINTERS, wire.Reason.MODEL_ARIMA,
                 wire.Reason.MODEL_LSTM, wire.Reason.MODEL_PROPHET)
H5 = 12  # seasonal steps each member forecasts (an hour of 5-minute steps)
HIST5 = 2048  # seasonal steps of history kept per service (the LSTM's longest input)


def _aligned(got: dict, ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """A worker's forecasts for services ``ids`` as of their seasonal ``counts`` (NaN
    where it has none): a forecast made k steps ago is shifted by k."""
    out = np.full((len(ids), H5), np.nan)
    keys, p50 = got["keys"], got["p50"]
    order = np.argsort(keys[:, 0], kind="stable")
    pos = np.searchsorted(keys[order, 0], ids.astype(np.int64))
    pos = np.minimum(pos, len(order) - 1)
    hit = keys[order[pos], 0] == ids.astype(np.int64)
    for i in np.flatnonzero(hit).tolist():
        r = order[pos[i]]
        k = int(counts[i] - keys[r, 1])
        if 0 <= k < p50.shape[1]:
            m = min(H5, p50.shape[1] - k)
            out[i, :m] = p50[r, k:k + m]
    return out
_NO_LOCK = contextlib.nullcontext()
# the light per-user tier's smoothing (alpha, beta, gamma, phi) over hourly counts
USER_RATE = (0.1, 0.01, 0.1, 0.98)
Z90 = 1.2815515655446004
CAPACITY_DECAY = 0.95  # per METRIC record, of the sums the capacity is learned from
SATURATED = 0.98  # utilisation at which a METRIC record only bounds the capacity
MIN_RATE = 1e-6  # requests/s: below this summed rate the capacity is not learned
MIN_ERRORS = 20.0  # scored buckets before a service's own error quantiles are used
ENSEMBLE_MIN_SCORED = 12  # seasonal steps judged before the ensemble joins the forecast
PANIC_MIN_WINDOW_S = 15.0  # the shortest part of an open bucket panic reads a rate from
_Z = NormalDist().inv_cdf


class Engine:
    """All model state of one daemon. ``apply`` takes validated records of any input type;
    ``tick`` closes buckets and returns the allocation deltas to publish."""

    def __init__(self, cfg):
        self.cfg = cfg
        m = cfg.model
        self.bucket_us = int(m.bucket_s * 1e6)
        self.users = Users(recent=cfg.state.user_history)
        self.segments = Segments(64)
        self.services = Services(ring=m.late_buckets + 4, history=m.history)
        self.names: dict[int, dict[int, str]] = {k: {} for k in wire.NameKind}
        self.new_names: list[np.ndarray] = []  # service NAME records to publish
        self.unsaved_names: list[np.ndarray] = []  # NAME records since the last checkpoint
        self.names_saved = 0  # NAME chunks written by earlier checkpoints
        self.evicted = 0
        self._user_by_name: dict[str, int] = {}
        self.per_seasonal = int(round(m.seasonal_bucket_s / m.bucket_s))
        day = max(1, int(round(86400 / m.seasonal_bucket_s)))
        # per-service models, all fed from the closed rate buckets; saved with the state
        self.models = {
            "arima": OnlineARIMA(8, p=m.arima_p, d=m.arima_d, q=m.arima_q),
            "holt_winters": HoltWinters(bucket_s=m.seasonal_bucket_s,
                                        periods=(day, 7 * day if m.weekly else 0),
                                        n_series=8),
            "anomaly": AnomalyDetector(season=0),
            # segment series (requests per seasonal step, on the daemon's clock)
            "segment_holt_winters": HoltWinters(bucket_s=m.seasonal_bucket_s,
                                                periods=(day, 7 * day if m.weekly else 0),
                                                n_series=8),
            "segment_arima": OnlineARIMA(8, p=m.arima_p, d=m.arima_d, q=m.arima_q),
            "segment_anomaly": AnomalyDetector(season=0),
        }
        self._seg_step = -1  # the seasonal step the segment counters are filling
        self.models["ensemble"] = Ensemble(members=MEMBERS, decay=0.05, power=8.0)
        self.hist5 = RingBuffer(8, HIST5)  # seasonal-step rates per service slot
        self.seg_hist5 = RingBuffer(8, HIST5)  # ... per segment slot
        self.segment_prophet: dict | None = None  # the last Prophet refit of the segments
        self.member_fc = np.full((8, len(MEMBERS), H5), np.nan)
        self._combined = None  # combined_forecast of every row, until a step closes
        self._lstm: dict | None = None
        self._prophet: dict | None = None
        if m.markov:
            self.models["markov"] = Markov(half_life_s=m.markov_half_life_s,
                                           session_gap_s=m.markov_session_gap_s)
        # navigation learns off the ingest path: requests queue here (bounded) and
        # ``learn_navigation`` (a worker thread in the daemon) takes them; nav_lock guards
        # the Markov model between that thread and readers
        self.nav_lock = threading.Lock()
        self._nav_queue: deque = deque()
        self._nav_queued = 0
        self._nav_qlock = threading.Lock()
        self.nav_skipped = 0
        self.nav_learned = 0
        self.nav_inline = False  # learn a full queue at once instead of skipping (replay)
        # context: requests by geography and device since the last needs pass, and their
        # fast (minutes) and slow (a day) rates
        self.geo_count = np.zeros(1 << 16)
        self.device_count = np.zeros(256)
        self._ctx_rates = {k: np.zeros((2, n)) for k, n in (("geo", 1 << 16), ("device", 256))}
        self._needs_at = -1
        self.needs_inline = True  # the daemon runs compute_needs in its worker instead
        self._needs_ready: dict | None = None
        self._lifts = {"geo": np.ones(1 << 16), "device": np.ones(256)}
        self._svc_ctx_rps = np.zeros(0)  # per service slot: users' contextual adjustment
        self._outputs: dict[str, np.ndarray] = {}
        self.published_tiers: dict[int, np.ndarray] = {}  # service id -> its TIER records
        self.published_prefetch: dict[int, np.ndarray] = {}  # service id -> PREFETCH list
        self.published_prewarm: dict[int, np.ndarray] = {}  # service id -> last PREWARM
        self.campaigns = np.zeros(0, wire.CONTEXT)
        self.accepted = {t: 0 for t in wire.INPUT_TYPES}
        self.late_dropped = 0
        self.user_late = 0  # requests for a user's hour already closed (light tier)
        self.user_surges = 0  # user-hours flagged as far above the user's own profile
        self._users_closed_hour = 0

    # ---- ingest -------------------------------------------------------------------
    def apply(self, mtype: wire.MsgType, recs: np.ndarray, now_us: int) -> None:
        """Learn from validated records of one input type; ``now_us`` is the caller's clock
        (events stamped later count as now)."""
        if len(recs) == 0:
            return
        if mtype == wire.MsgType.REQUEST:
            self._requests(recs, now_us)
        elif mtype == wire.MsgType.METRIC:
            self._metrics(recs)
        elif mtype == wire.MsgType.PROFILE:
            self._profiles(recs)
        elif mtype == wire.MsgType.CONTEXT:
            self._contexts(recs)
        elif mtype == wire.MsgType.NAME:
            self._names(recs)
        self.accepted[mtype] += len(recs)

    def _requests(self, r: np.ndarray, now_us: int) -> None:
        users, svcs, m = self.users, self.services, self.cfg.model
        ts = r["ts_us"]
        u = users.assign(r["user"])
        user_kernels.touch(u, ts, users.last_seen_us, users.hourly, users.dirty, CHUNK_SHIFT)
        user_kernels.context_counts(u, r["geo"], r["device"], users.geo, users.device,
                                    self.geo_count, self.device_count)
        late, surged = hw_kernels.user_rate_update(
            u, ts, users.rate, *USER_RATE, m.user_surge_k, m.user_surge_min,
            m.user_surge_new, 24)
        self.user_late += late
        self.user_surges += surged
        if users.recent is not None:
            users.recent.push_batch(u, ts / 1e6)
        s = svcs.assign(r["service"])
        self.late_dropped += rates.accumulate(
            s, ts, self.bucket_us, now_us // self.bucket_us, m.late_buckets, svcs.ring_ids,
            svcs.ring_counts, svcs.closed, svcs.level, svcs.trend, svcs.n_obs, svcs.hist,
            m.alpha, m.beta, m.phi, m.bucket_s, svcs.late_dropped)
        rates.service_totals(s, r["status"], r["bytes"], r["latency_ms"], svcs.requests,
                             svcs.errors, svcs.bytes, svcs.latency_ms)
        rates.service_activity(s, ts, users.tier[u], svcs.last_req_us, svcs.idle_hist,
                               svcs.tier_counts, int(self.cfg.policy.prewarm_min_idle_s * 1e6))
        segs = self.segments
        g = segs.assign(users.segment[u].astype(np.uint64))
        segs.step_count[:segs.rows] += np.bincount(g, minlength=segs.rows)[:segs.rows]
        if "markov" in self.models:
            self._queue_navigation(r, users.segment[u])

    def _queue_navigation(self, r: np.ndarray, segment: np.ndarray) -> None:
        batch = (r["user"].copy(), r["resource"].copy(), segment.astype(np.int64),
                 r["ts_us"].copy(), r["service"].copy())
        cap = self.cfg.model.markov_queue_events
        if self.nav_inline and self._nav_queued + len(r) > cap:
            while self.learn_navigation():  # replaying: no live traffic to keep up with
                pass
        with self._nav_qlock:
            self._nav_queue.append(batch)
            self._nav_queued += len(r)
            while self._nav_queued > cap and len(self._nav_queue) > 1:
                old = self._nav_queue.popleft()
                self._nav_queued -= len(old[0])
                self.nav_skipped += len(old[0])

    def learn_navigation(self, max_events: int = 65536) -> int:
        """Teach the Markov model up to about ``max_events`` queued requests (safe to call
        from a worker thread); returns how many. Compacts the model when it outgrows
        ``model.markov_max_rows``."""
        with self.nav_lock:  # held while taking too: batches are learned in queue order
            taken = []
            n = 0
            with self._nav_qlock:
                while self._nav_queue and n < max_events:
                    b = self._nav_queue.popleft()
                    self._nav_queued -= len(b[0])
                    taken.append(b)
                    n += len(b[0])
            if not taken:
                return 0
            cols = [np.concatenate(c) for c in zip(*taken)]
            m = self.models["markov"]
            m.learn({"user": cols[0], "resource": cols[1], "segment": cols[2],
                     "ts_us": cols[3], "service": cols[4]})
            if m.rows > self.cfg.model.markov_max_rows:
                m.compact(int(cols[3].max()), self.cfg.model.markov_max_rows)
            self.nav_learned += n
        return n

    def _metrics(self, r: np.ndarray) -> None:
        svcs = self.services
        s = svcs.assign(r["service"])
        svcs.observed_replicas[s] = r["replicas"]
        svcs.cpu[s] = r["cpu"]
        # start-up time: from a scale-up order to the replicas reported serving
        done = (svcs.order_us[s] >= 0) & (r["replicas"] >= svcs.order_target[s]) & \
            (r["ts_us"] > svcs.order_us[s])
        if done.any():
            ss = s[done]
            took = (r["ts_us"][done] - svcs.order_us[ss]) / 1e6
            prev = svcs.startup_s[ss]
            svcs.startup_s[ss] = np.where(prev > 0, 0.7 * prev + 0.3 * took, took)
            svcs.order_us[ss] = -1
        # capacity: the utilisation is paired with the request rate over its window once
        # the buckets covering that window close (in ``tick``)
        p = self.cfg.policy
        util = r["cpu"].astype(np.float64)
        if p.memory_per_replica_bytes > 0:
            util = np.maximum(util, r["memory_bytes"] / (np.maximum(r["replicas"], 1)
                                                         * p.memory_per_replica_bytes))
        if p.db_query_ms_budget > 0:
            util = np.maximum(util, r["db_query_ms"] / p.db_query_ms_budget)
        # a saturated replica set only bounds the capacity; an idle one says nothing
        ok = (r["replicas"] > 0) & (util > 0.01) & (util < SATURATED)
        svcs.metric_busy[s] = np.where(ok, r["replicas"] * util, np.nan)
        svcs.metric_us[s] = r["ts_us"]

    def _learn_capacity(self, n: int) -> None:
        """Requests per replica at the target utilisation, from METRIC records whose window
        has closed: the request rate over the window against replicas x utilisation of the
        busiest resource, as a ratio of decayed sums (a mean of ratios is biased by noise)."""
        svcs, p, m = self.services, self.cfg.policy, self.cfg.model
        ts = svcs.metric_us[:n]
        last = (ts - 1) // self.bucket_us  # the bucket holding the window's end
        due = np.flatnonzero((ts > 0) & (svcs.closed[:n] >= last) & (svcs.n_obs[:n] > 0))
        if len(due) == 0:
            return
        svcs.metric_us[due] = 0
        busy = svcs.metric_busy[due]
        k = max(1, int(round(p.metric_window_s / m.bucket_s)))
        back = svcs.closed[due] - last[due]  # buckets closed after the window's end
        H = svcs.hist.shape[1]
        # the window's buckets still in the history (it may start before the series)
        have = np.minimum(np.minimum(svcs.n_obs[due], H) - back, k)
        keep = np.isfinite(busy) & (have >= 1)
        due, busy, back, have = due[keep], busy[keep], back[keep], have[keep]
        if len(due) == 0:
            return
        off = np.arange(k)[None, :]
        j = (svcs.n_obs[due] - 1 - back)[:, None] - off
        rate = np.where(off < have[:, None], svcs.hist[due[:, None], j % H], 0.0).sum(1) / have
        svcs.cap_rate[due] = svcs.cap_rate[due] * CAPACITY_DECAY + rate
        svcs.cap_busy[due] = svcs.cap_busy[due] * CAPACITY_DECAY + busy
        fit = due[svcs.cap_rate[due] > MIN_RATE]  # no requests yet: nothing learned
        svcs.learned_rps_per_replica[fit] = (svcs.cap_rate[fit] / svcs.cap_busy[fit]
                                             * p.target_utilisation)

    def _profiles(self, r: np.ndarray) -> None:
        users = self.users
        u = users.assign(r["user"])
        users.segment[u] = r["segment"]
        users.tier[u] = r["tier"]
        users.mark(u)
        self.segments.assign(r["segment"].astype(np.uint64))

    def _contexts(self, r: np.ndarray) -> None:
        c = np.concatenate([self.campaigns, r.astype(wire.CONTEXT)])
        self.campaigns = c[-MAX_CAMPAIGNS:]

    def _names(self, r: np.ndarray) -> None:
        for rec in r:
            kind, id_, name = int(rec["kind"]), int(rec["id"]), wire.name_str(rec)
            self.names[kind][id_] = name
            if kind == wire.NameKind.USER:
                self._user_by_name[name] = id_
        self.unsaved_names.append(r.astype(wire.NAME))
        svc = r[r["kind"] == wire.NameKind.SERVICE]
        if len(svc):
            self.new_names.append(svc.astype(wire.NAME))

    def evict(self, now_us: int, ttl_us: int) -> int:
        """Fold users idle for ``ttl_us`` into their segment's aggregates and free their
        slots for reuse. Returns how many were evicted."""
        users, segs = self.users, self.segments
        out = np.empty(users.rows, np.int64)
        n = user_kernels.idle(users.slots.ids[: users.rows], users.last_seen_us, EMPTY,
                              now_us - ttl_us, out)
        if n == 0:
            return 0
        gone = out[:n]
        g = segs.assign(users.segment[gone].astype(np.uint64))
        user_kernels.fold(gone, g, users.hourly, segs.requests, segs.users_evicted,
                          segs.hourly)
        segs.mark(g)
        users.slots.release(slots=gone)
        users.reset(gone)
        self.evicted += n
        return n

    # ---- decisions ----------------------------------------------------------------
    def tick(self, now_us: int) -> np.ndarray:
        """Close finished buckets, forecast, and return ALLOCATION records for the services
        whose allocation passed hysteresis (the caller publishes them, then the TIER,
        PREWARM and PREFETCH records of ``take_outputs``)."""
        svcs, m, p = self.services, self.cfg.model, self.cfg.policy
        n = svcs.rows
        self._outputs = {}
        self._drop_expired_campaigns(now_us)
        hour = now_us // hw_kernels.HOUR_US
        if hour > self._users_closed_hour:  # silent users' hours close as zero, hourly
            hw_kernels.user_rate_close(now_us, self.users.rate, *USER_RATE)
            self._users_closed_hour = hour
        self._close_segment_steps(now_us)
        until = now_us // self.bucket_us - m.late_buckets - 1
        if n == 0:
            return np.zeros(0, wire.ALLOCATION)
        rates.close_all(n, until, svcs.ring_ids, svcs.ring_counts, svcs.closed, svcs.level,
                        svcs.trend, svcs.n_obs, svcs.hist, m.alpha, m.beta, m.phi, m.bucket_s)
        self._feed_models(n)
        self._learn_capacity(n)
        if now_us - self._needs_at >= p.needs_interval_s * 1e6 or self._needs_at < 0:
            self._update_lifts(now_us)
            if self.needs_inline:
                self._needs_ready = self.compute_needs(now_us)
        if self._needs_ready is not None:
            ready_needs, self._needs_ready = self._needs_ready, None
            self._apply_needs(ready_needs)
        # how far ahead: each service's learned start-up time, else the configured lead
        lead_s = np.maximum(np.where(svcs.startup_s[:n] > 0, svcs.startup_s[:n],
                                     p.lead_time_s), m.bucket_s)
        steps = np.maximum(1, np.round(lead_s / m.bucket_s)).astype(np.int64)
        base, widths = self._forecast_ahead(n, steps)
        # campaigns starting within the lead time count now: capacity is ready at start
        camp = self.campaign_multipliers(now_us, now_us + (lead_s * 1e6).astype(np.int64))
        ctx_users = np.zeros(n)
        k = min(n, len(self._svc_ctx_rps))
        ctx_users[:k] = self._svc_ctx_rps[:k]
        # a campaign multiplies the forecast from before it: once its traffic arrives the
        # forecast holds it already (no double count), and the larger of the two serves
        active = camp > 1.0
        start = active & (svcs.camp_base[:n] <= 0)
        svcs.camp_base[:n][start] = np.maximum(base[start], 1e-9)
        svcs.camp_base[:n][~active] = 0.0
        with_camp = np.where(active, np.maximum(base, svcs.camp_base[:n] * camp), base)
        anomalous = self.models["anomaly"].predict({"slots": np.arange(n)})["flag"]
        amult = np.where(anomalous, p.anomaly_multiplier, 1.0)
        predicted = np.maximum(0.0, with_camp + ctx_users) * amult
        context_adj = predicted / amult - base
        svcs.err_fc[:n] = with_camp + ctx_users  # scored against the next closed buckets
        # the forecast runs at the target utilisation; each tier's quantile of demand must
        # still fit below saturation (per_replica is at the target utilisation)
        fc = (with_camp + ctx_users)[:, None]
        # the same quantile read straight from the recent demand bounds it: where the
        # forecast is noisier than the demand (a few requests per bucket) its errors
        # overstate the spread; an announced campaign lifts demand past its recent history
        seen = np.empty((n, 3))
        residuals.quantiles(svcs.demand_hist, n, self.bucket_quantiles(), MIN_ERRORS,
                            m.bucket_s, seen)
        top = np.where(np.isnan(seen) | active[:, None], fc + widths,
                       np.minimum(fc + widths, seen))
        rps_q = np.maximum(fc, top * p.target_utilisation).clip(0) * amult[:, None]
        counts = svcs.tier_counts[:n]
        tot = counts.sum(1, keepdims=True)
        share = np.where(tot > 0, counts / np.where(tot > 0, tot, 1.0), [[1.0, 0.0, 0.0]])
        learned = svcs.learned_rps_per_replica[:n]
        per_replica = np.where(learned > 0, learned, p.rps_per_replica)
        headroom = np.array([p.headroom, p.headroom + p.silver_headroom,
                             p.headroom + p.gold_headroom])
        want, tier_reps, need = policy.tier_split(rps_q, share, per_replica, headroom,
                                                  p.min_replicas, p.max_replicas)
        ready = svcs.n_obs[:n] > 0
        # panic: observed load far above the forecast: react to what is observed
        pub = svcs.published[:n]
        last = svcs.hist[np.arange(n), (svcs.n_obs[:n] - 1) % svcs.hist.shape[1]]
        # the open bucket counts once it spans HPA's sync period (or the whole bucket)
        b = now_us // self.bucket_us
        elapsed_s = (now_us - b * self.bucket_us) / 1e6
        # a surge is a count beyond counting noise: a window of w seconds holds about
        # Poisson(predicted x w) requests, so a stray request on a quiet service is no surge
        lam = np.maximum(predicted, 0.0) * m.bucket_s
        surge = last * m.bucket_s - lam > p.panic_z * np.sqrt(lam + 1.0)
        if elapsed_s >= min(PANIC_MIN_WINDOW_S, m.bucket_s):
            k = b % svcs.ring_ids.shape[1]
            so_far = np.where(svcs.ring_ids[:n, k] == b, svcs.ring_counts[:n, k], 0.0)
            last = np.maximum(last, so_far / elapsed_s)
            lam = np.maximum(predicted, 0.0) * elapsed_s
            surge |= so_far - lam > p.panic_z * np.sqrt(lam + 1.0)
        observed = np.where(ready, last, 0.0)
        react = policy.replicas_for(observed, per_replica, p.headroom, p.min_replicas,
                                    p.max_replicas)
        panic = ready & (pub >= 0) & (observed > p.panic_factor * np.maximum(predicted, 1e-9)) \
            & (react > pub) & surge
        svcs.panic_until_us[:n][panic] = now_us + int(p.panic_window_s * 1e6)
        in_panic = svcs.panic_until_us[:n] > now_us
        want = np.where(panic, np.maximum(want, react), want)
        max_up, min_down = policy.rate_limits(
            pub, svcs.last_up_us[:n], svcs.last_down_us[:n], now_us,
            int(p.scale_up_period_s * 1e6), int(p.scale_down_period_s * 1e6),
            p.scale_down_fraction, p.max_replicas)
        # a panic or an announced campaign is not noise: no rate limit on the way up
        max_up = np.where(panic | (camp > 1.0), p.max_replicas, max_up)
        min_down = np.where(in_panic, pub, min_down)
        decision = policy.decide(
            with_camp, np.ones(n), per_replica, p.headroom, p.min_replicas, p.max_replicas,
            pub, svcs.down_ring[:n], svcs.down_slot[:n], now_us,
            int(p.scale_down_window_s * 1e6), ready, want=want, max_up=max_up,
            min_down=min_down, tolerance=p.tolerance,
            need=np.where(panic, react.astype(float), need))
        svcs.desired[:n] = decision.desired
        changed = np.flatnonzero(decision.publish)
        out = np.zeros(len(changed), wire.ALLOCATION)
        if len(changed):
            up = decision.desired[changed] > np.maximum(pub[changed], 0)
            svcs.last_up_us[changed[up]] = now_us
            svcs.last_down_us[changed[~up]] = now_us
            # start-up time is learned from orders that need replicas not yet running
            grow = changed[up & (decision.desired[changed] > svcs.observed_replicas[changed])]
            svcs.order_us[grow] = now_us
            svcs.order_target[grow] = decision.desired[grow]
            out["ts_us"] = now_us
            out["service"] = svcs.slots.ids[changed]
            out["desired_replicas"] = decision.desired[changed]
            out["previous_replicas"] = np.maximum(pub[changed], 0)
            out["observed_replicas"] = svcs.observed_replicas[changed]
            out["base_forecast"] = base[changed]
            out["context_adjustment"] = context_adj[changed]
            out["predicted_rps"] = predicted[changed]
            out["rps_per_replica"] = per_replica[changed]
            out["anomaly_multiplier"] = amult[changed]
            out["lead_time_s"] = steps[changed] * m.bucket_s
            out["tier"] = np.where(share[changed, 2] > 0, 2,
                                   np.where(share[changed, 1] > 0, 1, 0))
            reasons = decision.reasons[changed]
            u32 = np.uint32
            reasons |= np.where(learned[changed] > 0, 0, wire.Reason.DEFAULT_CAPACITY).astype(u32)
            reasons |= np.where(camp[changed] != 1.0, wire.Reason.CAMPAIGN, 0).astype(u32)
            reasons |= np.where(anomalous[changed], wire.Reason.ANOMALY, 0).astype(u32)
            reasons |= np.where(panic[changed], wire.Reason.PANIC, 0).astype(u32)
            w = self.model_weights(changed.astype(np.int64))
            lead_model = np.array(MODEL_REASONS, u32)[w.argmax(1)]
            reasons |= np.where(w.max(1) > 0, lead_model, 0).astype(u32)
            out["reasons"] = reasons
            pub[changed] = decision.desired[changed]
        self._tiers_out(n, now_us, tier_reps, ready, changed, headroom)
        self._prewarm_out(n, now_us, base, per_replica, steps)
        return out

    def _forecast_ahead(self, n: int, steps: np.ndarray):
        """Per service: the request rate forecast over the next ``steps`` buckets (the
        highest point of the smoother's path, averaged with the ensemble's seasonal
        forecast once its members have one), and how far each tier's quantile of demand
        lies above it.

        An allocation holds for the stabilisation window, so a tier's quantile q is of the
        window's peak bucket: the bucket quantile q ** (bucket / window). It is read from
        the service's own forecast errors once ``MIN_ERRORS`` buckets were scored, before
        that from online ARIMA's (Gaussian) interval."""
        svcs, m, p = self.services, self.cfg.model, self.cfg.policy
        phi = m.phi
        # damped trend: the path is monotone, so its maximum is at step 1 or at the lead
        ps1 = phi
        psl = phi * (1 - phi ** steps) / (1 - phi) if phi < 1 else steps.astype(float)
        lv, tr = svcs.level[:n], svcs.trend[:n]
        base = np.maximum(lv + ps1 * tr, lv + psl * tr).clip(0)
        per = self.per_seasonal
        hsteps = np.maximum(1, -(-steps // per))
        got = self.combined_forecast(np.arange(n))[:, :max(1, min(H5, int(hsteps.max())))]
        mask = np.arange(got.shape[1])[None, :] < hsteps[:, None]
        seasonal = np.where(mask, np.nan_to_num(got, nan=-np.inf), -np.inf).max(1)
        # an equal-weight combination: the smoother follows the last minutes, the ensemble
        # the seasons (once its members were judged for an hour); either one alone, or the
        # larger, did worse in backtests
        judged = self.models["ensemble"].scored(np.arange(n)) >= ENSEMBLE_MIN_SCORED
        base = np.where(np.isfinite(seasonal) & judged, 0.5 * (base + seasonal), base)
        qs = self.bucket_quantiles()
        widths = np.empty((n, 3))
        residuals.quantiles(svcs.err_hist, n, qs, MIN_ERRORS, m.bucket_s, widths)
        cold = np.isnan(widths).any(1)
        if cold.any():
            h = int(steps.max())
            q = self.models["arima"].predict({"h": h, "slots": np.arange(n)})
            at = (np.arange(n), steps - 1)
            sd = np.nan_to_num((q["p90"][at] - q["mean"][at]) / Z90, nan=0.0).clip(0)
            z = np.array([_Z(x) for x in qs])
            widths[cold] = (sd[cold, None] * z[None, :]).clip(0)
        return base, widths

    def bucket_quantiles(self) -> np.ndarray:
        """Per tier (bronze, silver, gold): the quantile of one bucket's demand that makes
        the tier's quantile of the stabilisation window's peak."""
        m, p = self.cfg.model, self.cfg.policy
        per = m.bucket_s / max(m.bucket_s, p.scale_down_window_s)
        return np.array([p.bronze_quantile, p.silver_quantile, p.gold_quantile]) ** per

    def _tiers_out(self, n, now_us, tier_reps, ready, changed, headroom) -> None:
        """TIER records for services whose tier split changed (or whose allocation was
        published)."""
        svcs, p = self.services, self.cfg.policy
        diff = ready & ((svcs.tier_pub[:n] != tier_reps).any(1))
        diff[changed] = ready[changed]
        idx = np.flatnonzero(diff)
        if len(idx) == 0:
            return
        recs = np.zeros(3 * len(idx), wire.TIER)
        recs["ts_us"] = now_us
        recs["service"] = np.repeat(svcs.slots.ids[idx], 3)
        recs["tier"] = np.tile(np.arange(3), len(idx))
        reps = tier_reps[idx].ravel()
        recs["replicas"] = reps
        recs["maxconn"] = reps * p.maxconn_per_replica
        recs["quantile"] = np.tile([p.bronze_quantile, p.silver_quantile, p.gold_quantile],
                                   len(idx))
        recs["headroom"] = np.tile(headroom, len(idx))
        svcs.tier_pub[idx] = tier_reps[idx]
        for j, sid in enumerate(svcs.slots.ids[idx].tolist()):
            self.published_tiers[int(sid)] = recs[3 * j:3 * j + 3]
        self._outputs["tier"] = recs

    def _prewarm_out(self, n, now_us, base, per_replica, steps) -> None:
        """PREWARM records: idle services whose traffic is expected back (idle-time
        histogram), and services whose forecast peaks within the hour."""
        svcs, p, m = self.services, self.cfg.policy, self.cfg.model
        cand, at, conf = policy.prewarm_idle(
            svcs.last_req_us[:n], svcs.idle_hist[:n], now_us,
            int(p.prewarm_min_idle_s * 1e6), p.prewarm_quantile, 3)
        cand &= svcs.prewarm_for_us[:n] != svcs.last_req_us[:n]  # once per idle period
        idle = np.flatnonzero(cand)
        recs = []
        if len(idle):  # one warm replica for the first requests (cold-start avoidance)
            r = np.zeros(len(idle), wire.PREWARM)
            r["ts_us"], r["at_us"] = now_us, at[idle]
            r["service"] = svcs.slots.ids[idle]
            r["replicas"] = max(1, p.min_replicas)
            r["reason"] = wire.PrewarmReason.IDLE_RETURN
            r["confidence"] = conf[idle]
            svcs.prewarm_for_us[idle] = svcs.last_req_us[idle]
            recs.append(r)
        # off-peak warming: Holt-Winters sees a peak within the hour
        per = self.per_seasonal
        hor = max(1, int(round(3600 / m.seasonal_bucket_s)))
        f = self.models["holt_winters"].predict({"h": hor, "slots": np.arange(n)})["mean"]
        f = np.nan_to_num(f, nan=0.0)
        peak = f.max(1)
        when = f.argmax(1)
        peak_reps = policy.replicas_for(peak, per_replica, p.headroom, p.min_replicas,
                                        p.max_replicas)
        at_peak = (now_us + (when + 1) * int(m.seasonal_bucket_s * 1e6)
                   - steps * self.bucket_us).astype(np.int64)
        slot_at = at_peak // int(m.seasonal_bucket_s * 1e6)
        warm = (peak > p.peak_warm_ratio * np.maximum(base, 1e-9)) \
            & (peak_reps > np.maximum(svcs.published[:n], 0)) \
            & (svcs.peak_warm_us[:n] != slot_at) & (per > 0)
        pk = np.flatnonzero(warm)
        if len(pk):
            r = np.zeros(len(pk), wire.PREWARM)
            r["ts_us"], r["at_us"] = now_us, np.maximum(at_peak[pk], now_us)
            r["service"] = svcs.slots.ids[pk]
            r["replicas"] = peak_reps[pk]
            r["reason"] = wire.PrewarmReason.PEAK
            r["confidence"] = 0.5
            svcs.peak_warm_us[pk] = slot_at[pk]
            recs.append(r)
        if recs:
            out = np.concatenate(recs)
            for rec in out:
                self.published_prewarm[int(rec["service"])] = rec.copy()
            self._outputs["prewarm"] = out

    def _update_lifts(self, now_us: int) -> None:
        """Geography and device rates (fast and slow) from the counts since the last call,
        and their lifts (``needs.context_lift``)."""
        dt = self.cfg.policy.needs_interval_s if self._needs_at < 0 else max(
            1e-3, (now_us - self._needs_at) / 1e6)
        self._needs_at = now_us
        lifts = {}
        for key, counts in (("geo", self.geo_count), ("device", self.device_count)):
            r = self._ctx_rates[key]
            seen = np.flatnonzero((counts > 0) | (r[1] > 0))  # few of the 65,536 ids
            rate = counts[seen] / dt
            r[0, seen] += min(1.0, dt / 300.0) * (rate - r[0, seen])
            r[1, seen] += min(1.0, dt / 86400.0) * (rate - r[1, seen])
            counts[seen] = 0.0
            lift = np.ones(len(counts))
            lift[seen] = needs.context_lift(r[0, seen], r[1, seen], min_slow=0.01)
            lifts[key] = lift
        self._lifts = lifts

    def compute_needs(self, now_us: int) -> dict | None:
        """The needs pass: ``needs.predict_needs`` for every user, routed to services and
        resources through the navigation model. Heavy (about 0.5 s at a million users):
        the daemon runs it in its worker thread and hands the result to ``offer_needs``;
        it only reads engine state. None without users or the navigation model."""
        p, users = self.cfg.policy, self.users
        live = np.flatnonzero(users.slots.ids[:users.rows] != EMPTY)
        if len(live) == 0 or "markov" not in self.models:
            return None
        got = needs.predict_needs(live, users.rate, users.geo, users.device, users.segment,
                                  now_us, p.needs_interval_s, self._lifts["geo"],
                                  self._lifts["device"], self._segment_multipliers(now_us),
                                  p.anomaly_multiplier, USER_RATE[3])
        act = got["needs"] > 1e-3  # only users expected to send something take part
        ids = users.slots.ids[live[act]]
        mk = self.models["markov"]
        with self.nav_lock:
            with_ctx = mk.expected_requests(ids, got["needs"][act], now_us)
            plain = mk.expected_requests(ids, got["base"][act], now_us)
            popular = mk.popular(now_us)
        svc = np.union1d(with_ctx["service"], plain["service"])
        delta = np.zeros(len(svc))
        np.add.at(delta, np.searchsorted(svc, with_ctx["service"]), with_ctx["service_expected"])
        np.add.at(delta, np.searchsorted(svc, plain["service"]), -plain["service_expected"])
        return {"now_us": now_us, "service": svc, "ctx_rps": delta / p.needs_interval_s,
                "expected": with_ctx, "popular": popular}

    def offer_needs(self, result: dict | None) -> None:
        """Hand a needs pass to the next tick (callable from another thread)."""
        self._needs_ready = result

    def _apply_needs(self, result: dict | None) -> None:
        self._svc_ctx_rps = np.zeros(self.services.rows)
        if result is None:
            return
        slots = self.services.slots.find(result["service"].astype(np.uint64))
        ok = (slots >= 0) & (slots < len(self._svc_ctx_rps))
        self._svc_ctx_rps[slots[ok]] = result["ctx_rps"][ok]
        self._prefetch_out(result["now_us"], result["expected"], result.get("popular"))

    def _prefetch_out(self, now_us: int, exp: dict, popular: dict | None = None) -> None:
        """Per service, the ``prefetch_k`` resources with the most expected requests in
        the next interval from the navigation model; places it leaves go to the service's
        most requested resources of the last hours (expected hits: their share of the
        service's forecast requests). Published when a list changed by a fifth or more."""
        p = self.cfg.policy
        k = p.prefetch_k
        svc = exp["resource_service"]
        ok = svc != EMPTY
        res, e, svc = exp["resource"][ok], exp["expected"][ok], svc[ok]
        src = np.zeros(len(res), np.int8)  # 0: navigation model, 1: popularity
        if popular is not None and len(popular["resource"]):
            pr, ps, w = popular["resource"], popular["service"], popular["weight"]
            fresh = ~np.isin(pr, res)
            pr, ps, w = pr[fresh], ps[fresh], w[fresh]
            us, inv = np.unique(ps, return_inverse=True)
            share = w / np.bincount(inv, weights=w)[inv]
            svcs = self.services
            slot = svcs.slots.find(us.astype(np.uint64))
            at = np.maximum(slot, 0)  # the service's rate now, or its forecast if higher
            rate = np.where(slot >= 0, np.maximum(svcs.level[at], svcs.err_fc[at]), 0.0)
            res = np.concatenate([res, pr])
            e = np.concatenate([e, share * rate[inv] * p.needs_interval_s])
            svc = np.concatenate([svc, ps])
            src = np.concatenate([src, np.ones(len(pr), np.int8)])
        some = e > 0  # a service without a forecast yet gets no list
        res, e, svc, src = res[some], e[some], svc[some], src[some]
        if len(res) == 0:
            return
        o = np.lexsort((res, -e, src, svc))
        res, e, svc = res[o], e[o], svc[o]
        starts = np.flatnonzero(np.r_[True, svc[1:] != svc[:-1]])
        lens = np.diff(np.r_[starts, len(svc)])
        rank = np.arange(len(svc)) - np.repeat(starts, lens)
        tot = np.repeat(np.add.reduceat(e, starts), lens)
        keep = rank < k
        recs = np.zeros(int(keep.sum()), wire.PREFETCH)
        recs["ts_us"] = now_us
        recs["resource"], recs["service"] = res[keep], svc[keep]
        recs["rank"] = rank[keep]
        recs["probability"] = (e / np.where(tot > 0, tot, 1.0))[keep]
        recs["expected_hits"] = e[keep]
        out = []
        for sid in np.unique(recs["service"]).tolist():
            mine = recs[recs["service"] == sid]
            old = self.published_prefetch.get(sid)
            if old is not None:
                same = len(np.intersect1d(old["resource"], mine["resource"]))
                if same >= 0.8 * max(len(old), len(mine)):
                    continue
            self.published_prefetch[sid] = mine
            out.append(mine)
        if out:
            self._outputs["prefetch"] = np.concatenate(out)

    def _segment_multipliers(self, now_us: int) -> dict[int, float]:
        """Multipliers of campaigns active now for one segment (all services)."""
        c = self.campaigns
        live = c[(c["start_us"] <= now_us) & (now_us < c["end_us"]) & (c["segment"] != wire.ALL)
                 & (c["service"] == wire.ALL)]
        out: dict[int, float] = {}
        for rec in live:
            g = int(rec["segment"])
            out[g] = max(out.get(g, 1.0), float(rec["multiplier"]))
        return out

    def predict_user(self, key: str, now_us: int) -> dict | None:
        """``predictResourceNeeds`` for one user (by id or registered name) over the next
        ``policy.needs_interval_s``, with where the requests are expected to go."""
        users, p = self.users, self.cfg.policy
        uid = self._user_id(key)
        slot = users.slots.find_one(uid) if uid is not None else -1
        if slot < 0:
            return None
        got = needs.predict_needs(np.array([slot]), users.rate, users.geo, users.device,
                                  users.segment, now_us, p.needs_interval_s,
                                  self._lifts["geo"], self._lifts["device"],
                                  self._segment_multipliers(now_us), p.anomaly_multiplier,
                                  USER_RATE[3])
        out = {"id": str(uid), "name": self.names[wire.NameKind.USER].get(uid),
               "interval_s": p.needs_interval_s,
               "segment": int(users.segment[slot]),
               "tier": wire.Tier(int(users.tier[slot])).name.lower(),
               **{k: round(float(v[0]), 6) for k, v in got.items()},
               "next_resources": self.next_resources(uid), "services": {}}
        if "markov" in self.models and got["needs"][0] > 0:
            with self.nav_lock:
                exp = self.models["markov"].expected_requests(
                    np.array([uid], np.uint64), got["needs"], now_us)
            out["services"] = {self.service_name(int(sv)): round(float(x), 6)
                               for sv, x in zip(exp["service"], exp["service_expected"])}
        return out

    def _user_id(self, key: str) -> int | None:
        uid = self._user_by_name.get(key)
        if uid is None and key.isascii() and key.isdigit() and int(key) < wire.NO_ID:
            uid = int(key)
        return uid

    def prefetch_list(self, slot: int) -> list[dict]:
        """The service's last published prefetch list."""
        recs = self.published_prefetch.get(int(self.services.slots.ids[slot]))
        if recs is None:
            return []
        names = self.names[wire.NameKind.RESOURCE]
        return [{"rank": int(r["rank"]), "resource": names.get(int(r["resource"]),
                                                                str(int(r["resource"]))),
                 "id": str(int(r["resource"])), "probability": round(float(r["probability"]), 4),
                 "expected_hits": round(float(r["expected_hits"]), 3)} for r in recs]

    def take_outputs(self) -> dict[str, np.ndarray]:
        """The TIER, PREWARM and PREFETCH records of the last tick, by kind ("tier",
        "prewarm", "prefetch"; absent when none)."""
        out, self._outputs = self._outputs, {}
        return out

    def _feed_models(self, n: int) -> None:
        """Hand the buckets closed since the last tick to the per-service models: every
        bucket to ARIMA and the anomaly detector, averages of ``seasonal_bucket_s`` to
        Holt-Winters."""
        svcs, models = self.services, self.models
        slots, values = rates.closed_since(svcs.fed[:n], svcs.n_obs[:n], svcs.hist)
        svcs.fed[:n] = svcs.n_obs[:n]
        if len(slots) == 0:
            return
        decay = 0.5 ** (self.cfg.model.bucket_s / self.cfg.policy.error_halflife_s)
        residuals.learn(slots, values, svcs.err_fc, svcs.err_hist, decay,
                        self.cfg.model.bucket_s)
        residuals.learn(slots, values, np.zeros(n), svcs.demand_hist, decay,
                        self.cfg.model.bucket_s)
        batch = {"slot": slots, "value": values}
        models["arima"].learn(batch)
        models["anomaly"].learn(batch)
        hs, hv = [], []
        per = self.per_seasonal
        for s, v in zip(slots.tolist(), values.tolist()):
            svcs.agg_sum[s] += v
            svcs.agg_n[s] += 1
            if svcs.agg_n[s] == per:
                hs.append(s)
                hv.append(svcs.agg_sum[s] / per)
                svcs.agg_sum[s] = 0.0
                svcs.agg_n[s] = 0
        if hs:
            hs, hv = np.array(hs, np.int64), np.array(hv)
            models["holt_winters"].learn({"slot": hs, "value": hv})
            self._select_models(hs, hv)

    def _close_segment_steps(self, now_us: int) -> None:
        """Feed each finished seasonal step's request rate of every segment to the segment
        models (empty steps in between as zero, at most a day of them)."""
        step_us = int(self.cfg.model.seasonal_bucket_s * 1e6)
        step = now_us // step_us
        if self._seg_step < 0:
            self._seg_step = step
        if step <= self._seg_step:
            return
        segs = self.segments
        k = segs.rows
        gap = int(min(step - self._seg_step, 86400 * 1e6 // step_us))
        if k:
            rates = np.zeros((gap, k))
            rates[0] = segs.step_count[:k] / self.cfg.model.seasonal_bucket_s
            batch = {"slot": np.tile(np.arange(k, dtype=np.int64), gap),
                     "value": rates.ravel()}
            for name in ("segment_holt_winters", "segment_arima", "segment_anomaly"):
                self.models[name].learn(batch)
            if k > self.seg_hist5.n_series:
                self.seg_hist5.grow(max(k, 2 * self.seg_hist5.n_series))
            self.seg_hist5.push_batch(batch["slot"], batch["value"])
            segs.step_count[:k] = 0.0
        self._seg_step = step

    def segment_view(self, key: str) -> dict | None:
        """One segment's aggregates and its series' forecasts (next hour) and anomaly
        score; None if unknown."""
        if not (key.isascii() and key.isdigit()) or int(key) >= 2 ** 32:
            return None
        slot = self.segments.slots.find_one(int(key))
        if slot < 0:
            return None
        segs, q = self.segments, np.array([slot])
        hor = max(1, int(round(3600 / self.cfg.model.seasonal_bucket_s)))
        f = self.models["segment_holt_winters"].predict({"h": hor, "slots": q})
        a = self.models["segment_anomaly"].predict({"slots": q})
        fin = lambda xs: [None if not np.isfinite(x) else max(0.0, float(x)) for x in xs]
        models = {"holt_winters": {k: fin(f[k][0]) for k in ("mean", "p50", "p90", "p99")}}
        a_fc = self.models["segment_arima"].predict({"h": hor, "slots": q})
        models["arima"] = {k: fin(a_fc[k][0]) for k in ("mean", "p50", "p90", "p99")}
        got = self.segment_prophet
        if got is not None and int(key) in got:
            models["prophet"] = {k: fin(v) for k, v in got[int(key)].items()}
        return {"id": key, "name": self.names[wire.NameKind.SEGMENT].get(int(key)),
                "requests_evicted_users": int(segs.requests[slot]),
                "users_evicted": int(segs.users_evicted[slot]),
                "hourly_requests_utc": segs.hourly[slot].astype(float).tolist(),
                "step_s": self.cfg.model.seasonal_bucket_s,
                "forecast_rps": models["holt_winters"], "models": models,
                "anomaly_score": float(a["score"][0]), "anomalous": bool(a["flag"][0])}

    # ---- model selection on the seasonal (5-minute) series -------------------------
    def _select_models(self, slots: np.ndarray, values: np.ndarray) -> None:
        """A seasonal step closed for ``slots``: score each member's forecast of it (the
        ensemble's rolling errors), keep the history for the LSTM, and make the members'
        next forecasts."""
        need = int(slots.max()) + 1
        if need > self.hist5.n_series:
            self.hist5.grow(max(need, 2 * self.hist5.n_series))
        if need > len(self.member_fc):
            fc = np.full((max(need, 2 * len(self.member_fc)),) + self.member_fc.shape[1:],
                         np.nan)
            fc[:len(self.member_fc)] = self.member_fc
            self.member_fc = fc
        err = np.abs(values[:, None] - self.member_fc[slots, :, 0])
        scored = np.isfinite(err).any(1)
        if scored.any():
            self.models["ensemble"].learn({"slot": slots[scored], "error": err[scored]})
        self.hist5.push_batch(slots, values)
        per = self.per_seasonal
        fc = np.full((len(slots), len(MEMBERS), H5), np.nan)
        fc[:, 0] = self.models["holt_winters"].predict({"h": H5, "slots": slots})["mean"]
        a = self.models["arima"].predict({"h": H5 * per, "slots": slots})["mean"]
        fc[:, 1] = a.reshape(len(slots), H5, per).mean(2)
        counts = np.array([self.hist5.count(int(x)) for x in slots.tolist()])
        for m, got in ((2, self._lstm), (3, self._prophet)):
            if got is not None:
                fc[:, m] = _aligned(got, self.services.slots.ids[slots], counts)
        self.member_fc[slots] = fc
        self._combined = None

    def model_weights(self, slots: np.ndarray) -> np.ndarray:
        """(n, members) ensemble weights of each service's forecasters (``MEMBERS``)."""
        f = self.member_fc[np.minimum(slots, len(self.member_fc) - 1)]
        f = np.where((slots < len(self.member_fc))[:, None, None], f, np.nan)
        return self.models["ensemble"].predict({"slots": slots, "forecasts": f[:, :, :1]})[
            "weights"]

    def combined_forecast(self, slots: np.ndarray) -> np.ndarray:
        """(n, H5) the ensemble's seasonal-step forecasts made at each service's last
        seasonal close (NaN where no member has one). They change only when a seasonal
        step closes, so they are kept until then."""
        if self._combined is None:
            self._combined = self.models["ensemble"].predict(
                {"slots": np.arange(len(self.member_fc)), "forecasts": self.member_fc})["mean"]
        out = np.full((len(slots), H5), np.nan)
        ok = slots < len(self._combined)
        out[ok] = self._combined[slots[ok]]
        return out

    def segment_windows(self, width: int):
        """(segment ids, history float[n, width]) of every segment with history: what
        the Prophet worker refits."""
        k = min(self.segments.rows, self.seg_hist5.n_series)
        slots = np.array([s for s in range(k) if self.seg_hist5.count(s) > 0], np.int64)
        if len(slots) == 0:
            return None
        out = np.empty((len(slots), width))
        self.seg_hist5.window_into(slots, width, out)
        return self.segments.slots.ids[slots].copy(), out

    def lstm_windows(self, width: int):
        """What the LSTM worker reads: (keys, history float[n, width], steps): keys holds
        each service's id and its seasonal history count (to align the answers), steps
        the seasonal step index (Unix time / seasonal_bucket_s) of each last value."""
        n = self.services.rows
        slots = np.flatnonzero(np.array([self.hist5.count(s) for s in range(
            min(n, self.hist5.n_series))]) > 0).astype(np.int64)
        if len(slots) == 0:
            return None
        out = np.empty((len(slots), width))
        self.hist5.window_into(slots, width, out)
        counts = np.array([self.hist5.count(int(x)) for x in slots.tolist()])
        end_s = (self.services.closed[slots] + 1) * self.cfg.model.bucket_s
        steps = (end_s // self.cfg.model.seasonal_bucket_s).astype(np.int64) - 1
        keys = np.stack([self.services.slots.ids[slots].astype(np.int64), counts], 1)
        return keys, out, steps

    def offer_forecasts(self, member: str, result: dict | None) -> None:
        """Forecasts of a learned member ("lstm" or "prophet") from a worker: ``keys``
        (n, 2) = (service id, seasonal count it was made at), ``p50`` (n, >= 1)."""
        if member == "lstm":
            self._lstm = result
        else:
            self._prophet = result

    def next_resources(self, user_id: int, k: int = 3) -> list[dict]:
        """The user's most likely next resources, with probabilities (empty without the
        navigation model)."""
        if "markov" not in self.models:
            return []
        with self.nav_lock:
            got = self.models["markov"].predict({"users": np.array([user_id], np.uint64),
                                                 "k": k})
        names = self.names[wire.NameKind.RESOURCE]
        return [{"resource": names.get(int(r), str(int(r))), "id": str(int(r)),
                 "probability": round(float(p), 4)}
                for r, p in zip(got["resource"][0], got["prob"][0]) if r != EMPTY]

    def _user_forecast(self, slot: int, now_us: int) -> list[float]:
        """Expected requests of one user in the hour now and the 23 after it."""
        out = np.zeros((1, 24), np.float32)
        hw_kernels.user_rate_forecast(np.array([slot], np.int64), now_us, self.users.rate,
                                      USER_RATE[3], out)
        return [round(float(x), 3) for x in out[0]]

    def user_profile(self, key: str, now_us: int) -> dict | None:
        """One user's state, by numeric id or registered name; None if unknown."""
        users = self.users
        uid = self._user_id(key)
        slot = users.slots.find_one(uid) if uid is not None else -1
        if slot < 0:
            return None
        hourly = users.hourly[slot].astype(float)
        recent = (users.recent.latest(slot, users.recent.capacity)
                  if users.recent is not None else np.zeros(0))
        span = float(recent[-1] - recent[0]) if len(recent) > 1 else 0.0
        return {
            "id": str(uid), "name": self.names[wire.NameKind.USER].get(uid),
            "requests": int(hourly.sum()),
            "last_seen_us": int(users.last_seen_us[slot]),
            "segment": int(users.segment[slot]),
            "tier": wire.Tier(int(users.tier[slot])).name.lower(),
            "hourly_requests_utc": hourly.tolist(),
            "peak_hours_utc": [int(h) for h in np.argsort(-hourly, kind="stable")[:3]
                               if hourly[h] > 0],
            "forecast_requests_next_24h": self._user_forecast(slot, now_us),
            "next_resources": self.next_resources(uid),
            "surges": int(users.rate[slot, hw_kernels.R_SURGES]),
            "surging": bool(users.rate[slot, hw_kernels.R_SURGE_HOUR]
                            == now_us // hw_kernels.HOUR_US),
            "recent_request_times_s": recent.tolist(),
            "recent_rate_per_min": (len(recent) - 1) / span * 60 if span > 0 else None,
        }

    def service_forecast(self, slot: int, horizon: int) -> dict:
        """Forecasts of one service's request rate over the next ``horizon`` buckets, by
        model, each in its own step width (``bucket_s``): mean and p50/p90/p99 per step
        (the smoother has no quantiles)."""
        s, m = self.services, self.cfg.model
        holt = np.empty(1)
        steps = []
        for h in range(1, horizon + 1):
            rates.forecast(s.level[slot:slot + 1], s.trend[slot:slot + 1], m.phi, h, holt)
            steps.append(float(holt[0]))
        out = {"holt": {"bucket_s": m.bucket_s, "mean": steps}}
        q1 = np.array([slot])
        comb = self.combined_forecast(q1)[0][:max(1, -(-horizon // self.per_seasonal))]
        out["ensemble"] = {"bucket_s": m.seasonal_bucket_s,
                           "weights": dict(zip(MEMBERS, self.model_weights(q1)[0].round(4)
                                               .tolist())),
                           "mean": [None if not np.isfinite(x) else max(0.0, float(x))
                                    for x in comb]}
        q = np.array([slot])
        widths = {"arima": (m.bucket_s, horizon), "holt_winters": (
            m.seasonal_bucket_s, max(1, -(-horizon // self.per_seasonal)))}
        for name, (width, h) in widths.items():
            got = self.models[name].predict({"h": h, "slots": q})
            out[name] = {"bucket_s": width, **{
                k: [None if not np.isfinite(x) else max(0.0, float(x)) for x in got[k][0]]
                for k in ("mean", "p50", "p90", "p99")}}
        return out

    def campaign_multipliers(self, now_us: int, until_us=None) -> np.ndarray:
        """Per service slot, the largest multiplier among campaigns active at some time in
        [``now_us``, ``until_us``] (a time, or one per service) that name the service or
        all services (1.0 when none). Campaigns for one segment count through the users
        (``needs``), not here."""
        n = self.services.rows
        mult = np.ones(n)
        c = self.campaigns
        if len(c) == 0 or n == 0:
            return mult
        until = np.broadcast_to(np.asarray(now_us if until_us is None else until_us,
                                           np.int64), (n,))
        live = c[(c["start_us"] <= until.max()) & (now_us < c["end_us"])
                 & (c["segment"] == wire.ALL)]
        for rec in live:
            on = until >= rec["start_us"]
            if rec["service"] == wire.ALL:
                mult = np.where(on, np.maximum(mult, rec["multiplier"]), mult)
            else:
                s = self.services.slots.find_one(int(rec["service"]))
                if s >= 0 and on[s]:
                    mult[s] = max(mult[s], float(rec["multiplier"]))
        return mult

    def _drop_expired_campaigns(self, now_us: int) -> None:
        if len(self.campaigns):
            self.campaigns = self.campaigns[self.campaigns["end_us"] > now_us]

    @classmethod
    def warm_up(cls, cfg, now_us: int) -> None:
        """Run every kernel once on a throwaway engine, so numba compiles (or loads from
        its cache) before the daemon serves, not on the first events."""
        e = cls(cfg)
        for mtype, dt in wire.DTYPES.items():
            if mtype not in wire.INPUT_TYPES:
                continue
            r = np.zeros(4, dt)
            if "ts_us" in dt.names:
                r["ts_us"] = now_us
            if mtype == wire.MsgType.CONTEXT:
                r["end_us"] = now_us + 1
                r["multiplier"] = 1.0
            if mtype == wire.MsgType.NAME:
                r = wire.make_names(wire.NameKind.SERVICE, [1, 2], ["a", "b"])
            wire.validate(mtype, r, now_us, 1, 1)
            e.apply(mtype, r, now_us)
        step = int(cfg.model.seasonal_bucket_s * 1e6)
        r = np.zeros(1, wire.REQUEST)
        for k in range(1, 4):  # enough closed buckets for every per-service model to learn
            r["ts_us"] = now_us + k * step
            e.apply(wire.MsgType.REQUEST, r, now_us + k * step)
            e.tick(now_us + (k + 1) * step)
        e.service_forecast(0, 2)
        if "markov" in e.models:
            e.learn_navigation()
            e.next_resources(0, 3)
            e.models["markov"].expected_requests()
        e.evict(now_us + 10 * step, 1)
        e.state()

    # ---- checkpoints --------------------------------------------------------------
    def state_parts(self, full: bool = False):
        """Yield (key, array copy) pieces of the state, user rows in chunks and only the
        chunks changed since the last call unless ``full``; then ("meta", dict)."""
        yield from self.users.parts("users", dirty_only=not full)
        yield from self.segments.parts("segments", dirty_only=False)
        yield from self.services.parts("services", dirty_only=False)
        yield "campaigns", self.campaigns.copy()
        for ring, key in ((self.hist5, "hist5"), (self.seg_hist5, "seg_hist5")):
            for k, v in ring.rows(0, ring.n_series).items():
                yield f"{key}.{k}", v
        if "markov" in self.models:  # what was accepted is in the state, queued or not
            while self.learn_navigation():
                pass
        for name, model in self.models.items():
            with self.nav_lock if name == "markov" else _NO_LOCK:
                st = model.state()
            for k, v in st.items():
                yield f"model.{name}.{k}", v
        pending = self.unsaved_names
        self.unsaved_names = []
        if full:  # one chunk with every name, replacing the earlier ones
            self.names_saved = 0
            pending = [wire.make_names(k, list(d), list(d.values()))
                       for k, d in self.names.items() if d]
        if pending:
            yield f"names.{self.names_saved:08d}", np.concatenate(pending)
            self.names_saved += 1
        yield "meta", {"accepted": {t.name: n for t, n in self.accepted.items()},
                       "late_dropped": self.late_dropped, "evicted": self.evicted,
                       "user_late": self.user_late, "user_surges": self.user_surges,
                       "nav_learned": self.nav_learned, "nav_skipped": self.nav_skipped,
                       "names_saved": self.names_saved}

    def state(self, full: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
        """``state_parts`` gathered at once: (meta, arrays)."""
        arrays = dict(self.state_parts(full=full))
        return arrays.pop("meta"), arrays

    def restore(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        """Load what ``state_parts`` produced (into a fresh engine)."""
        self._combined = None
        self.users.load("users", arrays)
        self.segments.load("segments", arrays)
        self.services.load("services", arrays)
        self.campaigns = arrays["campaigns"].astype(wire.CONTEXT)
        for ring, key in ((self.hist5, "hist5"), (self.seg_hist5, "seg_hist5")):
            if f"{key}.pos" in arrays and arrays[f"{key}.values"].shape[1:] == (HIST5,):
                rows = len(arrays[f"{key}.pos"])
                ring.grow(max(rows, ring.n_series))
                ring.set_rows(0, arrays[f"{key}.values"], arrays[f"{key}.pos"],
                              arrays[f"{key}.count"])
        for name, model in self.models.items():
            got = {k.rsplit(".", 1)[1]: v for k, v in arrays.items()
                   if k.startswith(f"model.{name}.")}
            if got:
                try:
                    if name in ("arima", "segment_arima"):
                        model.grow(len(got["n"]))
                    model.restore(got)
                except (ValueError, KeyError, BAEError):  # saved under other settings
                    pass
        self.accepted.update({wire.MsgType[k]: n for k, n in meta["accepted"].items()})
        self.late_dropped = meta["late_dropped"]
        self.user_late = meta.get("user_late", 0)
        self.user_surges = meta.get("user_surges", 0)
        self.nav_learned = meta.get("nav_learned", 0)
        self.nav_skipped = meta.get("nav_skipped", 0)
        self.evicted = meta.get("evicted", 0)
        self.names_saved = meta.get("names_saved", 0)
        for i in range(self.names_saved):
            self._names(arrays.get(f"names.{i:08d}", np.zeros(0, wire.NAME)))
        self.unsaved_names = []

    # ---- views --------------------------------------------------------------------
    def allocations(self, now_us: int) -> np.ndarray:
        """The last published allocation of every service (for snapshots)."""
        svcs = self.services
        n = svcs.rows
        pub = np.flatnonzero(svcs.published[:n] >= 0)
        out = np.zeros(len(pub), wire.ALLOCATION)
        out["ts_us"] = now_us
        out["service"] = svcs.slots.ids[pub]
        out["desired_replicas"] = svcs.published[pub]
        out["previous_replicas"] = svcs.published[pub]
        out["observed_replicas"] = svcs.observed_replicas[pub]
        out["base_forecast"] = svcs.level[pub]
        out["predicted_rps"] = svcs.level[pub]
        learned = svcs.learned_rps_per_replica[pub]
        out["rps_per_replica"] = np.where(learned > 0, learned, self.cfg.policy.rps_per_replica)
        out["anomaly_multiplier"] = 1.0
        return out

    def rate_history(self, slot: int) -> np.ndarray:
        """Closed bucket rates of one service, oldest first (at most ``model.history``)."""
        s = self.services
        n, h = int(s.n_obs[slot]), s.hist.shape[1]
        if n <= h:
            return s.hist[slot, :n].copy()
        return np.roll(s.hist[slot], -(n % h))

    def service_names(self) -> np.ndarray:
        """NAME records of every named service (for snapshots)."""
        names = self.names[wire.NameKind.SERVICE]
        return wire.make_names(wire.NameKind.SERVICE, list(names), list(names.values()))

    def take_new_names(self) -> np.ndarray | None:
        if not self.new_names:
            return None
        out = np.concatenate(self.new_names)
        self.new_names.clear()
        return out

    def service_name(self, service_id: int) -> str:
        return self.names[wire.NameKind.SERVICE].get(service_id, str(service_id))

    def find_service(self, name_or_id: str) -> int:
        """Slot of a service given its registered name or numeric id; -1 if unknown."""
        for sid, nm in self.names[wire.NameKind.SERVICE].items():
            if nm == name_or_id:
                return self.services.slots.find_one(sid)
        if name_or_id.isascii() and name_or_id.isdigit() and int(name_or_id) <= wire.ALL:
            return self.services.slots.find_one(int(name_or_id))
        return -1

    def service_summary(self, slot: int) -> dict:
        s, p = self.services, self.cfg.policy
        sid = int(s.slots.ids[slot])
        learned = float(s.learned_rps_per_replica[slot])
        return {
            "id": sid, "name": self.service_name(sid), "requests": int(s.requests[slot]),
            "errors": int(s.errors[slot]), "bytes": float(s.bytes[slot]),
            "rate_rps": float(s.level[slot]), "trend_rps_per_bucket": float(s.trend[slot]),
            "buckets_observed": int(s.n_obs[slot]), "late_dropped": int(s.late_dropped[slot]),
            "latency_ms_ewma": float(s.latency_ms[slot]),
            "observed_replicas": int(s.observed_replicas[slot]), "cpu": float(s.cpu[slot]),
            "rps_per_replica": learned if learned > 0 else p.rps_per_replica,
            "capacity_learned": learned > 0, "desired_replicas": int(s.desired[slot]),
            "published_replicas": int(s.published[slot]),
            "tier_widths_rps": self._tier_widths(slot),
            "tier_demand_rps": self._tier_demand(slot),
            "recent_rates_rps": self.rate_history(slot)[-12:].tolist(),
            "anomaly_score": float(self.models["anomaly"].predict(
                {"slots": np.array([slot])})["score"][0]),
            "anomalous": bool(self.models["anomaly"].predict(
                {"slots": np.array([slot])})["flag"][0]),
        }

    def _tier_widths(self, slot: int) -> dict:
        """How far above the forecast each tier is sized, and from what: the service's own
        errors, or ARIMA's interval before enough were scored."""
        w = np.empty((1, 3))
        residuals.quantiles(self.services.err_hist[slot:slot + 1], 1, self.bucket_quantiles(),
                            MIN_ERRORS, self.cfg.model.bucket_s, w)
        source = "errors"
        if np.isnan(w).any():
            source = "arima"
            n = slot + 1
            w = self._forecast_ahead(n, np.ones(n, np.int64))[1][slot:slot + 1]
        out = {name: float(x) for name, x in zip(("bronze", "silver", "gold"), w[0])}
        out["source"] = source
        return out

    def _tier_demand(self, slot: int) -> dict | None:
        """Each tier's quantile of the recent demand itself (what bounds forecast + width);
        None until ``MIN_ERRORS`` buckets closed."""
        q = np.empty((1, 3))
        residuals.quantiles(self.services.demand_hist[slot:slot + 1], 1,
                            self.bucket_quantiles(), MIN_ERRORS, self.cfg.model.bucket_s, q)
        if np.isnan(q).any():
            return None
        return {name: float(x) for name, x in zip(("bronze", "silver", "gold"), q[0])}

    def stats(self) -> dict:
        return {"users": len(self.users), "services": len(self.services),
                "segments": len(self.segments), "users_evicted": self.evicted,
                "late_dropped": self.late_dropped, "user_surges": self.user_surges,
                "user_late_dropped": self.user_late,
                "active_campaigns": len(self.campaigns),
                "navigation_learned": self.nav_learned,
                "navigation_skipped": self.nav_skipped,
                "navigation_queued": self._nav_queued,
                "navigation_rows": self.models["markov"].rows if "markov" in self.models else 0}
