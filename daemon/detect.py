"""``bae detect FILE.csv --out OUT.csv``: stream a ``timestamp,value`` CSV through
AnomalyDetector and write NAB's results format ``timestamp,value,anomaly_score``.

Rows whose value is missing, not a number, NaN or infinite are written with score 0 and
counted as skipped (the detector's state is untouched by them); a missing column or an
empty file is a clear error (exit status 2 through ``bae``), never a traceback.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from bae_core.errors import BAEError
from bae_core.models.anomaly import AnomalyDetector

CHUNK = 4096


class DetectInputError(BAEError):
    """The input CSV cannot be read as ``timestamp,value``."""


def _value(text: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return math.nan
    return v


def detect(path_in: str | Path, path_out: str | Path, **params) -> dict:
    """Score every row of ``path_in``; returns counts {rows, skipped, flagged}."""
    path_in, path_out = Path(path_in), Path(path_out)
    model = AnomalyDetector(**params)
    rows = skipped = flagged = 0
    try:
        fin = open(path_in, newline="")
    except OSError as e:
        raise DetectInputError(f"cannot read {path_in}: {e.strerror}; check the path") from e
    with fin, open(path_out, "w", newline="") as fout:
        reader = csv.reader(fin)
        header = next(reader, None)
        if header is None:
            raise DetectInputError(f"{path_in} is empty; expected a header "
                                   "'timestamp,value' and rows")
        header = [h.strip() for h in header]
        missing = [c for c in ("timestamp", "value") if c not in header]
        if missing:
            raise DetectInputError(f"{path_in} has no column {', '.join(missing)} "
                                   f"(header: {','.join(header)}); expected 'timestamp,value'")
        ti, vi = header.index("timestamp"), header.index("value")
        out = csv.writer(fout, lineterminator="\n")
        out.writerow(["timestamp", "value", "anomaly_score"])
        while True:
            chunk = []
            for r in reader:
                chunk.append(r)
                if len(chunk) == CHUNK:
                    break
            if not chunk:
                break
            ts = [r[ti] if len(r) > ti else "" for r in chunk]
            raw = [r[vi] if len(r) > vi else "" for r in chunk]
            vals = np.array([_value(v) for v in raw])
            res = model.score_batch({"slot": np.zeros(len(chunk), np.int64), "value": vals})
            ok = np.isfinite(vals)
            skipped += int((~ok).sum())
            flagged += int(res["flag"].sum())
            rows += len(chunk)
            out.writerows(zip(ts, raw, (f"{s:.6g}" for s in res["score"])))
    return {"rows": rows, "skipped": skipped, "flagged": flagged, "out": str(path_out)}


def cmd_detect(args) -> int:
    print(json.dumps(detect(args.file, args.out)))
    return 0


def add_detect_parser(subparsers) -> None:
    """Register ``bae detect FILE.csv --out OUT.csv`` on ``bae``'s subparsers."""
    d = subparsers.add_parser("detect", help="score a timestamp,value CSV for anomalies "
                              "(NAB results format: timestamp,value,anomaly_score)")
    d.add_argument("file", help="input CSV with columns timestamp,value")
    d.add_argument("--out", required=True, help="output CSV")
    d.set_defaults(fn=cmd_detect)
