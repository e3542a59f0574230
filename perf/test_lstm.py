"""LSTM serving benchmarks: throughput of the shipped model, event-loop lag beside it.

Run with ``pytest -q perf/test_lstm.py --benchmark-only`` (``make bench`` runs all).

* test_lstm_throughput[batch-threads]: ``LSTMRuntime.predict`` end to end (features from
  raw float32[batch, 2048] histories, onnxruntime on the CPU with IOBinding, de-normalised
  p50/p90/p99) and the model alone (``session.run`` on ready features), in sequences/s,
  at batch 1, 256, 4,096 with 1 and 2 intra-op threads. Design target: >= 50,000
  sequences/s at batch 4,096 on 2 threads (``x_target`` = end-to-end / 50,000).
* test_loop_lag_during_inference[threads]: an asyncio loop sleeps 1 ms again and again
  while an ``InferenceWorker`` thread forecasts 4,096 series back to back; the p99 of
  the sleep overshoot is the event-loop lag the daemon would see (target < 5 ms).
  ``idle_p99_ms`` is the same loop with no worker, the machine's own noise. Reported
  (``meets_p99_target``), not asserted: it depends on free cores. Measured on a shared
  2-core VM (load ~2): 1 intra-op thread p99 0.3 ms; 2 threads (= every core, beside the
  loop's thread and other tenants) 3-9 ms. Give the worker cores - 1 threads.

``load_1m`` (the 1-minute load average at the end) says how busy the machine was.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import numpy as np
import onnxruntime as ort
import pytest

from models import features as F
from models.runtime import DEFAULT_MODEL, InferenceWorker, LSTMRuntime

TARGET_SEQ_S = 50_000
LAG_TARGET_MS = 5.0
ROUNDS = {1: 200, 256: 20, 4096: 5}


def _histories(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(F.HISTORY)
    wave = 1 + 0.5 * np.sin(2 * np.pi * (t + rng.integers(0, 288, (n, 1))) / 288)
    return (rng.uniform(1, 1000, (n, 1)) * wave * rng.uniform(0.9, 1.1, (n, F.HISTORY))
            ).astype(np.float32)


def _median_s(fn, rounds: int) -> float:
    fn()
    ts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, 256, 4096])
def test_lstm_throughput(benchmark, batch, threads):
    rt = LSTMRuntime(DEFAULT_MODEL, device="cpu", threads=threads, max_batch=4096)
    h = _histories(batch)
    steps = np.arange(batch)
    x = F.build_features(h, steps)[0]
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(DEFAULT_MODEL), so, providers=["CPUExecutionProvider"])
    model_s = _median_s(lambda: sess.run(["q"], {"x": x}), ROUNDS[batch])
    feat_s = _median_s(lambda: F.build_features(h, steps, out=rt._x), ROUNDS[batch])
    out = benchmark.pedantic(rt.predict, args=(h, steps), rounds=ROUNDS[batch],
                             iterations=1, warmup_rounds=1)
    assert out["p50"].shape == (batch, F.HORIZON) and np.isfinite(out["p99"]).all()
    e2e = batch / benchmark.stats.stats.median
    benchmark.extra_info.update(
        sequences_per_s=round(e2e), model_only_sequences_per_s=round(batch / model_s),
        features_us_per_sequence=round(feat_s / batch * 1e6, 2), batch=batch,
        threads=threads, x_target=round(e2e / TARGET_SEQ_S, 3),
        load_1m=round(os.getloadavg()[0], 2))


async def _lag_samples(seconds: float, period: float = 0.001) -> list[float]:
    lags: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        await asyncio.sleep(period)
        lags.append(max(0.0, time.perf_counter() - t0 - period))
    return lags


@pytest.mark.parametrize("threads", [1, 2])
def test_loop_lag_during_inference(benchmark, threads):
    rt = LSTMRuntime(DEFAULT_MODEL, device="cpu", threads=threads, max_batch=4096)
    h = _histories(4096)
    steps = np.arange(4096)
    w = InferenceWorker(rt, lambda: (None, h, steps), interval_s=0.0, chunk=1024)
    idle = asyncio.run(_lag_samples(1.0))
    w.start()
    try:
        lags = benchmark.pedantic(lambda: asyncio.run(_lag_samples(3.0)), rounds=1,
                                  iterations=1)
    finally:
        w.stop()
    assert w.errors == 0 and w.latest is not None and w.latest["seq"] >= 2
    ms = np.array(lags) * 1e3
    p99 = float(np.quantile(ms, 0.99))
    benchmark.extra_info.update(
        lag_p50_ms=round(float(np.median(ms)), 3), lag_p99_ms=round(p99, 3),
        lag_max_ms=round(float(ms.max()), 3), samples=len(ms),
        idle_p99_ms=round(float(np.quantile(np.array(idle) * 1e3, 0.99)), 3),
        inference_rounds=w.latest["seq"], threads=threads,
        sequences_per_s_during=round(4096 * w.latest["seq"] / 3.0),
        meets_p99_target=bool(p99 < LAG_TARGET_MS), load_1m=round(os.getloadavg()[0], 2))
