"""``bae backtest TRACE``: replay a real trace through the engine in simulated time and
compare the predictive policy with a reactive autoscaler (Kubernetes HPA) on the same
cluster model (see ``bae_core.simulate`` for the model and the metrics).

Traces:

- ``--format nasa``: an access log of real requests (user, resource and service from
  ``bae_core.logparse``; timestamps as logged);
- ``--format csv --value-column C``: a demand series of one service; each row's requests are
  spread evenly over its interval at a rate proportional to the value, scaled so the mean is
  ``--mean-rps``. Users and resources are synthetic, so prefetch and LRU scores are null.

Bad input (missing file, empty trace, missing column, trace too short) is a clear error,
exit status 2 through ``bae``.
"""

from __future__ import annotations

import csv
import json
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bae_core import config, simulate, wire
from bae_core.errors import ConfigError, LogFormatError

from .cli import read_toml

CSV_START_S = 1_704_067_200  # 2024-01-01T00:00:00Z, where a csv without Unix times starts
DEFAULT_ROW_S = 300.0  # seconds per csv row when neither a timestamp column nor a flag says
BUCKETS = (10.0, 15.0, 20.0, 30.0, 60.0, 75.0, 100.0, 150.0, 300.0)  # divide 300 s
MAX_STEPS = 12_000  # csv: the automatic bucket keeps the step count under this
FLAGS = {"step_s": "--bucket-seconds", "rps_per_replica": "--rps-per-replica",
         "startup_s": "--startup-seconds", "sync_s": "--hpa-sync-seconds",
         "tolerance": "--hpa-tolerance", "hpa_window_s": "--hpa-window-seconds",
         "metric_window_s": "--metric-window-seconds",
         "prewarm_window_s": "--prewarm-window-seconds", "cache_size": "--cache-size",
         "target_utilisation": "policy.target_utilisation",
         "min_replicas": "policy.min_replicas"}
TARGET_REPLICAS = 4  # default capacity: the median demand needs about this many replicas


# ---------------------------------------------------------------------------- inputs

def _read_nasa(path: str):
    from bae_core.logparse import read_log

    if not Path(path).is_file():
        raise LogFormatError(f"{path}: no such file; give the path of a NASA access log "
                             "(TSV)")
    try:
        recs, names, stats = read_log(path, "nasa")
    except LogFormatError as e:
        raise LogFormatError(str(e).replace("bae replay", "bae backtest")) from None
    if len(recs) == 0:
        raise LogFormatError(f"{path}: no usable request ({stats.summary()}); give a NASA "
                             "log with data lines (host, time, url, ...)")
    svc = names[names["kind"] == wire.NameKind.SERVICE]
    return recs, {int(r["id"]): wire.name_str(r) for r in svc}, stats


def _first_time(path: str, column: str) -> float | None:
    from .evaluate import _parse_time

    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if column not in header:
            return None
        i = header.index(column)
        for row in reader:
            try:
                return _parse_time(row[i])
            except (ValueError, IndexError):
                continue
    return None


def _auto_bucket(duration_s: float, seasonal_s: float) -> float:
    for b in BUCKETS:
        if duration_s / b <= MAX_STEPS and abs(seasonal_s / b - round(seasonal_s / b)) < 1e-9:
            return b
    return BUCKETS[-1]


# ---------------------------------------------------------------------------- running

