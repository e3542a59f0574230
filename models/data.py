"""Training series for the LSTM: CSV columns or a BAE event journal, cut into windows.

A series is ``(name, values float64[], start_step)``: regular 5-minute values and the step
index of the first one (``unix_seconds // 300`` for a journal; 0 for a CSV, whose rows
may carry no timestamps). ``training_set`` turns the first ``fraction`` of every series into
(features, normalised targets) with ``features.build_features``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from bae_core.errors import BAEError, ConfigError
from models import features as F

MIN_WINDOWS = 64  # fewer training windows than this in all series together is refused


class TooLittleData(BAEError):
    """The training input holds too few 5-minute steps to cut training windows from."""


def parse_csv_spec(spec: str) -> tuple[Path, str]:
    """``FILE[:COLUMN]`` -> (path, column); the column defaults to ``value``."""
    path, sep, col = spec.rpartition(":")
    if not sep or not path or "/" in col:
        return Path(spec), "value"
    return Path(path), col


def read_csv_series(spec: str) -> tuple[str, np.ndarray, int]:
    """One series from ``FILE[:COLUMN]`` through ``daemon.evaluate.read_series``: bad values
    carried forward; with a ``timestamp`` column, gaps regridded to 300 s and filled."""
    from daemon.evaluate import read_series
    path, col = parse_csv_spec(spec)
    ts = None
    if path.is_file():
        with path.open(newline="") as f:
            header = [h.strip() for h in next(csv.reader(f), [])]
        ts = "timestamp" if "timestamp" in header and col != "timestamp" else None
    y, _step, _counts = read_series(path, col, ts, F.STEP_S if ts else None)
    return f"{path.name}:{col}", y, 0


def read_journal_series(path) -> list[tuple[str, np.ndarray, int]]:
    """REQUEST events of a journal counted per service and 5-minute bucket; one series per
    service, from its first to its last bucket (empty buckets are 0)."""
    from bae_core import wire
    from daemon.journal import iter_records, list_segments
    path = Path(path)
    if not path.is_dir() or not list_segments(path):
        raise ConfigError("--from-journal", f"{path} is not a BAE journal folder (no "
                          "*.bjl segment files)", "give the daemon's journal directory")
    svc, bkt = [], []
    for _seq, _hdr, recs in iter_records(path, types=[wire.MsgType.REQUEST]):
        svc.append(recs["service"].astype(np.int64))
        bkt.append(recs["ts_us"] // (F.STEP_S * 1_000_000))
    if not svc:
        return []
    svc, bkt = np.concatenate(svc), np.concatenate(bkt)
    out = []
    for s in np.unique(svc):
        b = bkt[svc == s]
        lo = int(b.min())
        out.append((f"service{s}", np.bincount(b - lo).astype(np.float64), lo))
    return out


def training_set(series, fraction: float = 0.5, source: str = "the input"):
    """(x float32[N, WINDOW, N_FEATURES], y float32[N, HORIZON], counts per series) from
    every window that ends, with its horizon, inside the first ``fraction`` of a series."""
    xs, ys, counts = [], [], {}
    pad = np.full(F.HISTORY - 1, np.nan)
    for name, y, start in series:
        n = int(len(y) * fraction)
        k = n - F.WINDOW - F.HORIZON + 1  # windows ending at t = WINDOW-1 .. n-HORIZON-1
        counts[name] = max(0, k)
        if k <= 0:
            continue
        part = np.concatenate([pad, np.asarray(y[:n], np.float64)])
        hist = sliding_window_view(part, F.HISTORY)  # row t: history ending at y[t]
        ends = np.arange(F.WINDOW - 1, F.WINDOW - 1 + k)
        x, mu, sc = F.build_features(hist[ends], start + ends)
        fut = sliding_window_view(np.asarray(y[:n], np.float64), F.HORIZON)[ends + 1]
        xs.append(x)
        ys.append(F.normalise_targets(fut, mu, sc))
    total = sum(counts.values())
    if total < MIN_WINDOWS:
        need = F.WINDOW + F.HORIZON + MIN_WINDOWS - 1
        raise TooLittleData(
            f"{source} gives {total} training windows ({', '.join(f'{k}: {v}' for k, v in counts.items()) or 'no series'}); "
            f"training needs {MIN_WINDOWS}, i.e. one series with at least "
            f"{int(np.ceil(need / fraction))} 5-minute steps (about "
            f"{np.ceil(need / fraction) * F.STEP_S / 3600:.0f} h) at --train-fraction "
            f"{fraction}; let the daemon record longer, or train on CSVs with --csv")
    return np.concatenate(xs), np.concatenate(ys), counts
