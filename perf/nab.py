"""NAB scoring (Lavin & Ahmad 2015), rebuilt from the rules in ../shared/data/README.md
and NAB's sweeper conventions as remembered (the NAB source was not available here).

Conventions followed (assumptions are marked):
- Probationary period: the first ``min(floor(0.15 n), 750)`` rows of a series are not
  scored (NAB ``getProbationaryLength``).
- Every row gets a weighted score. Inside a window of width ``w`` (rows), row ``i`` with
  right edge ``r`` has position ``-(r - i + 1) / w`` in [-1, 0); its TP value is
  ``A_TP * sigma(pos)``, where ``sigma(x) = 2 / (1 + exp(5x)) - 1`` (NAB's scaled
  sigmoid; ``-1`` when ``x > 3``). Outside windows, a row before the first window is worth
  ``-1 * A_FP``; a row after a window is worth ``A_FP * sigma(|i - r_prev| / (w_prev - 1))``:
  a false positive just after a window costs almost nothing, one far from it costs A_FP.
- A window's contribution is ``-A_FN`` if no row in it is detected, otherwise the largest
  TP value among its detected rows (the earliest detection, since sigma falls with
  position): only the first detection counts. FPs add up row by row.
- Detection is ``score >= threshold``. The threshold is chosen per profile to maximise the
  summed raw score over all series together (NAB's sweep over every distinct score).
- Normalisation: ``100 * (raw - null) / (perfect - null)``, where ``null`` is the raw score
  of a detector that never fires (``-A_FN`` per window) and ``perfect`` that of one that
  fires exactly on the window rows (the first row of each window counts).

Results are a directory (NAB's layout ``DIR/<category>/[<detector>_]<file>.csv`` with the
columns ``timestamp,value,anomaly_score``) or a dict ``{"<category>/<file>.csv": scores}``
(scores aligned with the data file's rows, or ``{"timestamp": ..., "anomaly_score": ...}``).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nab"
PROFILES = {"standard": "standard", "low_fp": "reward_low_FP_rate",
            "low_fn": "reward_low_FN_rate", "reward_low_FP_rate": "reward_low_FP_rate",
            "reward_low_FN_rate": "reward_low_FN_rate"}


def scaled_sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, float)
    return np.where(x > 3.0, -1.0, 2.0 / (1.0 + np.exp(np.minimum(5.0 * x, 700.0))) - 1.0)


def probationary_length(n: int, percent: float = 0.15) -> int:
    return int(min(math.floor(percent * n), percent * 5000))


def read_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """timestamps (datetime64[s]) and values of a NAB csv."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    head = rows[0]
    ti, vi = head.index("timestamp"), head.index("value")
    ts = np.array([r[ti] for r in rows[1:]], dtype="datetime64[s]")
    vals = np.array([float(r[vi]) for r in rows[1:]])
    return ts, vals


def load_corpus(data_dir: Path = DATA) -> dict:
    """{name: (timestamps, values, windows[[start, end] as datetime64[s]])}"""
    labels = json.loads((data_dir / "labels_windows.json").read_text())
    out = {}
    for name, wins in sorted(labels.items()):
        ts, vals = read_series(data_dir / "data" / name)
        w = [(np.datetime64(a.split(".")[0].replace(" ", "T"), "s"),
              np.datetime64(b.split(".")[0].replace(" ", "T"), "s")) for a, b in wins]
        out[name] = (ts, vals, w)
    return out


