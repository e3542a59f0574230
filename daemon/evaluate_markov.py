"""``bae eval markov``: next-resource accuracy of the Markov model and two baselines.

Sessions are split in file (time) order: the first ``train_fraction`` train, the rest
test. Every transition of a test session (a request that follows another in the same
session) is scored: top-1 / top-k = the true next resource is the first / among the
first k predicted, given the session so far. The models learn the training part only;
they are NOT fed the test part (no online updates while scoring), so the three models
see exactly the same data.

Formats:

``msnbc``
    UCI MSNBC.com sequences: optional ``%`` header (through ``% Sequences:``), then one
    session per line of space-separated category ids. Lines that are not integers are
    skipped and counted.
``nasa``
    The NASA HTTP TSV, read with ``bae_core.logparse`` (its skipped lines are counted);
    a session is one host's requests with gaps under 30 minutes; resources are URL paths.
"""

from __future__ import annotations

import json

import numpy as np

from bae_core import errors, logparse
from bae_core.models.markov import FirstOrder, Markov, MostPopular

NASA_GAP_S = 1800.0
FORMATS = ("msnbc", "nasa")


def read_msnbc(path) -> tuple[list[np.ndarray], int]:
    """Sessions (u64 arrays of category ids) and the number of lines skipped."""
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError as e:
        raise errors.LogFormatError(f"cannot read {path}: {e.strerror or e}") from None
    i = 0
    if lines and lines[0].startswith("%"):
        while i < len(lines) and not lines[i].lower().startswith("% sequences"):
            i += 1
        i += 1
    sessions, skipped = [], 0
    for line in lines[i:]:
        if not line.strip():
            continue
        try:
            v = np.array(line.split(), np.int64)
        except ValueError:
            skipped += 1
            continue
        if (v < 0).any():
            skipped += 1
            continue
        sessions.append(v.astype(np.uint64))
    return sessions, skipped


def read_nasa(path, gap_s: float = NASA_GAP_S) -> tuple[list[np.ndarray], int]:
    """Sessions of URL path ids (one host, gaps <= ``gap_s``), ordered by start time."""
    recs, _names, stats = logparse.read_log(path, "nasa")
    if len(recs) == 0:
        raise errors.LogFormatError(f"{path}: no usable request ({stats.summary()})")
    o = np.argsort(recs["user"], kind="stable")  # by host, time order kept
    u, t, r = recs["user"][o], recs["ts_us"][o], recs["resource"][o]
    new = np.ones(len(u), bool)
    new[1:] = (u[1:] != u[:-1]) | (t[1:] - t[:-1] > gap_s * 1e6)
    starts = np.flatnonzero(new)
    order = np.argsort(t[starts], kind="stable")
    parts = np.split(r, starts[1:])
    return [parts[j] for j in order], stats.skipped_total


def _transitions(sessions: list[np.ndarray]):
    """(previous-but-one or EMPTY, previous, next) of every transition."""
    if not sessions:
        e = np.empty(0, np.uint64)
        return e, e, e
    lens = np.array([len(s) for s in sessions])
    flat = np.concatenate(sessions)
    pos = np.arange(len(flat)) - np.repeat(np.cumsum(lens) - lens, lens)
    j = np.flatnonzero(pos >= 1)
    prev2 = np.full(len(j), np.uint64(0xFFFFFFFFFFFFFFFF), np.uint64)
    has2 = pos[j] >= 2
    prev2[has2] = flat[j[has2] - 2]
    return prev2, flat[j - 1], flat[j]


def _score(pred: np.ndarray, truth: np.ndarray) -> dict:
    n = len(truth)
    if n == 0:
        return {"top1": float("nan"), f"top{pred.shape[1]}": float("nan")}
    hit = pred == truth[:, None]
    return {"top1": float(hit[:, 0].mean()), f"top{pred.shape[1]}": float(hit.any(1).mean())}


def eval_markov(path, fmt: str, train_fraction: float = 0.8, k: int = 3,
                **markov_params) -> dict:
    """Top-1 and top-``k`` next-resource accuracy of ``markov``, ``first_order`` and
    ``most_popular`` (see the module doc). Also returns the counts behind them."""
    if fmt not in FORMATS:
        raise errors.LogFormatError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    sessions, skipped = read_msnbc(path) if fmt == "msnbc" else read_nasa(path)
    if len(sessions) < 2:
        raise errors.LogFormatError(
            f"{path}: {len(sessions)} session(s) found ({skipped} lines skipped); need at "
            f"least two {fmt} sessions to train and test")
    n_train = max(1, min(len(sessions) - 1, int(len(sessions) * train_fraction)))
    train, test = sessions[:n_train], sessions[n_train:]

    # markov: each training session as its own user, in order
    lens = np.array([len(s) for s in train])
    flat = np.concatenate(train)
    m = Markov(**markov_params)
    m.learn({"user": np.repeat(np.arange(len(train), dtype=np.uint64), lens),
             "resource": flat})
    p2, p1, nxt = _transitions(test)
    pm = m.predict({"context": np.stack([p2, p1], 1), "k": k})["resource"]

    _, tp1, tnxt = _transitions(train)
    fo = FirstOrder().fit(tp1, tnxt, k).top_k(p1, k)[0]
    pp = MostPopular().fit(tnxt, k).top_k(len(nxt), k)[0]
    return {"models": {"markov": _score(pm, nxt), "first_order": _score(fo, nxt),
                       "most_popular": _score(pp, nxt)},
            "format": fmt, "sessions": {"train": len(train), "test": len(test)},
            "test_transitions": int(len(nxt)), "skipped_lines": int(skipped),
            "online_updates": False}


def cmd_eval_markov(args) -> int:
    r = eval_markov(args.file, args.format, args.train_fraction, args.k)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['format']}: {r['sessions']['train']} training sessions, "
              f"{r['test_transitions']} test transitions, {r['skipped_lines']} lines skipped")
        for name, s in r["models"].items():
            print(f"  {name:13s} " + "  ".join(f"{k} {v:.4f}" for k, v in s.items()))
    return 0


def add_eval_markov_parser(eval_subparsers) -> None:
    """Register ``markov FILE --format msnbc|nasa [--train-fraction F] [-k K] [--json]``
    under ``bae eval``."""
    sub = eval_subparsers
    p = sub.add_parser("markov", help="next-resource accuracy (top-1/top-k) of the Markov "
                       "model against first-order and most-popular baselines")
    p.add_argument("file")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--train-fraction", dest="train_fraction", type=float, default=0.8)
    p.add_argument("-k", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(fn=cmd_eval_markov)
