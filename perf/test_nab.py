"""NAB score and throughput of AnomalyDetector over the 35 labelled series.

    .venv/bin/python perf/test_nab.py            # JSON: scores of the 3 profiles, points/s
    .venv/bin/python -m pytest perf/test_nab.py  # the same as a benchmark test

One parameter set (the detector's defaults) for every series; each series is one slot.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bae_core.models.anomaly import AnomalyDetector  # noqa: E402
from perf import nab  # noqa: E402


def detect_corpus(corpus: dict, **params) -> tuple[dict, float, int]:
    """Scores of every series (one slot each, all in one detector) and the seconds taken."""
    names = list(corpus)
    slot = np.concatenate([np.full(corpus[k][1].shape[0], i, np.int64)
                           for i, k in enumerate(names)])
    value = np.concatenate([corpus[k][1] for k in names])
    m = AnomalyDetector(**params)
    m.score_batch({"slot": slot[:10], "value": value[:10]})  # compile outside the timing
    m = AnomalyDetector(**params)
    t0 = time.perf_counter()
    out = m.score_batch({"slot": slot, "value": value})
    dt = time.perf_counter() - t0
    res, pos = {}, 0
    for k in names:
        n = corpus[k][1].shape[0]
        res[k] = out["score"][pos:pos + n]
        pos += n
    return res, dt, value.shape[0]


def evaluate(corpus: dict | None = None, **params) -> dict:
    corpus = corpus if corpus is not None else nab.load_corpus()
    res, dt, points = detect_corpus(corpus, **params)
    out = {p: nab.score_results(res, p, corpus=corpus) for p in ("standard", "low_fp", "low_fn")}
    return {"scores": {p: round(v["score"], 2) for p, v in out.items()},
            "thresholds": {p: round(v["threshold"], 4) for p, v in out.items()},
            "points": points, "seconds": round(dt, 4), "points_per_s": round(points / dt)}


def test_nab_score(benchmark):
    """Reports the NAB scores (target: standard >= 50); asserts only that the detector is
    far from a random one (about 11), so a broken detector cannot pass unnoticed."""
    assert nab.DATA.exists(), f"NAB data not found at {nab.DATA}"
    corpus = nab.load_corpus()
    r = evaluate(corpus)
    benchmark.extra_info.update(r)
    benchmark(detect_corpus, corpus)
    assert r["scores"]["standard"] > 25.0


if __name__ == "__main__":
    print(json.dumps(evaluate(), indent=1))
