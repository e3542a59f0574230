"""The engine: columnar state for users, segments and services, fed by decoded record
arrays; per-service request-rate buckets feeding a Holt smoother (which drives the capacity
rule and the deltas) and the online models (ARIMA, Holt-Winters, anomaly detector).

Pure logic: callers pass ``now_us``; nothing here reads clocks, sockets or files.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque

import numpy as np

from . import policy, wire
from .errors import BAEError
from .kernels import holt_winters as hw_kernels
from .kernels import rates
from .kernels import users as user_kernels
from .models.anomaly import AnomalyDetector
from .models.arima import OnlineARIMA
from .models.holt_winters import HoltWinters
from .models.markov import Markov
from .slots import EMPTY
from .state import CHUNK_SHIFT, Segments, Services, Users

MAX_CAMPAIGNS = 4096
_NO_LOCK = contextlib.nullcontext()
# the light per-user tier's smoothing (alpha, beta, gamma, phi) over hourly counts
USER_RATE = (0.1, 0.01, 0.1, 0.98)


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
        }
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
        # requests per replica at the target utilisation, from the current smoothed rate
        ok = (r["replicas"] > 0) & (r["cpu"] > 0.01) & (svcs.n_obs[s] > 0)
        if ok.any():
            ss = s[ok]
            est = (svcs.level[ss] / r["replicas"][ok] / r["cpu"][ok]
                   * self.cfg.policy.target_utilisation)
            prev = svcs.learned_rps_per_replica[ss]
            svcs.learned_rps_per_replica[ss] = np.where(prev > 0, 0.8 * prev + 0.2 * est, est)

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
        whose allocation passed hysteresis (the caller publishes them)."""
        svcs, m, p = self.services, self.cfg.model, self.cfg.policy
        n = svcs.rows
        self._drop_expired_campaigns(now_us)
        hour = now_us // hw_kernels.HOUR_US
        if hour > self._users_closed_hour:  # silent users' hours close as zero, hourly
            hw_kernels.user_rate_close(now_us, self.users.rate, *USER_RATE)
            self._users_closed_hour = hour
        until = now_us // self.bucket_us - m.late_buckets - 1
        if n == 0:
            return np.zeros(0, wire.ALLOCATION)
        rates.close_all(n, until, svcs.ring_ids, svcs.ring_counts, svcs.closed, svcs.level,
                        svcs.trend, svcs.n_obs, svcs.hist, m.alpha, m.beta, m.phi, m.bucket_s)
        self._feed_models(n)
        lead = max(1, int(round(p.lead_time_s / m.bucket_s)))
        base = np.empty(n)
        rates.forecast(svcs.level[:n], svcs.trend[:n], m.phi, lead, base)
        # campaigns starting within the lead time count now: capacity is ready at start
        mult = self.campaign_multipliers(now_us, now_us + int(p.lead_time_s * 1e6))
        learned = svcs.learned_rps_per_replica[:n]
        per_replica = np.where(learned > 0, learned, p.rps_per_replica)
        ready = svcs.n_obs[:n] > 0
        decision = policy.decide(
            base, mult, per_replica, p.headroom, p.min_replicas, p.max_replicas,
            svcs.published[:n], svcs.down_since_us[:n], svcs.down_max[:n], now_us,
            int(p.scale_down_window_s * 1e6), ready)
        svcs.desired[:n] = decision.desired
        changed = np.flatnonzero(decision.publish)
        out = np.zeros(len(changed), wire.ALLOCATION)
        if len(changed):
            out["ts_us"] = now_us
            out["service"] = svcs.slots.ids[changed]
            out["desired_replicas"] = decision.desired[changed]
            out["previous_replicas"] = np.maximum(svcs.published[changed], 0)
            out["observed_replicas"] = svcs.observed_replicas[changed]
            out["base_forecast"] = base[changed]
            out["context_adjustment"] = base[changed] * (mult[changed] - 1.0)
            out["predicted_rps"] = base[changed] * mult[changed]
            out["rps_per_replica"] = per_replica[changed]
            out["anomaly_multiplier"] = 1.0
            out["lead_time_s"] = lead * m.bucket_s
            reasons = decision.reasons[changed]
            reasons |= np.where(learned[changed] > 0, 0, wire.Reason.DEFAULT_CAPACITY).astype(np.uint32)
            reasons |= np.where(mult[changed] != 1.0, wire.Reason.CAMPAIGN, 0).astype(np.uint32)
            out["reasons"] = reasons
            svcs.published[changed] = decision.desired[changed]
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
            models["holt_winters"].learn({"slot": np.array(hs, np.int64),
                                          "value": np.array(hv)})

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
        uid = self._user_by_name.get(key)
        if uid is None and key.isascii() and key.isdigit() and int(key) < wire.NO_ID:
            uid = int(key)
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
        q = np.array([slot])
        widths = {"arima": (m.bucket_s, horizon), "holt_winters": (
            m.seasonal_bucket_s, max(1, -(-horizon // self.per_seasonal)))}
        for name, (width, h) in widths.items():
            got = self.models[name].predict({"h": h, "slots": q})
            out[name] = {"bucket_s": width, **{
                k: [None if not np.isfinite(x) else max(0.0, float(x)) for x in got[k][0]]
                for k in ("mean", "p50", "p90", "p99")}}
        return out

    def campaign_multipliers(self, now_us: int, until_us: int | None = None) -> np.ndarray:
        """Per service slot, the largest multiplier among campaigns active at some time in
        [``now_us``, ``until_us``] that name the service or all services (1.0 when none)."""
        n = self.services.rows
        mult = np.ones(n)
        c = self.campaigns
        if len(c) == 0 or n == 0:
            return mult
        until_us = now_us if until_us is None else until_us
        live = c[(c["start_us"] <= until_us) & (now_us < c["end_us"])]
        for rec in live:
            if rec["service"] == wire.ALL:
                np.maximum(mult, rec["multiplier"], out=mult)
            else:
                s = self.services.slots.find_one(int(rec["service"]))
                if s >= 0:
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
        self.users.load("users", arrays)
        self.segments.load("segments", arrays)
        self.services.load("services", arrays)
        self.campaigns = arrays["campaigns"].astype(wire.CONTEXT)
        for name, model in self.models.items():
            got = {k.rsplit(".", 1)[1]: v for k, v in arrays.items()
                   if k.startswith(f"model.{name}.")}
            if got:
                try:
                    if name == "arima":
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
            "recent_rates_rps": self.rate_history(slot)[-12:].tolist(),
            "anomaly_score": float(self.models["anomaly"].predict(
                {"slots": np.array([slot])})["score"][0]),
            "anomalous": bool(self.models["anomaly"].predict(
                {"slots": np.array([slot])})["flag"][0]),
        }

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
