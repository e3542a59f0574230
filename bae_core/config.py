"""Configuration schema, embedded defaults and validation.

A config is a TOML document of sections; every key has a type, a default and a check.
``validate`` turns a parsed document into a ``Config`` or raises ``ConfigError`` naming the
key and the fix (with a "did you mean" for typos).
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import json
from dataclasses import dataclass
from typing import Any, Callable

from .errors import ConfigError


@dataclass(frozen=True)
class Key:
    type: type
    default: Any
    doc: str
    check: Callable[[Any], str | None] | None = None  # returns a problem, or None


def _range(lo=None, hi=None, lo_open=False):
    def check(v):
        if lo is not None and (v <= lo if lo_open else v < lo):
            return f"must be {'>' if lo_open else '>='} {lo}"
        if hi is not None and v > hi:
            return f"must be <= {hi}"
        return None
    return check


def _endpoint(v):
    if not isinstance(v, str) or "://" not in v:
        return "must be a ZeroMQ endpoint such as 'tcp://127.0.0.1:5555' or 'ipc:///run/bae/in'"
    scheme = v.split("://", 1)[0]
    if scheme not in ("tcp", "ipc", "inproc"):
        return f"transport '{scheme}' is not supported (use tcp, ipc or inproc)"
    return None


def _endpoints(v):
    for e in v:
        p = _endpoint(e)
        if p:
            return p
    return None


def _hostport(v):
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return "must be HOST:PORT, for example '127.0.0.1:8787'"
    return None


def _choice(*options):
    def check(v):
        return None if v in options else f"must be one of {', '.join(map(repr, options))}"
    return check


SCHEMA: dict[str, dict[str, Key]] = {
    "ingest": {
        "endpoint": Key(str, "tcp://127.0.0.1:5555", "PULL socket producers PUSH to", _endpoint),
        "durable_endpoint": Key(str, "tcp://127.0.0.1:5558", "ROUTER socket for durable "
                                "producers: each message is acknowledged once journaled "
                                "(empty: off)", lambda v: _endpoint(v) if v else None),
        "subscribe": Key(list, [], "producer PUB endpoints to SUB to", _endpoints),
        "hwm": Key(int, 1000, "receive high-water mark in messages (back-pressure)",
                   _range(1)),
        "max_records_per_frame": Key(int, 65536, "larger frames are rejected",
                                     _range(1, 1 << 20)),
        "max_past_s": Key(float, 3600.0, "reject records older than this (0: off)", _range(0)),
        "max_future_s": Key(float, 300.0, "reject records newer than this (0: off)",
                            _range(0)),
        "batch_frames": Key(int, 256, "frames handled per event-loop turn", _range(1)),
    },
    "publish": {
        "endpoint": Key(str, "tcp://127.0.0.1:5556", "PUB socket for deltas", _endpoint),
        "snapshot_endpoint": Key(str, "tcp://127.0.0.1:5557", "ROUTER socket for snapshots",
                                 _endpoint),
        "hwm": Key(int, 100000, "send high-water mark per subscriber", _range(1)),
        "heartbeat_s": Key(float, 1.0, "heartbeat interval", _range(0.05, 60)),
    },
    "http": {
        "listen": Key(str, "127.0.0.1:8787", "HTTP API address", _hostport),
        "token": Key(str, "", "bearer token required on /v1 and /metrics (empty: none)"),
        "token_file": Key(str, "", "file holding the bearer token"),
    },
    "model": {
        "bucket_s": Key(float, 10.0, "request-rate bucket width", _range(0.01, 86400)),
        "late_buckets": Key(int, 2, "buckets a late event may still join", _range(0, 64)),
        "alpha": Key(float, 0.5, "level smoothing", _range(0, 1, lo_open=True)),
        "beta": Key(float, 0.05, "trend smoothing", _range(0, 1)),
        "phi": Key(float, 0.98, "trend damping", _range(0, 1)),
        "history": Key(int, 360, "closed buckets kept per service", _range(8, 1 << 16)),
        "seasonal_bucket_s": Key(float, 300.0, "Holt-Winters observation width (a multiple "
                                 "of bucket_s); daily and weekly seasons in these",
                                 _range(1, 86400)),
        "weekly": Key(bool, True, "Holt-Winters weekly season besides the daily one"),
        "arima_p": Key(int, 4, "online ARIMA: autoregressive order", _range(0, 32)),
        "arima_d": Key(int, 1, "online ARIMA: differencing order", _range(0, 2)),
        "arima_q": Key(int, 2, "online ARIMA: moving-average order (as extra AR lags)",
                       _range(0, 32)),
        "markov": Key(bool, True, "learn resource-to-resource navigation (off the ingest "
                      "path, in a worker thread) for prefetch lists and per-service demand"),
        "markov_half_life_s": Key(float, 3600.0, "navigation: half-life of old transitions "
                                  "(0: no decay)", _range(0)),
        "markov_session_gap_s": Key(float, 1800.0, "navigation: a longer pause starts a new "
                                    "session", _range(1)),
        "markov_max_rows": Key(int, 2_000_000, "navigation: contexts kept (the lightest go "
                               "first)", _range(16)),
        "markov_queue_events": Key(int, 4_000_000, "navigation: events waiting to be learned "
                                   "before the oldest are skipped (counted)", _range(1024)),
        "lstm": Key(bool, True, "serve the LSTM forecaster (onnxruntime, a worker thread) "
                    "as an ensemble member"),
        "lstm_path": Key(str, "", "ONNX model file (empty: the shipped models/bae_lstm_v1"
                         ".onnx); a changed file is checked and hot-reloaded"),
        "lstm_interval_s": Key(float, 60.0, "how often the LSTM forecasts every service",
                               _range(1)),
        "lstm_threads": Key(int, 1, "onnxruntime intra-op threads for the LSTM", _range(1, 64)),
        "lstm_device": Key(str, "auto", "auto (CUDA when present), cuda or cpu",
                           lambda v: None if v in ("auto", "cuda", "cpu") else
                           "use auto, cuda or cpu"),
        "prophet": Key(bool, False, "refit Prophet on every service's seasonal series in a "
                       "worker process (needs the prophet extra)"),
        "prophet_interval_s": Key(float, 3600.0, "how often Prophet refits", _range(60)),
        "user_surge_k": Key(float, 6.0, "flag a user whose requests this hour pass their "
                            "own forecast by this many Poisson deviations", _range(0, lo_open=True)),
        "user_surge_min": Key(float, 60.0, "...and at least this many requests in the hour",
                              _range(1)),
        "user_surge_new": Key(float, 600.0, "requests in an hour that flag a user with no "
                              "day of history yet", _range(1)),
    },
    "policy": {
        "tick_s": Key(float, 1.0, "how often allocations are recomputed", _range(0.01, 3600)),
        "rps_per_replica": Key(float, 50.0, "capacity of one replica until metrics teach it",
                               _range(0, lo_open=True)),
        "target_utilisation": Key(float, 0.7, "CPU fraction a replica should run at",
                                  _range(0, 1, lo_open=True)),
        "memory_per_replica_bytes": Key(float, 0.0, "memory one replica may use; when set, "
                                        "METRIC memory counts in the capacity model "
                                        "(0: off)", _range(0)),
        "metric_window_s": Key(float, 60.0, "the window METRIC utilisation is averaged over "
                               "(paired with the request rate of that window)",
                               _range(0, lo_open=True)),
        "db_query_ms_budget": Key(float, 0.0, "mean DB query time at which a replica counts "
                                  "as fully busy; when set, METRIC db_query_ms counts in the "
                                  "capacity model (0: off)", _range(0)),
        "headroom": Key(float, 0.0, "extra capacity above the forecast (on top of the "
                        "target utilisation's slack)", _range(0, 10)),
        "min_replicas": Key(int, 1, "lower bound per service", _range(0)),
        "max_replicas": Key(int, 1000, "upper bound per service", _range(1)),
        "lead_time_s": Key(float, 60.0, "how far ahead the forecast is read", _range(0)),
        "scale_down_window_s": Key(float, 240.0, "stabilisation before scaling down",
                                   _range(0)),
        "shadow": Key(bool, False, "publish deltas as advisory only"),
        "error_halflife_s": Key(float, 3600.0, "half-life of the forecast errors the tier "
                                "quantiles are read from", _range(0, lo_open=True)),
        "bronze_quantile": Key(float, 0.5, "forecast quantile bronze-tier demand is provisioned "
                               "for", _range(0.01, 0.999)),
        "silver_quantile": Key(float, 0.9, "...silver tier", _range(0.01, 0.999)),
        "gold_quantile": Key(float, 0.99, "...gold tier", _range(0.01, 0.999)),
        "silver_headroom": Key(float, 0.1, "headroom added for the silver tier's share",
                               _range(0, 10)),
        "gold_headroom": Key(float, 0.2, "headroom added for the gold tier's share",
                             _range(0, 10)),
        "maxconn_per_replica": Key(int, 100, "connections one replica takes (TIER.maxconn)",
                                   _range(1)),
        "tolerance": Key(float, 0.1, "ignore a change of the desired replicas within this "
                         "fraction of the published ones (as HPA's tolerance)", _range(0, 1)),
        "scale_up_period_s": Key(float, 15.0, "at most one scale-up (to 2x or +4) per period, "
                                 "except in panic", _range(0)),
        "scale_down_period_s": Key(float, 15.0, "at most one scale-down per period",
                                   _range(0)),
        "scale_down_fraction": Key(float, 1.0, "largest share of replicas one scale-down "
                                   "removes", _range(0, 1, lo_open=True)),
        "panic_factor": Key(float, 1.3, "observed load this many times the forecast switches "
                            "to reacting on observed load", _range(1)),
        "panic_z": Key(float, 3.0, "...and by more than this many standard deviations of "
                       "counting (Poisson) noise", _range(0)),
        "panic_window_s": Key(float, 60.0, "no scale-down for this long after a panic",
                              _range(0)),
        "anomaly_multiplier": Key(float, 1.3, "extra capacity for an anomalous service or a "
                                  "surging user", _range(1)),
        "prewarm_min_idle_s": Key(float, 60.0, "a service idle this long gets pre-warm orders "
                                  "from its idle-time histogram", _range(1)),
        "prewarm_quantile": Key(float, 0.05, "pre-warm at this quantile of past idle times",
                                _range(0, 1)),
        "peak_warm_ratio": Key(float, 1.5, "warm ahead when the hour's forecast peak is this "
                               "many times the current forecast", _range(1)),
        "prefetch_k": Key(int, 20, "resources in a service's prefetch list", _range(1, 1000)),
        "needs_interval_s": Key(float, 10.0, "how often per-user needs, the per-service "
                                "contextual adjustment and prefetch lists are recomputed",
                                _range(0.1, 3600)),
    },
    "state": {
        "data_dir": Key(str, "./bae-data", "LMDB folder"),
        "checkpoint_interval_s": Key(float, 60.0, "checkpoint every this many seconds "
                                     "(0: only at exit)", _range(0)),
        "checkpoint_events": Key(int, 10_000_000, "...or after this many accepted events "
                                 "(0: off)", _range(0)),
        "map_size_mb": Key(int, 1024, "initial LMDB map size (grows when full)", _range(1)),
        "max_map_size_mb": Key(int, 0, "never grow the LMDB map past this (0: no limit)",
                               _range(0)),
        "user_history": Key(int, 0, "keep each user's latest N request times in a ring "
                            "(/v1/users shows them; costs 16N bytes and ~20 ns per event; "
                            "0: off)", _range(0, 1024)),
        "user_ttl_s": Key(float, 86400.0, "evict users idle this long, folding them into "
                          "their segment (0: never)", _range(0)),
    },
    "journal": {
        "enabled": Key(bool, True, "append accepted events to the journal (recovery, "
                       "durable ingest, training data)"),
        "dir": Key(str, "", "journal folder (empty: DATA_DIR/journal)"),
        "segment_mb": Key(int, 64, "segment file size", _range(1, 4096)),
        "retention_hours": Key(float, 168.0, "delete segments older than this", _range(0)),
        "retention_gb": Key(float, 10.0, "keep at most this much journal", _range(0)),
        "fsync": Key(bool, False, "fsync before acknowledging (survives power loss, not "
                     "just a crash of the daemon)"),
    },
    "security": {
        "curve": Key(bool, False, "CURVE-encrypt and authenticate every socket"),
        "server_secret_key": Key(str, "", "server .key_secret file from 'bae keygen'"),
        "authorized_keys_dir": Key(str, "", "folder of client .key files allowed in"),
        "allow_plaintext_remote": Key(bool, False,
                                      "allow non-loopback endpoints without CURVE"),
    },
    "log": {
        "level": Key(str, "info", "log level", _choice("debug", "info", "warning", "error")),
        "format": Key(str, "json", "log line format", _choice("json", "text")),
    },
}


class Section(dict):
    """A validated section; keys read as attributes."""

    __getattr__ = dict.__getitem__


class Config(dict):
    """A validated configuration: ``cfg.ingest.endpoint``."""

    __getattr__ = dict.__getitem__

    def fingerprint(self) -> str:
        """Hash of the sections that shape model state; a checkpoint written under another
        fingerprint is reloaded with a warning."""
        model = {k: self[k] for k in ("model",)}
        return hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()[:16]


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(options)}"


def _coerce(name: str, key: Key, value: Any) -> Any:
    if key.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if key.type is int and isinstance(value, bool) or not isinstance(value, key.type):
        raise ConfigError(name, f"expected {key.type.__name__}, got {type(value).__name__} "
                                f"{value!r}", f"write it as a TOML {key.type.__name__}")
    if key.type is list:
        value = list(value)
    if key.check:
        problem = key.check(value)
        if problem:
            raise ConfigError(name, f"{value!r} {problem}", f"fix '{name}' in the config")
    return value


def validate(doc: dict[str, Any] | None = None) -> Config:
    """Merge ``doc`` over the defaults and check every key."""
    doc = doc or {}
    out = Config()
    for section in doc:
        if section not in SCHEMA:
            raise ConfigError(section, "unknown section", _suggest(section, SCHEMA))
        if not isinstance(doc[section], dict):
            raise ConfigError(section, "must be a table", f"write it as [{section}]")
    for section, keys in SCHEMA.items():
        given = doc.get(section, {})
        for k in given:
            if k not in keys:
                raise ConfigError(f"{section}.{k}", "unknown key", _suggest(k, keys))
        sec = Section()
        for k, key in keys.items():
            v = given[k] if k in given else key.default
            sec[k] = _coerce(f"{section}.{k}", key, v)
        out[section] = sec
    p = out.policy
    if p.min_replicas > p.max_replicas:
        raise ConfigError("policy.min_replicas", f"{p.min_replicas} exceeds max_replicas "
                          f"{p.max_replicas}", "lower min_replicas or raise max_replicas")
    m = out.model
    ratio = m.seasonal_bucket_s / m.bucket_s
    if abs(ratio - round(ratio)) > 1e-6 * ratio or round(ratio) < 1:
        raise ConfigError("model.seasonal_bucket_s", f"{m.seasonal_bucket_s} is not a "
                          f"multiple of model.bucket_s ({m.bucket_s})",
                          "for example 300 with bucket_s 10")
    if out.ingest.durable_endpoint and not out.journal.enabled:
        raise ConfigError("ingest.durable_endpoint", "needs the journal (acknowledgements "
                          "mean 'journaled')", "set journal.enabled = true or "
                          "ingest.durable_endpoint = \"\"")
    if out.security.curve and not out.security.server_secret_key:
        raise ConfigError("security.server_secret_key", "is empty while security.curve is on",
                          "create keys with 'bae keygen DIR' and point this key at "
                          "DIR/server.key_secret")
    if not out.security.curve and not out.security.allow_plaintext_remote:
        for name, ep in _endpoint_keys(out):
            if not _loopback(ep):
                raise ConfigError(name, f"{ep!r} is reachable from other hosts without "
                                  "encryption", "turn on security.curve, or set "
                                  "security.allow_plaintext_remote = true on a trusted network")
    return out


def _endpoint_keys(cfg: Config):
    yield "ingest.endpoint", cfg.ingest.endpoint
    yield "publish.endpoint", cfg.publish.endpoint
    yield "publish.snapshot_endpoint", cfg.publish.snapshot_endpoint
    if cfg.ingest.durable_endpoint:
        yield "ingest.durable_endpoint", cfg.ingest.durable_endpoint
    for ep in cfg.ingest.subscribe:
        yield "ingest.subscribe", ep


def _loopback(endpoint: str) -> bool:
    scheme, _, rest = endpoint.partition("://")
    if scheme != "tcp":
        return True
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a DNS name or an interface: may be reachable from elsewhere
        return False


def defaults_toml() -> str:
    """The embedded defaults as a commented TOML document (``bae config --defaults``)."""
    lines = []
    for section, keys in SCHEMA.items():
        lines.append(f"[{section}]")
        for k, key in keys.items():
            lines.append(f"# {key.doc}")
            lines.append(f"{k} = {_toml_value(key.default)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)