def row_scores(ts: np.ndarray, windows, tp: float, fp: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-row weighted score and window index (-1 outside windows, -2 in probation)."""
    n = ts.shape[0]
    value = np.empty(n)
    win = np.full(n, -1, np.int64)
    prev_right, prev_width = None, None
    pos = 0
    for k, (a, b) in enumerate(windows):
        left = int(np.searchsorted(ts, a, "left"))
        right = int(np.searchsorted(ts, b, "right")) - 1
        width = float(right - left + 1)
        # rows between the previous window (or the start) and this one
        idx = np.arange(pos, left)
        if prev_right is None:
            value[pos:left] = -fp
        else:
            value[pos:left] = fp * scaled_sigmoid(np.abs(prev_right - idx) / (prev_width - 1.0))
        idx = np.arange(left, right + 1)
        value[left:right + 1] = tp * scaled_sigmoid(-(right - idx + 1) / width)
        win[left:right + 1] = k
        prev_right, prev_width, pos = right, width, right + 1
    idx = np.arange(pos, n)
    if prev_right is None:
        value[pos:] = -fp
    else:
        value[pos:] = fp * scaled_sigmoid(np.abs(prev_right - idx) / (prev_width - 1.0))
    win[:probationary_length(n)] = -2
    return value, win


def _sweep(scores, values, wins, n_windows, fn):
    """Best summed raw score over all thresholds; returns (raw, threshold)."""
    order = np.argsort(-scores, kind="stable")
    s, v, w = scores[order], values[order], wins[order]
    best_tp = np.full(n_windows, -fn)
    total = -fn * n_windows
    best, best_thr = total, float(s[0]) + 1e-9 if s.size else 1.1
    i, m = 0, s.shape[0]
    while i < m:
        thr = s[i]
        while i < m and s[i] == thr:
            if w[i] >= 0:
                if v[i] > best_tp[w[i]]:
                    total += v[i] - best_tp[w[i]]
                    best_tp[w[i]] = v[i]
            else:
                total += v[i]
            i += 1
        if total > best:
            best, best_thr = total, float(thr)
    return best, best_thr


def _collect(results, corpus, tp, fp):
    scores, values, wins = [], [], []
    n_windows = 0
    for name, (ts, _, windows) in corpus.items():
        sc = results[name]
        if isinstance(sc, dict):
            sts = np.asarray(sc["timestamp"], dtype="datetime64[s]")
            ssc = np.asarray(sc["anomaly_score"], float)
            sc = np.zeros(ts.shape[0])
            sc[np.searchsorted(ts, sts).clip(0, ts.shape[0] - 1)] = ssc
        sc = np.nan_to_num(np.asarray(sc, float), nan=0.0)
        if sc.shape[0] != ts.shape[0]:
            raise ValueError(f"{name}: {sc.shape[0]} scores for {ts.shape[0]} rows")
        v, w = row_scores(ts, windows, tp, fp)
        keep = w != -2
        w = np.where(w >= 0, w + n_windows, w)
        n_windows += len(windows)
        scores.append(sc[keep])
        values.append(v[keep])
        wins.append(w[keep])
    return np.concatenate(scores), np.concatenate(values), np.concatenate(wins), n_windows


def read_results_dir(path: Path, corpus: dict) -> dict:
    out = {}
    for name in corpus:
        cat, fname = name.split("/")
        cands = sorted((Path(path) / cat).glob(f"*{fname}"))
        if not cands:
            raise FileNotFoundError(f"no results for {name} under {path}")
        with open(cands[0], newline="") as f:
            rows = list(csv.DictReader(f))
        out[name] = {"timestamp": [r["timestamp"].replace(" ", "T").split(".")[0] for r in rows],
                     "anomaly_score": [float(r["anomaly_score"]) for r in rows]}
    return out


def score_results(results, profile: str = "standard", corpus: dict | None = None,
                  profiles_path: Path | None = None) -> dict:
    """NAB score (null 0, perfect 100) of ``results`` under ``profile``, with the
    threshold optimised over all series together."""
    corpus = corpus if corpus is not None else load_corpus()
    prof = json.loads(Path(profiles_path or DATA / "profiles.json").read_text())
    cm = prof[PROFILES.get(profile, profile)]["CostMatrix"]
    tp, fp, fn = cm["tpWeight"], cm["fpWeight"], cm["fnWeight"]
    if not isinstance(results, dict):
        results = read_results_dir(Path(results), corpus)
    s, v, w, nw = _collect(results, corpus, tp, fp)
    raw, thr = _sweep(s, v, w, nw, fn)
    perfect_res = {}
    for name, (ts, _, windows) in corpus.items():
        _, pw = row_scores(ts, windows, tp, fp)
        inside = np.zeros(ts.shape[0])
        for a, b in windows:
            inside[(ts >= a) & (ts <= b)] = 1.0
        perfect_res[name] = inside
    ps, pv, pw, _ = _collect(perfect_res, corpus, tp, fp)
    perfect, _ = _sweep(ps, pv, pw, nw, fn)
    null = -fn * nw
    score = 100.0 * (raw - null) / (perfect - null)
    return {"score": float(score), "threshold": float(thr), "raw": float(raw),
            "null": float(null), "perfect": float(perfect), "windows": nw}