def run_backtest(args) -> dict:
    t_start = time.perf_counter()
    doc = read_toml(args.config)
    user_cfg = config.validate(doc)  # the user's config must be valid as given
    pol, model = user_cfg.policy, user_cfg.model
    fmt = args.format
    path = args.trace
    csv_values = None
    if fmt == "csv":
        if not args.value_column:
            raise ConfigError("--value-column", "missing", "name the CSV column that holds "
                              "the demand, e.g. --value-column cpu_util_percent")
        from .evaluate import read_series

        if args.step_seconds is not None and not args.step_seconds > 0:
            raise ConfigError("--step-seconds", f"{args.step_seconds} must be > 0",
                              "give the seconds each row covers")
        csv_values, row_s, counts = read_series(path, args.value_column,
                                                args.timestamp_column, args.step_seconds)
        row_source = "flag" if args.step_seconds else "timestamps" if row_s else "default"
        row_s = float(args.step_seconds or row_s or DEFAULT_ROW_S)
        duration = len(csv_values) * row_s
    else:
        recs, svc_names, stats = _read_nasa(path)
        duration = float(recs["ts_us"].max() - recs["ts_us"].min()) / 1e6
    if args.bucket_seconds is not None:
        step = float(args.bucket_seconds)
    elif "bucket_s" in doc.get("model", {}) or fmt != "csv":
        step = float(model.bucket_s)
    else:
        step = _auto_bucket(duration, model.seasonal_bucket_s)
    s = simulate.SimSettings(
        step_s=step, rps_per_replica=1.0, target_utilisation=pol.target_utilisation,
        min_replicas=pol.min_replicas, max_replicas=pol.max_replicas,
        startup_s=args.startup_seconds, sync_s=args.hpa_sync_seconds,
        tolerance=args.hpa_tolerance, hpa_window_s=args.hpa_window_seconds,
        metric_window_s=args.metric_window_seconds, cache_size=args.cache_size,
        prewarm_window_s=(args.prewarm_window_seconds if args.prewarm_window_seconds
                          is not None else pol.scale_down_window_s))
    s.check(FLAGS)
    need_s = max(20 * step, s.startup_s + s.hpa_window_s)
    if duration < need_s:
        raise LogFormatError(
            f"{path}: the trace covers {duration:.0f} s; a backtest needs at least "
            f"{need_s:.0f} s (20 steps of {step:g} s and the start-up delay plus the HPA "
            "window); give a longer trace, or lower --bucket-seconds / --startup-seconds")
    if duration / step > 2_000_000:
        raise LogFormatError(
            f"{path}: the trace spans {duration / 86400:.0f} days, {duration / step:.0f} "
            f"steps of {step:g} s; give --bucket-seconds a larger value (or check the "
            "timestamps for outliers)")
    trace: dict = {"file": str(path), "format": fmt}
    if fmt == "csv":
        if args.mean_rps <= 0:
            raise ConfigError("--mean-rps", f"{args.mean_rps} must be > 0",
                              "give a positive request rate")
        start = CSV_START_S
        if args.timestamp_column:
            t = _first_time(path, args.timestamp_column)
            start = int(t) if t is not None and t > 1e8 else CSV_START_S + int(t or 0)
        from bae_core.logparse import service_id

        name = args.service or args.value_column
        demand = simulate.demand_from_series(csv_values, row_s, s, args.mean_rps,
                                             start * 1_000_000, service_id(name), name)
        trace.update(value_column=args.value_column, rows=len(csv_values),
                     row_seconds=row_s, row_seconds_source=row_source, input=counts,
                     mean_rps=args.mean_rps)
        if "markov" not in doc.get("model", {}):
            doc.setdefault("model", {})["markov"] = False  # synthetic resources
    else:
        demand = simulate.demand_from_requests(recs, s, svc_names)
        trace.update(lines=stats.lines, skipped=stats.skipped_total)
    D = demand.steps
    totals = D.sum(1)
    busiest = int(np.argmax(totals))
    if args.rps_per_replica is not None:
        s.rps_per_replica = float(args.rps_per_replica)
        cap_source = "flag"
    else:
        rates = D[busiest] / step
        med = float(np.median(rates))
        if med <= 0:
            med = float(np.median(rates[rates > 0]))
        s.rps_per_replica = med / TARGET_REPLICAS
        cap_source = f"median demand of {demand.names[busiest]} / {TARGET_REPLICAS}"
    s.check(FLAGS)
    plot_idx = busiest
    if args.service and fmt != "csv":
        if args.service not in demand.names:
            top = [demand.names[i] for i in np.argsort(-totals)[:8]]
            raise ConfigError("--service", f"{args.service!r} is not in the trace",
                              f"name one of {', '.join(top)}, ...")
        plot_idx = demand.names.index(args.service)
    cfg = config.validate(simulate.apply_overrides(doc, s))
    res = simulate.backtest(cfg, demand, s)
    p, r = res.predictive, res.reactive
    p["vs_reactive"] = {
        "under_provisioned_requests_ratio": _ratio(p["under_provisioned_requests"],
                                                   r["under_provisioned_requests"]),
        "replica_hours_ratio": _ratio(p["replica_hours"], r["replica_hours"]),
    }
    sizes = p.pop("cache_sizes", None)
    if isinstance(sizes, dict):
        p["cache_size_max"] = max(sizes.values()) if sizes else 0
        p["cache_size_mean"] = round(float(np.mean(list(sizes.values()))), 2) if sizes else 0
        p["cache_services"] = len(sizes)
    else:
        p["cache_size_max"] = sizes
    trace.update(
        requests=int(totals.sum()), services=len(demand.names),
        busiest_service=demand.names[busiest], start=_iso(demand.t0_us),
        duration_s=round(duration, 3), steps=demand.n_steps)
    settings = {
        "step_s": step, "rps_per_replica": round(s.rps_per_replica, 6),
        "rps_per_replica_source": cap_source,
        "engine_rps_per_replica": round(cfg.policy.rps_per_replica, 6),
        "target_utilisation": s.target_utilisation, "headroom": cfg.policy.headroom,
        "lead_time_s": cfg.policy.lead_time_s, "startup_s": s.startup_s,
        "min_replicas": s.min_replicas, "max_replicas": s.max_replicas,
        "hpa_sync_s": s.sync_s, "hpa_tolerance": s.tolerance,
        "hpa_window_s": s.hpa_window_s, "metric_window_s": s.metric_window_s,
        "prewarm_window_s": s.prewarm_window_s, "cache_size": s.cache_size,
        "grid_s": s.cell_s, "late_buckets": cfg.model.late_buckets,
        "markov": cfg.model.markov, "config": args.config,
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    out = {"predictive": p, "reactive": r, "trace": trace, "settings": settings}
    if args.plot:
        _plot(args.plot, res.series, plot_idx, demand.names[plot_idx], s)
        out["settings"]["plot"] = {"file": args.plot, "service": demand.names[plot_idx]}
    return out


def _ratio(a, b):
    if a is None or b is None:
        return None
    if b == 0:  # undefined: neither (or only the predictive side) under-provisioned
        return None
    return round(a / b, 4)


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, timezone.utc).isoformat().replace("+00:00", "Z")


def _plot(path: str, series: dict, i: int, name: str, s: simulate.SimSettings) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = series["t_s"] / 3600.0
    cols = {"demand": series["demand_rps"][i],
            "predicted (ALLOCATION.predicted_rps)": series["predicted_rps"][i].astype(float),
            "capacity, predictive": series["capacity_predictive_rps"][i],
            "capacity, reactive (HPA)": series["capacity_reactive_rps"][i]}
    k = max(1, len(t) // 4000)  # block means keep long traces readable
    if k > 1:
        n = len(t) // k * k
        t = t[:n].reshape(-1, k).mean(1)
        with warnings.catch_warnings():  # blocks before the first forecast are all NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            cols = {c: np.nanmean(v[:n].reshape(-1, k), 1) for c, v in cols.items()}
    fig, ax = plt.subplots(figsize=(12, 5))
    styles = {"demand": dict(color="0.6", lw=0.8),
              "predicted (ALLOCATION.predicted_rps)": dict(color="tab:purple", lw=1.0),
              "capacity, predictive": dict(color="tab:blue", lw=1.2),
              "capacity, reactive (HPA)": dict(color="tab:orange", lw=1.2)}
    for c, v in cols.items():
        ax.plot(t, v, label=c, **styles[c])
    ax.set_xlabel("hours since trace start")
    ax.set_ylabel("requests / s")
    ax.set_title(f"bae backtest: {name} (replica = {s.rps_per_replica:.4g} rps, start-up "
                 f"{s.startup_s:g} s)")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise ConfigError("--plot", f"cannot write {path}: {e.strerror}",
                          "give a writable path") from None
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------- CLI

def _table(out: dict) -> str:
    p, r, tr, st = out["predictive"], out["reactive"], out["trace"], out["settings"]
    rows = [("under-provisioned requests", "under_provisioned_requests"),
            ("under-provisioned service-s", "under_provisioned_s"),
            ("over-provisioned replica-h", "over_provisioned_replica_hours"),
            ("replica-hours (ordered)", "replica_hours"),
            ("replica-hours (ready)", "ready_replica_hours"),
            ("served fraction", "served_fraction"),
            ("scaling actions", "scaling_actions"),
            ("prefetch hit rate", "prefetch_hit_rate"),
            ("LRU hit rate", "lru_hit_rate"),
            ("pre-warm hits", "prewarm_hits"),
            ("pre-warm misses", "prewarm_misses")]

    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = [f"{tr['file']} ({tr['format']}): {tr['requests']} requests, {tr['services']} "
             f"service(s), {tr['duration_s'] / 3600:.1f} h in {tr['steps']} steps of "
             f"{st['step_s']:g} s",
             f"replica = {st['rps_per_replica']:.4g} rps ({st['rps_per_replica_source']}), "
             f"start-up {st['startup_s']:g} s, target utilisation "
             f"{st['target_utilisation']:g}", "",
             f"{'':<30}{'predictive':>14}{'reactive':>14}"]
    for label, key in rows:
        lines.append(f"{label:<30}{fmt(p.get(key)):>14}{fmt(r.get(key)):>14}")
    lines.append("")
    lines.append(f"took {st['seconds']:.1f} s (engine {p['engine_seconds']:.1f} s)")
    return "\n".join(lines)


def cmd_backtest(args) -> int:
    out = run_backtest(args)
    print(json.dumps(out) if args.json else _table(out))
    return 0


def add_backtest_parser(subparsers) -> None:
    """Register ``bae backtest TRACE ...`` on ``bae``'s subparsers."""
    b = subparsers.add_parser(
        "backtest", help="replay a trace in simulated time: the predictive policy against "
        "a reactive autoscaler (HPA) on the same cluster model")
    b.add_argument("trace", help="NASA access log (TSV) or a CSV demand series")
    b.add_argument("--format", choices=["nasa", "csv"], required=True)
    b.add_argument("--value-column", dest="value_column", help="csv: the demand column")
    b.add_argument("--timestamp-column", dest="timestamp_column", help="csv: a time column")
    b.add_argument("--step-seconds", dest="step_seconds", type=float,
                   help=f"csv: seconds per row (default: from the timestamps, else "
                   f"{DEFAULT_ROW_S:g})")
    b.add_argument("--mean-rps", dest="mean_rps", type=float, default=5.0,
                   help="csv: mean request rate the series is scaled to (default 5)")
    b.add_argument("--service", help="the service to plot (default: the busiest); csv: "
                   "the service's name")
    b.add_argument("--rps-per-replica", dest="rps_per_replica", type=float,
                   help="requests/s one replica serves at 100%% CPU (default: the busiest "
                   f"service's median demand needs {TARGET_REPLICAS} replicas)")
    b.add_argument("--bucket-seconds", dest="bucket_seconds", type=float,
                   help="simulation step = model.bucket_s (default: the config's; csv "
                   f"without one: the smallest of {', '.join(f'{x:g}' for x in BUCKETS)} "
                   f"giving at most {MAX_STEPS} steps)")
    b.add_argument("--startup-seconds", dest="startup_seconds", type=float, default=60.0,
                   help="order -> replica serving (default 60)")
    b.add_argument("--hpa-sync-seconds", dest="hpa_sync_seconds", type=float, default=15.0,
                   help="HPA sync period (default 15)")
    b.add_argument("--hpa-tolerance", dest="hpa_tolerance", type=float, default=0.1,
                   help="HPA tolerance band (default 0.1)")
    b.add_argument("--hpa-window-seconds", dest="hpa_window_seconds", type=float,
                   default=300.0, help="HPA scale-down stabilisation (default 300)")
    b.add_argument("--metric-window-seconds", dest="metric_window_seconds", type=float,
                   default=60.0, help="CPU averaging window of the METRIC records (default 60)")
    b.add_argument("--prewarm-window-seconds", dest="prewarm_window_seconds", type=float,
                   help="a PREWARM hits when requests arrive within this after at_us "
                   "(default: policy.scale_down_window_s)")
    b.add_argument("--cache-size", dest="cache_size", type=int, default=20,
                   help="LRU size per service when the engine publishes no prefetch list "
                   "(default 20)")
    b.add_argument("--config", help="TOML config merged under the backtest's overrides")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument("--plot", metavar="OUT.png", help="demand, forecast and capacity of "
                   "both policies over time")
    b.set_defaults(fn=cmd_backtest)
